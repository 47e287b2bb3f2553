// Elementwise ops and reductions over flat buffers. Reductions run sequentially in double so
// their result does not depend on the thread count. The fp32 ones serve the optimizer on
// either backend, so they hand a CUDA context to the CUDA backend.
#include <cmath>
#include <type_traits>

#include "kernels/cpu/parallel.h"
#include "kernels/cuda/dispatch.h"
#include "kernels/ops.h"

namespace t6 {

template <class T>
void scale(const Context& ctx, T* x, double s, size_t n) {
  if constexpr (std::is_same_v<T, float>)
    if (ctx.device == Device::cuda) return cuda::scale(ctx, x, s, n);
  const T st = T(s);
#pragma omp parallel for if (n >= kParallelWork)
  for (size_t i = 0; i < n; i++) x[i] *= st;
}

template <class T>
double sum(const Context& ctx, const T* x, size_t n) {
  if constexpr (std::is_same_v<T, float>)
    if (ctx.device == Device::cuda) return cuda::sum(ctx, x, n);
  double acc = 0;
  for (size_t i = 0; i < n; i++) acc += x[i];
  return acc;
}

template <class T>
double sum_squares(const Context& ctx, const T* x, size_t n) {
  if constexpr (std::is_same_v<T, float>)
    if (ctx.device == Device::cuda) return cuda::sum_squares(ctx, x, n);
  double acc = 0;
  for (size_t i = 0; i < n; i++) acc += (double)x[i] * x[i];
  return acc;
}

#define INSTANTIATE(T)                                                                               \
  template void scale<T>(const Context&, T*, double, size_t);                                        \
  template double sum<T>(const Context&, const T*, size_t);                                          \
  template double sum_squares<T>(const Context&, const T*, size_t);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace t6
