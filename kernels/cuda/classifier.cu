// Cross-entropy fused with its gradient, one block per row: an online (max, sum of exp) pass
// in fp32, then dlogits written over the logits in place. The model calls it on chunks of
// rows, so the batch's logits never exist all at once. The exponentials are exp2_ftz's (two
// instructions each, where expf takes eight): these passes should wait on memory, not on them.
#include <cfloat>

#include "kernels/cuda/common.cuh"

namespace t6 {

using namespace cuda;

namespace {

constexpr int kThreads = 512;

__device__ void combine(float& m, float& s, float m2, float s2) {
  const float M = fmaxf(m, m2);
  s = (m == -INFINITY ? 0.f : s * expf(m - M)) + (m2 == -INFINITY ? 0.f : s2 * expf(m2 - M));
  m = M;
}

// W = 8: 16-byte accesses (V a multiple of 8, as 50304 is); W = 1 otherwise.
template <int W>
__global__ void classifier_kernel(bf* logits, float* losses, const int32_t* targets, int V, float g, bool write_grad) {
  __shared__ float sm[kThreads / 32], ss[kThreads / 32], target_logit;
  bf* row = logits + (size_t)blockIdx.x * V;
  const int target = targets[blockIdx.x];
  if (target < 0) {
    if (threadIdx.x == 0) losses[blockIdx.x] = 0.f;
    if (write_grad)
      for (int i = threadIdx.x; i < V; i += kThreads) row[i] = __float2bfloat16(0.f);
    return;
  }
  if (threadIdx.x == 0) target_logit = __bfloat162float(row[target]);
  float m = -INFINITY, s = 0.f, x[W];
  for (int i = threadIdx.x * W; i < V; i += kThreads * W) {
    if constexpr (W == 8) load8(x, row + i);
    else x[0] = __bfloat162float(row[i]);
    float mx = x[0];
#pragma unroll
    for (int j = 1; j < W; j++) mx = fmaxf(mx, x[j]);
    if (mx > m) {
      s = m == -INFINITY ? 0.f : s * exp2_ftz((m - mx) * kLog2e);
      m = mx;
    }
    const float m2 = m * kLog2e;
#pragma unroll
    for (int j = 0; j < W; j++) s += exp2_ftz(fmaf(x[j], kLog2e, -m2));
  }
  for (int o = 16; o > 0; o >>= 1) combine(m, s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
  if (threadIdx.x % 32 == 0) sm[threadIdx.x / 32] = m, ss[threadIdx.x / 32] = s;
  __syncthreads();
  m = sm[0], s = ss[0];
  for (int w = 1; w < kThreads / 32; w++) combine(m, s, sm[w], ss[w]);
  const float lse = m + logf(s), lse2 = lse * kLog2e;
  if (threadIdx.x == 0) losses[blockIdx.x] = lse - target_logit;
  if (!write_grad) return;
  for (int i = threadIdx.x * W; i < V; i += kThreads * W) {
    if constexpr (W == 8) load8(x, row + i);
    else x[0] = __bfloat162float(row[i]);
#pragma unroll
    for (int j = 0; j < W; j++) x[j] = (exp2_ftz(fmaf(x[j], kLog2e, -lse2)) - (i + j == target ? 1.f : 0.f)) * g;
    if constexpr (W == 8) store8(row + i, x);
    else row[i] = __float2bfloat16(x[0]);
  }
}

}  // namespace

template <>
void cuda::classifier_forward_backward<bf16, float>(const Context& ctx, bf16* logits, float* losses, const int32_t* targets,
                                              int N, int V, int n_valid, double dloss) {
  T6_TIMED(ctx, "classifier");
  const float g = n_valid > 0 ? (float)(dloss / n_valid) : 0.f;
  if (V % 8 == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0)
    classifier_kernel<8><<<N, kThreads, 0, stream(ctx)>>>(dev(logits), losses, targets, V, g, dloss != 0);
  else
    classifier_kernel<1><<<N, kThreads, 0, stream(ctx)>>>(dev(logits), losses, targets, V, g, dloss != 0);
  CUDA_CHECK_LAUNCH();
}

}  // namespace t6
