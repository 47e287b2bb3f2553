// Elementwise ops and reductions over flat buffers. Reductions run sequentially in double so
// their result does not depend on the thread count.
#include <cmath>

#include "kernels/cpu/parallel.h"
#include "kernels/ops.h"

namespace t6 {

template <class T>
void add(const Context&, T* out, const T* x, const T* y, size_t n) {
#pragma omp parallel for if (n >= kParallelWork)
  for (size_t i = 0; i < n; i++) out[i] = x[i] + y[i];
}

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
  template void add<T>(const Context&, T*, const T*, const T*, size_t);                              \
  template void scale<T>(const Context&, T*, double, size_t);                                        \
  template double sum<T>(const Context&, const T*, size_t);                                          \
  template double sum_squares<T>(const Context&, const T*, size_t);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace t6
