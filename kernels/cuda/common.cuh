// Device-side helpers shared by the CUDA kernels.
#pragma once
#include <cuda_bf16.h>

#include "kernels/cuda/dispatch.h"  // (the ops this backend specializes)
#include "kernels/cuda/state.h"
#include "kernels/ops.h"

namespace t6::cuda {

using bf = __nv_bfloat16;
inline bf* dev(bf16* p) { return reinterpret_cast<bf*>(p); }
inline const bf* dev(const bf16* p) { return reinterpret_cast<const bf*>(p); }
inline cudaStream_t stream(const Context& ctx) { return ctx.cuda->stream; }
inline int blocks_for(size_t n, int threads) { return (int)std::min<size_t>((n + threads - 1) / threads, 1u << 30); }

// 8 bf16 ↔ 8 floats through one 16-byte access (the address must be 16-byte aligned).
__device__ inline void load8(float f[8], const bf* p) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const float2 v = __bfloat1622float2(h[i]);
    f[2 * i] = v.x, f[2 * i + 1] = v.y;
  }
}
__device__ inline void store8(bf* p, const float f[8]) {
  uint4 raw;
  __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; i++) h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
  *reinterpret_cast<uint4*>(p) = raw;
}

constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;

// Two floats as the bf16 pair of one 32-bit register (lo in the low half).
__device__ inline uint32_t pack(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// 2^x from the special-function unit alone. exp2f also produces results below 2^-126
// (subnormals), which costs three more instructions a call, and expf six (measured on sm_90a
// cubins); in a softmax a value that small adds nothing to the sums and flushes to 0 here.
__device__ inline float exp2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ inline float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

}  // namespace t6::cuda
