// Elementwise ops and reductions over flat buffers. Reductions run sequentially in double so
// their result does not depend on the thread count. The fp32 ones serve the optimizer on
// either backend, so they hand a CUDA context to the CUDA backend.
#include <cmath>
#include <type_traits>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/parallel.h"

namespace t6::cpu {

template <class T>
void scale(const Context&, T* x, double s, size_t n) {
  const T st = T(s);
#pragma omp parallel for if (n >= kParallelWork)
  for (size_t i = 0; i < n; i++) x[i] *= st;
}

template <class T>
double sum(const Context&, const T* x, size_t n) {
  double acc = 0;
  for (size_t i = 0; i < n; i++) acc += x[i];
  return acc;
}

template <class T>
double sum_squares(const Context&, const T* x, size_t n) {
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

}  // namespace t6::cpu
