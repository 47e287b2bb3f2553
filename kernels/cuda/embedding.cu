#include "kernels/cuda/common.cuh"

namespace t6 {

using namespace cuda;

namespace {

__global__ void embedding_forward_kernel(bf* out, const int32_t* tokens, const bf* wte, int N, int C) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (size_t)N * C; i += (size_t)gridDim.x * blockDim.x)
    out[i] = wte[(size_t)tokens[i / C] * C + i % C];
}

// A repeated token adds into the same row. Without atomics (whose order, and so the last bits,
// would vary): a block owns kRows rows of the vocabulary, scans the tokens in order, collects
// the positions that fall in its rows (in order, a chunk at a time), and adds their gradient
// rows one after the other; its threads split the columns. The sums are the same every run.
constexpr int kRows = 128, kThreads = 256;

__global__ void __launch_bounds__(kThreads) embedding_backward_kernel(float* dwte, const bf* dout,
                                                                      const int32_t* tokens, int N, int C) {
  __shared__ int hits[kThreads], per_warp[kThreads / 32];
  const int v0 = blockIdx.x * kRows, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int n0 = 0; n0 < N; n0 += kThreads) {
    const int n = n0 + threadIdx.x;
    const bool hit = n < N && tokens[n] >= v0 && tokens[n] < v0 + kRows;
    const unsigned ballot = __ballot_sync(0xffffffffu, hit);
    if (lane == 0) per_warp[warp] = __popc(ballot);
    __syncthreads();
    int before = 0, total = 0;
    for (int w = 0; w < kThreads / 32; w++) before += w < warp ? per_warp[w] : 0, total += per_warp[w];
    if (hit) hits[before + __popc(ballot & ((1u << lane) - 1))] = n;
    __syncthreads();
    for (int j = 0; j < total; j++) {
      const size_t m = hits[j], row = tokens[m];
      for (int c = threadIdx.x; c < C; c += kThreads) dwte[row * C + c] += __bfloat162float(dout[m * C + c]);
    }
    __syncthreads();  // hits and per_warp are rewritten for the next chunk
  }
}

}  // namespace

template <>
void cuda::embedding_forward<bf16>(const Context& ctx, bf16* out, const int32_t* tokens, const bf16* wte, int N, int C) {
  T6_TIMED(ctx, "embedding forward");
  embedding_forward_kernel<<<blocks_for((size_t)N * C, 256), 256, 0, stream(ctx)>>>(dev(out), tokens, dev(wte), N, C);
  CUDA_CHECK_LAUNCH();
}

template <>
void cuda::embedding_backward<bf16, float>(const Context& ctx, float* dwte, const bf16* dout, const int32_t* tokens, int N,
                                     int C, int V) {
  T6_TIMED(ctx, "embedding backward");
  embedding_backward_kernel<<<(V + kRows - 1) / kRows, kThreads, 0, stream(ctx)>>>(dwte, dev(dout), tokens, N, C);
  CUDA_CHECK_LAUNCH();
}

}  // namespace t6
