// RMSNorm without weight, one warp per row; statistics in fp32. The residual form adds the
// branch first and normalizes the stream as stored (in bf16), so backward sees the same x.
// Rows go through 16-byte accesses, 8 features at a time (C a multiple of 8, as in every
// paper config); other widths take a one-feature-at-a-time path.
#include "kernels/cuda/common.cuh"

namespace t6 {

using namespace cuda;

namespace {

constexpr int kRowsPerBlock = 8;  // warps per block

// The row's features a lane owns: chunks of W (8 or 1) features, lane-strided.
template <int W>
struct Row {
  __device__ static void load(float f[W], const bf* p) {
    if constexpr (W == 8) load8(f, p);
    else f[0] = __bfloat162float(*p);
  }
  __device__ static void store(bf* p, const float f[W]) {
    if constexpr (W == 8) store8(p, f);
    else *p = __float2bfloat16(f[0]);
  }
};

template <int W>
__device__ void normalize_row(bf* y, float* rstd, const bf* x, int C, float eps, int lane) {
  float ss = 0, f[W];
  for (int c = lane * W; c < C; c += 32 * W) {
    Row<W>::load(f, x + c);
#pragma unroll
    for (int i = 0; i < W; i++) ss += f[i] * f[i];
  }
  const float r = rsqrtf(warp_sum(ss) / C + eps);
  for (int c = lane * W; c < C; c += 32 * W) {
    Row<W>::load(f, x + c);
#pragma unroll
    for (int i = 0; i < W; i++) f[i] *= r;
    Row<W>::store(y + c, f);
  }
  if (lane == 0) *rstd = r;
}

template <int W>
__global__ void rmsnorm_forward_kernel(bf* out, float* rstd, const bf* inp, int N, int C, float eps) {
  const int n = blockIdx.x * kRowsPerBlock + threadIdx.x / 32;
  if (n >= N) return;
  normalize_row<W>(out + (size_t)n * C, rstd + n, inp + (size_t)n * C, C, eps, threadIdx.x % 32);
}

template <int W>
__global__ void residual_rmsnorm_forward_kernel(bf* x_out, bf* out, float* rstd, const bf* x, const bf* branch, int N,
                                                int C, float eps) {
  const int n = blockIdx.x * kRowsPerBlock + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (n >= N) return;
  const size_t row = (size_t)n * C;
  float a[W], b[W];
  for (int c = lane * W; c < C; c += 32 * W) {
    Row<W>::load(a, x + row + c);
    Row<W>::load(b, branch + row + c);
#pragma unroll
    for (int i = 0; i < W; i++) a[i] += b[i];
    Row<W>::store(x_out + row + c, a);
  }
  __syncwarp();
  normalize_row<W>(out + row, rstd + n, x_out + row, C, eps, lane);
}

// dx += r·dy − r³·x·(dy·x)/C
template <int W>
__global__ void rmsnorm_backward_kernel(bf* dinp, const bf* dout, const bf* inp, const float* rstd, int N, int C) {
  const int n = blockIdx.x * kRowsPerBlock + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (n >= N) return;
  const size_t row = (size_t)n * C;
  float dot = 0, dy[W], x[W], dx[W];
  for (int c = lane * W; c < C; c += 32 * W) {
    Row<W>::load(dy, dout + row + c);
    Row<W>::load(x, inp + row + c);
#pragma unroll
    for (int i = 0; i < W; i++) dot += dy[i] * x[i];
  }
  dot = warp_sum(dot);
  const float r = rstd[n], k = r * r * r * dot / C;
  for (int c = lane * W; c < C; c += 32 * W) {
    Row<W>::load(dy, dout + row + c);
    Row<W>::load(x, inp + row + c);
    Row<W>::load(dx, dinp + row + c);
#pragma unroll
    for (int i = 0; i < W; i++) dx[i] += r * dy[i] - k * x[i];
    Row<W>::store(dinp + row + c, dx);
  }
}

int row_blocks(int N) { return (N + kRowsPerBlock - 1) / kRowsPerBlock; }

// 16-byte accesses need every row 16-byte aligned: C a multiple of 8 and aligned bases.
bool vectorized(int C, std::initializer_list<const void*> ptrs) {
  if (C % 8) return false;
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16) return false;
  return true;
}

}  // namespace

template <>
void cuda::rmsnorm_forward<bf16, float>(const Context& ctx, bf16* out, float* rstd, const bf16* inp, int N, int C,
                                  double eps) {
  T6_TIMED(ctx, "rmsnorm forward");
  if (vectorized(C, {out, inp}))
    rmsnorm_forward_kernel<8><<<row_blocks(N), 32 * kRowsPerBlock, 0, stream(ctx)>>>(dev(out), rstd, dev(inp), N, C, (float)eps);
  else
    rmsnorm_forward_kernel<1><<<row_blocks(N), 32 * kRowsPerBlock, 0, stream(ctx)>>>(dev(out), rstd, dev(inp), N, C, (float)eps);
  CUDA_CHECK_LAUNCH();
}

template <>
void cuda::residual_rmsnorm_forward<bf16, float>(const Context& ctx, bf16* x_out, bf16* out, float* rstd, const bf16* x,
                                           const bf16* branch, int N, int C, double eps) {
  T6_TIMED(ctx, "residual + rmsnorm forward");
  if (vectorized(C, {x_out, out, x, branch}))
    residual_rmsnorm_forward_kernel<8><<<row_blocks(N), 32 * kRowsPerBlock, 0, stream(ctx)>>>(
        dev(x_out), dev(out), rstd, dev(x), dev(branch), N, C, (float)eps);
  else
    residual_rmsnorm_forward_kernel<1><<<row_blocks(N), 32 * kRowsPerBlock, 0, stream(ctx)>>>(
        dev(x_out), dev(out), rstd, dev(x), dev(branch), N, C, (float)eps);
  CUDA_CHECK_LAUNCH();
}

template <>
void cuda::rmsnorm_backward<bf16, float>(const Context& ctx, bf16* dinp, const bf16* dout, const bf16* inp,
                                   const float* rstd, int N, int C) {
  T6_TIMED(ctx, "rmsnorm backward");
  if (vectorized(C, {dinp, dout, inp}))
    rmsnorm_backward_kernel<8><<<row_blocks(N), 32 * kRowsPerBlock, 0, stream(ctx)>>>(dev(dinp), dev(dout), dev(inp), rstd, N, C);
  else
    rmsnorm_backward_kernel<1><<<row_blocks(N), 32 * kRowsPerBlock, 0, stream(ctx)>>>(dev(dinp), dev(dout), dev(inp), rstd, N, C);
  CUDA_CHECK_LAUNCH();
}

}  // namespace t6
