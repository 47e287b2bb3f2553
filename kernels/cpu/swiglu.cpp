#include <cmath>

#include "kernels/cpu/parallel.h"
#include "kernels/ops.h"

namespace t6 {

template <class T>
void swiglu_forward(const Context&, T* out, const T* a, const T* b, size_t n) {
#pragma omp parallel for if (n >= kParallelWork)
  for (size_t i = 0; i < n; i++) {
    T sig = T(1) / (T(1) + std::exp(-a[i]));
    out[i] = a[i] * sig * b[i];
  }
}

// d silu(a)/da = σ(a)·(1 + a·(1 − σ(a))).
template <class T>
void swiglu_backward(const Context&, T* da, T* db, const T* dout, const T* a, const T* b, size_t n) {
#pragma omp parallel for if (n >= kParallelWork)
  for (size_t i = 0; i < n; i++) {
    T sig = T(1) / (T(1) + std::exp(-a[i]));
    T silu = a[i] * sig;
    db[i] = dout[i] * silu;
    da[i] = dout[i] * b[i] * sig * (T(1) + a[i] * (T(1) - sig));
  }
}

#define INSTANTIATE(T)                                                                               \
  template void swiglu_forward<T>(const Context&, T*, const T*, const T*, size_t);                   \
  template void swiglu_backward<T>(const Context&, T*, T*, const T*, const T*, const T*, size_t);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace t6
