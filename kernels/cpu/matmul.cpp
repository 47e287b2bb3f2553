// Matrix products through OpenBLAS, and pitched copies. Row-major throughout; weights are
// (out, in) as in PyTorch.
#include <cblas.h>

#include <type_traits>

#include "kernels/cpu/ops.h"

namespace t6::cpu {

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

template <class T>
void matmul_backward_input(const Context&, T* dinp, const T* dout, const T* weight, int M, int K, int N, int ld_in,
                           int ld_out, bool accumulate) {
  gemm(CblasNoTrans, CblasNoTrans, M, K, N, dout, ld_out ? ld_out : N, weight, K, accumulate ? T(1) : T(0), dinp,
       ld_in ? ld_in : K);
}

template <class T, class P>
void matmul_backward_weight(const Context&, P* dweight, const T* dout, const T* inp, int M, int K, int N, int ld_in,
                            int ld_out) {
  gemm(CblasTrans, CblasNoTrans, N, K, M, dout, ld_out ? ld_out : N, inp, ld_in ? ld_in : K, T(1), dweight, K);
}

template <class T, class P>
void copy_to_pitch(const Context&, T* dst, const P* src, int rows, int cols, int pitch) {
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < cols; c++) dst[(size_t)r * pitch + c] = src[(size_t)r * cols + c];
}

template <class P>
void add_from_pitch(const Context&, P* dst, const P* src, int rows, int cols, int pitch) {
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < cols; c++) dst[(size_t)r * cols + c] += src[(size_t)r * pitch + c];
}

#define INSTANTIATE(T)                                                                               \
  template void matmul_forward<T>(const Context&, T*, const T*, const T*, int, int, int, int, int);  \
  template void matmul_backward_input<T>(const Context&, T*, const T*, const T*, int, int, int, int, int, bool); \
  template void matmul_backward_weight<T, T>(const Context&, T*, const T*, const T*, int, int, int, int, int); \
  template void copy_to_pitch<T, T>(const Context&, T*, const T*, int, int, int);                   \
  template void add_from_pitch<T>(const Context&, T*, const T*, int, int, int);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace t6::cpu
