#include "kernels/cuda/common.cuh"

namespace t6 {

using namespace cuda;

namespace {

__global__ void embedding_forward_kernel(bf* out, const int32_t* tokens, const bf* wte, int N, int C) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (size_t)N * C; i += (size_t)gridDim.x * blockDim.x)
    out[i] = wte[(size_t)tokens[i / C] * C + i % C];
}

// A repeated token adds into the same row: atomics (their order, and so the last bits, vary).
__global__ void embedding_backward_kernel(float* dwte, const bf* dout, const int32_t* tokens, int N, int C) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (size_t)N * C; i += (size_t)gridDim.x * blockDim.x)
    atomicAdd(dwte + (size_t)tokens[i / C] * C + i % C, __bfloat162float(dout[i]));
}

}  // namespace

template <>
void embedding_forward<bf16>(const Context& ctx, bf16* out, const int32_t* tokens, const bf16* wte, int N, int C) {
  T6_TIMED(ctx, "embedding forward");
  embedding_forward_kernel<<<blocks_for((size_t)N * C, 256), 256, 0, stream(ctx)>>>(dev(out), tokens, dev(wte), N, C);
  CUDA_CHECK_LAUNCH();
}

template <>
void embedding_backward<bf16, float>(const Context& ctx, float* dwte, const bf16* dout, const int32_t* tokens, int N,
                                     int C) {
  T6_TIMED(ctx, "embedding backward");
  embedding_backward_kernel<<<blocks_for((size_t)N * C, 256), 256, 0, stream(ctx)>>>(dwte, dev(dout), tokens, N, C);
  CUDA_CHECK_LAUNCH();
}

}  // namespace t6
