// Matrix products through cuBLASLt: bf16 operands, fp32 accumulation; weight gradients are
// accumulated straight into the fp32 gradient buffer (beta = 1). cuBLAS is column-major, so a
// row-major (rows, cols) matrix is its column-major transpose; each product below is written
// in those terms. Plans (descriptors and the heuristic's algorithm) are made once per shape.
#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

#include "kernels/cuda/common.cuh"

namespace t6 {

using namespace cuda;

namespace {

struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  ~Plan() {
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

int alignment(const void* p) {
  const auto v = reinterpret_cast<uintptr_t>(p);
  return v % 16 == 0 ? 16 : v % 8 == 0 ? 8 : v % 4 == 0 ? 4 : 2;
}

// C (m×n, column-major) = op(A)·op(B) + beta·C, with op(A) m×k and op(B) k×n; A and B bf16,
// C bf16 or fp32.
void gemm(const Context& ctx, bool trans_a, bool trans_b, int m, int n, int k, const bf* A, int lda, const bf* B,
          int ldb, void* C, bool c_fp32, int ldc, float beta) {
  CudaState& s = *ctx.cuda;
  const int align = std::min({alignment(A), alignment(B), alignment(C)});
  const auto key = std::make_tuple((int)trans_a, (int)trans_b, m, n, k, lda, ldb, ldc, (int)c_fp32, (int)(beta != 0),
                                   align);
  auto it = s.plans.find(key);
  if (it == s.plans.end()) {
    auto plan = std::make_shared<Plan>();
    const cudaDataType ctype = c_fp32 ? CUDA_R_32F : CUDA_R_16BF;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->a, CUDA_R_16BF, trans_a ? k : m, trans_a ? m : k, lda));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->b, CUDA_R_16BF, trans_b ? n : k, trans_b ? k : n, ldb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->c, ctype, m, n, ldc));
    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint32_t bytes = align;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                      &s.lt_workspace_bytes, sizeof(s.lt_workspace_bytes)));
    for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
      CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &bytes, sizeof(bytes)));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t st =
        cublasLtMatmulAlgoGetHeuristic(s.lt, plan->op, plan->a, plan->b, plan->c, plan->c, pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0)
      throw std::runtime_error(fmt::format("cuBLASLt has no algorithm for a {}×{}×{} bf16 product (trans {}{}, "
                                           "ld {} {} {}, {}-byte alignment): {}", m, n, k, trans_a ? 'T' : 'N',
                                           trans_b ? 'T' : 'N', lda, ldb, ldc, align, cublasLtGetStatusString(st)));
    plan->algo = result.algo;
    it = s.plans.emplace(key, plan).first;
  }
  const Plan& plan = *static_cast<Plan*>(it->second.get());
  const float alpha = 1.f;
  CUBLAS_CHECK(cublasLtMatmul(s.lt, plan.op, &alpha, A, plan.a, B, plan.b, &beta, C, plan.c, C, plan.c, &plan.algo,
                              s.lt_workspace, s.lt_workspace_bytes, s.stream));
}

}  // namespace

// out (M,N) = inp (M,K)·weight (N,K)ᵀ  ⇔  outᵀ (N×M) = weightᵀ… in column-major: C = Wᵀ_cm·inp_cm.
template <>
void matmul_forward<bf16>(const Context& ctx, bf16* out, const bf16* inp, const bf16* weight, int M, int K, int N) {
  gemm(ctx, true, false, N, M, K, dev(weight), K, dev(inp), K, dev(out), false, N, 0.f);
}

// dinp (M,K) = dout (M,N)·weight (N,K); dweight (N,K) += dout (M,N)ᵀ·inp (M,K).
template <>
void matmul_backward<bf16, float>(const Context& ctx, bf16* dinp, float* dweight, const bf16* dout, const bf16* inp,
                                  const bf16* weight, int M, int K, int N, bool accumulate_dinp) {
  if (dinp) gemm(ctx, false, false, K, M, N, dev(weight), K, dev(dout), N, dev(dinp), false, K, accumulate_dinp ? 1.f : 0.f);
  gemm(ctx, false, true, K, N, M, dev(inp), K, dev(dout), N, dweight, true, K, 1.f);
}

}  // namespace t6
