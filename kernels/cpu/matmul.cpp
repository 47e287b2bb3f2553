// Matrix products through OpenBLAS. Row-major throughout; weights are (out, in) as in PyTorch.
#include <cblas.h>

#include "kernels/ops.h"

namespace t6 {

static void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}
static void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, const double* A, int lda,
                 const double* B, int ldb, double beta, double* C, int ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, M, N, K, 1.0, A, lda, B, ldb, beta, C, ldc);
}

template <class T>
void matmul_forward(const Context&, T* out, const T* inp, const T* weight, int M, int K, int N, int ld_in, int ld_out) {
  gemm(CblasNoTrans, CblasTrans, M, N, K, inp, ld_in ? ld_in : K, weight, K, T(0), out, ld_out ? ld_out : N);
}

template <class T, class P>
void matmul_backward(const Context&, T* dinp, P* dweight, const T* dout, const T* inp, const T* weight, int M, int K,
                     int N, bool accumulate_dinp, int ld_in, int ld_out) {
  ld_in = ld_in ? ld_in : K, ld_out = ld_out ? ld_out : N;
  if (dinp) gemm(CblasNoTrans, CblasNoTrans, M, K, N, dout, ld_out, weight, K, accumulate_dinp ? T(1) : T(0), dinp, ld_in);
  gemm(CblasTrans, CblasNoTrans, N, K, M, dout, ld_out, inp, ld_in, T(1), dweight, K);
}

#define INSTANTIATE(T)                                                                               \
  template void matmul_forward<T>(const Context&, T*, const T*, const T*, int, int, int, int, int);  \
  template void matmul_backward<T, T>(const Context&, T*, T*, const T*, const T*, const T*, int, int, int, bool, int, int);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace t6
