// The fused AdamW update over the flat parameter buffer, in the order of PyTorch's AdamW.
#include <cmath>
#include <stdexcept>
#include <type_traits>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/parallel.h"

namespace t6::cpu {

template <class T>
void adamw_update(const Context&, T* params, const T* grads, T* m, T* v, size_t n, double lr, double beta1,
                  double beta2, double eps, double weight_decay, double bias1, double bias2, double grad_scale,
                  bf16* weights) {
  if (weights) throw std::logic_error("adamw_update: bf16 compute weights exist only on the CUDA backend");
  const T decay = T(1.0 - lr * weight_decay);
  const T b1 = T(beta1), b2 = T(beta2), step_size = T(lr / bias1), bias2_sqrt = T(std::sqrt(bias2)), e = T(eps),
          gs = T(grad_scale);
#pragma omp parallel for if (n >= kParallelWork)
  for (size_t i = 0; i < n; i++) {
    const T g = grads[i] * gs;
    params[i] *= decay;
    m[i] = b1 * m[i] + (T(1) - b1) * g;
    v[i] = b2 * v[i] + (T(1) - b2) * g * g;
    params[i] -= step_size * m[i] / (std::sqrt(v[i]) / bias2_sqrt + e);
  }
}

#define INSTANTIATE(T)                                                                               \
  template void adamw_update<T>(const Context&, T*, const T*, T*, T*, size_t, double, double, double, double, \
                                double, double, double, double, bf16*);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace t6::cpu
