// Cross-entropy fused with its gradient, one block per row: an online (max, sum of exp) pass
// in fp32, then dlogits written over the logits in place. The model calls it on chunks of
// rows, so the batch's logits never exist all at once.
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
  float m = -INFINITY, s = 0.f;
  for (int i = threadIdx.x; i < V; i += kThreads) {
    const float x = __bfloat162float(row[i]);
    if (x > m) {
      s = (m == -INFINITY ? 0.f : s * expf(m - x)) + 1.f;
      m = x;
    } else {
      s += expf(x - m);
    }
  }
  for (int o = 16; o > 0; o >>= 1) combine(m, s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
  if (threadIdx.x % 32 == 0) sm[threadIdx.x / 32] = m, ss[threadIdx.x / 32] = s;
  __syncthreads();
  m = sm[0], s = ss[0];
  for (int w = 1; w < kThreads / 32; w++) combine(m, s, sm[w], ss[w]);
  const float lse = m + logf(s);
  if (threadIdx.x == 0) losses[blockIdx.x] = lse - target_logit;
  if (!write_grad) return;
  for (int i = threadIdx.x; i < V; i += kThreads) {
    const float p = expf(__bfloat162float(row[i]) - lse);
    row[i] = __float2bfloat16((p - (i == target ? 1.f : 0.f)) * g);
  }
}

}  // namespace

template <>
void classifier_forward_backward<bf16, float>(const Context& ctx, bf16* logits, float* losses, const int32_t* targets,
                                              int N, int V, int n_valid, double dloss) {
  T6_TIMED(ctx, "classifier");
  const float g = n_valid > 0 ? (float)(dloss / n_valid) : 0.f;
  classifier_kernel<<<N, kThreads, 0, stream(ctx)>>>(dev(logits), losses, targets, V, g, dloss != 0);
  CUDA_CHECK_LAUNCH();
}

}  // namespace t6
