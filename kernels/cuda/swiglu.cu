#include "kernels/cuda/common.cuh"

namespace t6 {

using namespace cuda;

namespace {

__global__ void swiglu_forward_kernel(bf* out, const bf* fc, int N, int F, int ld_fc, int ld_out) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (size_t)N * F; i += (size_t)gridDim.x * blockDim.x) {
    const size_t n = i / F, j = i % F;
    const float a = __bfloat162float(fc[n * ld_fc + j]), b = __bfloat162float(fc[n * ld_fc + F + j]);
    out[n * ld_out + j] = __float2bfloat16(a / (1.f + __expf(-a)) * b);
  }
}

// d silu(a)/da = σ(a)·(1 + a·(1 − σ(a))).
__global__ void swiglu_backward_kernel(bf* dfc, const bf* dout, const bf* fc, int N, int F, int ld_fc, int ld_out) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (size_t)N * F; i += (size_t)gridDim.x * blockDim.x) {
    const size_t n = i / F, j = i % F;
    const float a = __bfloat162float(fc[n * ld_fc + j]), b = __bfloat162float(fc[n * ld_fc + F + j]);
    const float g = __bfloat162float(dout[n * ld_out + j]), sig = 1.f / (1.f + __expf(-a));
    dfc[n * ld_fc + j] = __float2bfloat16(g * b * sig * (1.f + a * (1.f - sig)));
    dfc[n * ld_fc + F + j] = __float2bfloat16(g * a * sig);
  }
}

}  // namespace

template <>
void swiglu_forward<bf16>(const Context& ctx, bf16* out, const bf16* fc, int N, int F, int ld_fc, int ld_out) {
  T6_TIMED(ctx, "swiglu forward");
  swiglu_forward_kernel<<<blocks_for((size_t)N * F, 256), 256, 0, stream(ctx)>>>(dev(out), dev(fc), N, F, ld_fc ? ld_fc : 2 * F,
                                                                                 ld_out ? ld_out : F);
  CUDA_CHECK_LAUNCH();
}

template <>
void swiglu_backward<bf16>(const Context& ctx, bf16* dfc, const bf16* dout, const bf16* fc, int N, int F, int ld_fc,
                           int ld_out) {
  T6_TIMED(ctx, "swiglu backward");
  swiglu_backward_kernel<<<blocks_for((size_t)N * F, 256), 256, 0, stream(ctx)>>>(dev(dfc), dev(dout), dev(fc), N, F,
                                                                                  ld_fc ? ld_fc : 2 * F, ld_out ? ld_out : F);
  CUDA_CHECK_LAUNCH();
}

}  // namespace t6
