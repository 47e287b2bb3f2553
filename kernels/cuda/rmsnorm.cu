// RMSNorm without weight, one warp per row; statistics in fp32. The residual form adds the
// branch first and normalizes the stream as stored (in bf16), so backward sees the same x.
#include "kernels/cuda/common.cuh"

namespace t6 {

using namespace cuda;

namespace {

constexpr int kRowsPerBlock = 8;  // warps per block

__device__ void normalize_row(bf* y, float* rstd, const bf* x, int C, float eps, int lane) {
  float ss = 0;
  for (int c = lane; c < C; c += 32) {
    const float v = __bfloat162float(x[c]);
    ss += v * v;
  }
  const float r = rsqrtf(warp_sum(ss) / C + eps);
  for (int c = lane; c < C; c += 32) y[c] = __float2bfloat16(__bfloat162float(x[c]) * r);
  if (lane == 0) *rstd = r;
}

__global__ void rmsnorm_forward_kernel(bf* out, float* rstd, const bf* inp, int N, int C, float eps) {
  const int n = blockIdx.x * kRowsPerBlock + threadIdx.x / 32;
  if (n >= N) return;
  normalize_row(out + (size_t)n * C, rstd + n, inp + (size_t)n * C, C, eps, threadIdx.x % 32);
}

__global__ void residual_rmsnorm_forward_kernel(bf* x_out, bf* out, float* rstd, const bf* x, const bf* branch, int N,
                                                int C, float eps) {
  const int n = blockIdx.x * kRowsPerBlock + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (n >= N) return;
  const size_t row = (size_t)n * C;
  for (int c = lane; c < C; c += 32)
    x_out[row + c] = __float2bfloat16(__bfloat162float(x[row + c]) + __bfloat162float(branch[row + c]));
  __syncwarp();
  normalize_row(out + row, rstd + n, x_out + row, C, eps, lane);
}

// dx += r·dy − r³·x·(dy·x)/C
__global__ void rmsnorm_backward_kernel(bf* dinp, const bf* dout, const bf* inp, const float* rstd, int N, int C) {
  const int n = blockIdx.x * kRowsPerBlock + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (n >= N) return;
  const size_t row = (size_t)n * C;
  float dot = 0;
  for (int c = lane; c < C; c += 32) dot += __bfloat162float(dout[row + c]) * __bfloat162float(inp[row + c]);
  dot = warp_sum(dot);
  const float r = rstd[n], k = r * r * r * dot / C;
  for (int c = lane; c < C; c += 32)
    dinp[row + c] = __float2bfloat16(__bfloat162float(dinp[row + c]) + r * __bfloat162float(dout[row + c]) -
                                     k * __bfloat162float(inp[row + c]));
}

int row_blocks(int N) { return (N + kRowsPerBlock - 1) / kRowsPerBlock; }

}  // namespace

template <>
void rmsnorm_forward<bf16, float>(const Context& ctx, bf16* out, float* rstd, const bf16* inp, int N, int C,
                                  double eps) {
  rmsnorm_forward_kernel<<<row_blocks(N), 32 * kRowsPerBlock, 0, stream(ctx)>>>(dev(out), rstd, dev(inp), N, C,
                                                                                (float)eps);
  CUDA_CHECK_LAUNCH();
}

template <>
void residual_rmsnorm_forward<bf16, float>(const Context& ctx, bf16* x_out, bf16* out, float* rstd, const bf16* x,
                                           const bf16* branch, int N, int C, double eps) {
  residual_rmsnorm_forward_kernel<<<row_blocks(N), 32 * kRowsPerBlock, 0, stream(ctx)>>>(
      dev(x_out), dev(out), rstd, dev(x), dev(branch), N, C, (float)eps);
  CUDA_CHECK_LAUNCH();
}

template <>
void rmsnorm_backward<bf16, float>(const Context& ctx, bf16* dinp, const bf16* dout, const bf16* inp,
                                   const float* rstd, int N, int C) {
  rmsnorm_backward_kernel<<<row_blocks(N), 32 * kRowsPerBlock, 0, stream(ctx)>>>(dev(dinp), dev(dout), dev(inp), rstd,
                                                                                 N, C);
  CUDA_CHECK_LAUNCH();
}

}  // namespace t6
