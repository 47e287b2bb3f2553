// AdamW over the flat parameter buffer, and global-norm gradient clipping.
#pragma once
#include <cstdint>

#include "kernels/context.h"

namespace t6 {

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;  // on every parameter, as the reference does
};

template <class T>
class AdamW {
 public:
  AdamW(const Context& ctx, size_t n, const AdamWConfig& cfg);
  // One update at learning rate lr; the bias corrections use the step count after increment.
  // The gradient is grad_scale·grads; weights (CUDA only), if not null, receives the new
  // parameters in bf16 in the same pass.
  void step(T* params, const T* grads, double lr, bf16* weights = nullptr, double grad_scale = 1.0);

  AdamWConfig cfg;
  int64_t steps = 0;  // updates taken so far
  Buffer<T> m, v;     // first and second moments, laid out like the parameters

 private:
  const Context& ctx_;
};

// Returns the global L2 norm of grads before clipping; if it exceeds max_norm (> 0), scales
// grads by max_norm / (norm + 1e-6), as torch.nn.utils.clip_grad_norm_ does.
template <class T>
double clip_grad_norm(const Context& ctx, T* grads, size_t n, double max_norm);

// The factor clipping multiplies the gradients by, for a norm computed elsewhere (e.g. across
// ranks): max_norm / (norm + 1e-6) when norm > max_norm > 0, else 1.
double clip_factor(double norm, double max_norm);

extern template class AdamW<float>;
extern template class AdamW<double>;

}  // namespace t6
