// TPA's factor contraction: each token's q (or k, v) is a rank-R sum of outer products of a
// head factor A (H×R) and a feature factor B (R×D), divided by R.
#include "kernels/cpu/parallel.h"
#include "kernels/ops.h"

namespace t6 {

template <class T>
void factor_contract_forward(const Context&, T* out, const T* a, const T* b, int N, int H, int R, int D) {
#pragma omp parallel for if ((size_t)N * H * R * D >= kParallelWork)
  for (int n = 0; n < N; n++) {
    const T* an = a + (size_t)n * H * R;
    const T* bn = b + (size_t)n * R * D;
    for (int h = 0; h < H; h++) {
      T* o = out + ((size_t)n * H + h) * D;
      for (int d = 0; d < D; d++) o[d] = 0;
      for (int r = 0; r < R; r++) {
        T coef = an[h * R + r];
        for (int d = 0; d < D; d++) o[d] += coef * bn[r * D + d];
      }
      for (int d = 0; d < D; d++) o[d] /= T(R);  // sum first, then divide, as the reference does
    }
  }
}

template <class T>
void factor_contract_backward(const Context&, T* da, T* db, const T* dout, const T* a, const T* b, int N, int H, int R,
                              int D) {
#pragma omp parallel for if ((size_t)N * H * R * D >= kParallelWork)
  for (int n = 0; n < N; n++) {
    const T* an = a + (size_t)n * H * R;
    const T* bn = b + (size_t)n * R * D;
    const T* dn = dout + (size_t)n * H * D;
    T* dan = da + (size_t)n * H * R;
    T* dbn = db + (size_t)n * R * D;
    for (int i = 0; i < R * D; i++) dbn[i] = 0;
    for (int h = 0; h < H; h++) {
      for (int r = 0; r < R; r++) {
        T acc = 0;
        T coef = an[h * R + r] / T(R);
        for (int d = 0; d < D; d++) {
          acc += dn[h * D + d] * bn[r * D + d];
          dbn[r * D + d] += coef * dn[h * D + d];
        }
        dan[h * R + r] = acc / T(R);
      }
    }
  }
}

#define INSTANTIATE(T)                                                                               \
  template void factor_contract_forward<T>(const Context&, T*, const T*, const T*, int, int, int, int); \
  template void factor_contract_backward<T>(const Context&, T*, T*, const T*, const T*, const T*, int, int, int, int);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace t6
