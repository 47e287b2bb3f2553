#include <cmath>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/parallel.h"

namespace t6::cpu {

template <class T>
void swiglu_forward(const Context&, T* out, const T* fc, int N, int F, int ld_fc, int ld_out) {
  ld_fc = ld_fc ? ld_fc : 2 * F, ld_out = ld_out ? ld_out : F;
#pragma omp parallel for if ((size_t)N * F >= kParallelWork)
  for (int n = 0; n < N; n++) {
    const T *a = fc + (size_t)n * ld_fc, *b = a + F;
    T* o = out + (size_t)n * ld_out;
    for (int i = 0; i < F; i++) {
      T sig = T(1) / (T(1) + std::exp(-a[i]));
      o[i] = a[i] * sig * b[i];
    }
  }
}

// d silu(a)/da = σ(a)·(1 + a·(1 − σ(a))).
template <class T>
void swiglu_backward(const Context&, T* dfc, const T* dout, const T* fc, int N, int F, int ld_fc, int ld_out) {
  ld_fc = ld_fc ? ld_fc : 2 * F, ld_out = ld_out ? ld_out : F;
#pragma omp parallel for if ((size_t)N * F >= kParallelWork)
  for (int n = 0; n < N; n++) {
    const T *a = fc + (size_t)n * ld_fc, *b = a + F, *g = dout + (size_t)n * ld_out;
    T *da = dfc + (size_t)n * ld_fc, *db = da + F;
    for (int i = 0; i < F; i++) {
      T sig = T(1) / (T(1) + std::exp(-a[i]));
      T silu = a[i] * sig;
      db[i] = g[i] * silu;
      da[i] = g[i] * b[i] * sig * (T(1) + a[i] * (T(1) - sig));
    }
  }
}

#define INSTANTIATE(T)                                                                               \
  template void swiglu_forward<T>(const Context&, T*, const T*, int, int, int, int);                 \
  template void swiglu_backward<T>(const Context&, T*, const T*, const T*, int, int, int, int);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace t6::cpu
