#include <cmath>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/parallel.h"

namespace t6::cpu {

template <class T>
static void normalize_row(T* y, T* rstd, const T* x, int C, double eps) {
  double ss = 0;
  for (int c = 0; c < C; c++) ss += (double)x[c] * x[c];
  T r = T(1.0 / std::sqrt(ss / C + eps));
  for (int c = 0; c < C; c++) y[c] = x[c] * r;
  *rstd = r;
}

template <class T, class P>
void rmsnorm_forward(const Context&, T* out, P* rstd, const T* inp, int N, int C, double eps) {
#pragma omp parallel for if ((size_t)N * C >= kParallelWork)
  for (int n = 0; n < N; n++) normalize_row(out + (size_t)n * C, rstd + n, inp + (size_t)n * C, C, eps);
}

template <class T, class P>
void residual_rmsnorm_forward(const Context&, T* x_out, T* out, P* rstd, const T* x, const T* branch, int N, int C,
                              double eps) {
#pragma omp parallel for if ((size_t)N * C >= kParallelWork)
  for (int n = 0; n < N; n++) {
    T* xo = x_out + (size_t)n * C;
    for (int c = 0; c < C; c++) xo[c] = x[(size_t)n * C + c] + branch[(size_t)n * C + c];
    normalize_row(out + (size_t)n * C, rstd + n, xo, C, eps);
  }
}

// y = x·r with r = (mean(x²) + eps)^(−1/2):  dx = r·dy − r³·x·(dy·x)/C.
template <class T, class P>
void rmsnorm_backward(const Context&, T* dinp, const T* dout, const T* inp, const P* rstd, int N, int C) {
#pragma omp parallel for if ((size_t)N * C >= kParallelWork)
  for (int n = 0; n < N; n++) {
    const T* x = inp + (size_t)n * C;
    const T* dy = dout + (size_t)n * C;
    T* dx = dinp + (size_t)n * C;
    double dot = 0;
    for (int c = 0; c < C; c++) dot += (double)dy[c] * x[c];
    double r = rstd[n];
    T k = T(r * r * r * dot / C);
    for (int c = 0; c < C; c++) dx[c] += T(r) * dy[c] - k * x[c];
  }
}

#define INSTANTIATE(T)                                                                               \
  template void rmsnorm_forward<T, T>(const Context&, T*, T*, const T*, int, int, double);           \
  template void residual_rmsnorm_forward<T, T>(const Context&, T*, T*, T*, const T*, const T*, int, int, double); \
  template void rmsnorm_backward<T, T>(const Context&, T*, const T*, const T*, const T*, int, int);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace t6::cpu
