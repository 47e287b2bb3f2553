// fp32 ops over flat buffers (the optimizer's), and the fp32 → bf16 copy of the weights.
// Reductions are deterministic: a fixed grid, per-thread sums in double, partials summed in a
// fixed order.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/dispatch.h"

namespace t6 {

using namespace cuda;

namespace {

constexpr int kReduceBlocks = 1024, kReduceThreads = 256;

__global__ void scale_kernel(float* x, float s, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) x[i] *= s;
}

__global__ void convert_kernel(bf* out, const float* in, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    out[i] = __float2bfloat16(in[i]);
}

__device__ double block_sum_double(double v) {
  __shared__ double partial[kReduceThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  double total = 0;
  if (threadIdx.x == 0)
    for (int w = 0; w < kReduceThreads / 32; w++) total += partial[w];
  return total;  // valid in thread 0
}

template <bool kSquares>
__global__ void partial_sums_kernel(double* partials, const float* x, size_t n) {
  double acc = 0;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const double v = x[i];
    acc += kSquares ? v * v : v;
  }
  const double total = block_sum_double(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

__global__ void final_sum_kernel(double* result, const double* partials) {
  double acc = 0;
  for (int i = threadIdx.x; i < kReduceBlocks; i += blockDim.x) acc += partials[i];
  const double total = block_sum_double(acc);
  if (threadIdx.x == 0) *result = total;
}

template <bool kSquares>
double reduce(const Context& ctx, const float* x, size_t n) {
  T6_TIMED(ctx, "sum / sum of squares");
  double* partials = static_cast<double*>(cuda::scratch(ctx, sizeof(double) * (kReduceBlocks + 1)));
  partial_sums_kernel<kSquares><<<kReduceBlocks, kReduceThreads, 0, stream(ctx)>>>(partials, x, n);
  CUDA_CHECK_LAUNCH();
  final_sum_kernel<<<1, kReduceThreads, 0, stream(ctx)>>>(partials + kReduceBlocks, partials);
  CUDA_CHECK_LAUNCH();
  double* host = ctx.cuda->host_result;
  CUDA_CHECK(cudaMemcpyAsync(host, partials + kReduceBlocks, sizeof(double), cudaMemcpyDeviceToHost, stream(ctx)));
  CUDA_CHECK(cudaStreamSynchronize(stream(ctx)));
  return *host;
}

}  // namespace

template <>
void cuda::scale<float>(const Context& ctx, float* x, double s, size_t n) {
  T6_TIMED(ctx, "scale");
  scale_kernel<<<blocks_for(n, 256), 256, 0, stream(ctx)>>>(x, (float)s, n);
  CUDA_CHECK_LAUNCH();
}

template <>
double cuda::sum<float>(const Context& ctx, const float* x, size_t n) { return reduce<false>(ctx, x, n); }
template <>
double cuda::sum_squares<float>(const Context& ctx, const float* x, size_t n) { return reduce<true>(ctx, x, n); }

void convert(const Context& ctx, bf16* out, const float* in, size_t n) {
  T6_TIMED(ctx, "convert to bf16");
  if (n == 0) return;
  convert_kernel<<<blocks_for(n, 256), 256, 0, stream(ctx)>>>(dev(out), in, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace t6
