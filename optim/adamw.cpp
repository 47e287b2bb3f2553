#include "optim/adamw.h"

#include <cmath>

#include "kernels/ops.h"

namespace t6 {

template <class T>
AdamW<T>::AdamW(const Context& ctx, size_t n, const AdamWConfig& config)
    : cfg(config), m(ctx, n), v(ctx, n), ctx_(ctx) {}

template <class T>
void AdamW<T>::step(T* params, const T* grads, double lr, bf16* weights, double grad_scale) {
  steps++;
  const double bias1 = 1.0 - std::pow(cfg.beta1, (double)steps);
  const double bias2 = 1.0 - std::pow(cfg.beta2, (double)steps);
  adamw_update(ctx_, params, grads, m.data(), v.data(), m.size(), lr, cfg.beta1, cfg.beta2, cfg.eps,
               cfg.weight_decay, bias1, bias2, grad_scale, weights);
}

double clip_factor(double norm, double max_norm) { return max_norm > 0 && norm > max_norm ? max_norm / (norm + 1e-6) : 1.0; }

template <class T>
double clip_grad_norm(const Context& ctx, T* grads, size_t n, double max_norm) {
  const double norm = std::sqrt(sum_squares(ctx, grads, n)), factor = clip_factor(norm, max_norm);
  if (factor != 1.0) scale(ctx, grads, factor, n);
  return norm;
}

template class AdamW<float>;
template class AdamW<double>;
template double clip_grad_norm<float>(const Context&, float*, size_t, double);
template double clip_grad_norm<double>(const Context&, double*, size_t, double);

}  // namespace t6
