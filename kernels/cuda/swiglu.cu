// SwiGLU over rows of [a | b]: a grid of (column blocks, rows), so no thread divides; 8
// adjacent features move as one 16-byte access where F, the pitches and the pointers allow
// (T6-small's F 2048), else pairs as 4-byte bf16x2 when F is even (T6-medium's 2730), else
// one at a time (T6-large's 3413). Memory-bound: wider accesses mean fewer instructions a byte.
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "kernels/cuda/common.cuh"

namespace t6 {

using namespace cuda;

namespace {

constexpr int kThreads = 256;

template <int W>  // features per thread: 8 (16 bytes), 2 (bf16x2) or 1
__device__ void load(float f[W], const bf* p) {
  if constexpr (W == 8) {
    load8(f, p);
  } else if constexpr (W == 2) {
    const float2 v = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
    f[0] = v.x, f[1] = v.y;
  } else {
    f[0] = __bfloat162float(*p);
  }
}
template <int W>
__device__ void store(bf* p, const float f[W]) {
  if constexpr (W == 8) store8(p, f);
  else if constexpr (W == 2) *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(f[0], f[1]);
  else *p = __float2bfloat16(f[0]);
}

template <int W>
__global__ void swiglu_forward_kernel(bf* out, const bf* fc, int N, int F, int ld_fc, int ld_out) {
  const int j = (blockIdx.x * kThreads + threadIdx.x) * W;
  if (j >= F) return;
  for (int n = blockIdx.y; n < N; n += gridDim.y) {
    const bf* row = fc + (size_t)n * ld_fc;
    float a[W], b[W], o[W];
    load<W>(a, row + j);
    load<W>(b, row + F + j);
#pragma unroll
    for (int i = 0; i < W; i++) o[i] = a[i] / (1.f + __expf(-a[i])) * b[i];
    store<W>(out + (size_t)n * ld_out + j, o);
  }
}

// d silu(a)/da = σ(a)·(1 + a·(1 − σ(a))).
template <int W>
__global__ void swiglu_backward_kernel(bf* dfc, const bf* dout, const bf* fc, int N, int F, int ld_fc, int ld_out) {
  const int j = (blockIdx.x * kThreads + threadIdx.x) * W;
  if (j >= F) return;
  for (int n = blockIdx.y; n < N; n += gridDim.y) {
    const size_t row = (size_t)n * ld_fc;
    float a[W], b[W], g[W], da[W], db[W];
    load<W>(a, fc + row + j);
    load<W>(b, fc + row + F + j);
    load<W>(g, dout + (size_t)n * ld_out + j);
#pragma unroll
    for (int i = 0; i < W; i++) {
      const float sig = 1.f / (1.f + __expf(-a[i]));
      da[i] = g[i] * b[i] * sig * (1.f + a[i] * (1.f - sig));
      db[i] = g[i] * a[i] * sig;
    }
    store<W>(dfc + row + j, da);
    store<W>(dfc + row + F + j, db);
  }
}

// Column blocks × rows (at most 65535 rows of blocks; each block then strides over rows).
dim3 grid(int N, int F, int W) { return dim3((F / W + kThreads - 1) / kThreads, std::min(N, 65535)); }

// Calls launch(std::integral_constant<int, W>{}) with the widest access W every row allows: 8
// features where F and both pitches are multiples of 8 and the pointers 16-byte aligned, 2
// where they are even, else 1.
template <class Launch>
void with_width(int F, int ld_fc, int ld_out, std::initializer_list<const void*> pointers, Launch launch) {
  bool aligned = true;
  for (const void* p : pointers) aligned = aligned && reinterpret_cast<uintptr_t>(p) % 16 == 0;
  if (aligned && F % 8 == 0 && ld_fc % 8 == 0 && ld_out % 8 == 0) launch(std::integral_constant<int, 8>{});
  else if (F % 2 == 0 && ld_fc % 2 == 0 && ld_out % 2 == 0) launch(std::integral_constant<int, 2>{});
  else launch(std::integral_constant<int, 1>{});
}

}  // namespace

template <>
void cuda::swiglu_forward<bf16>(const Context& ctx, bf16* out, const bf16* fc, int N, int F, int ld_fc, int ld_out) {
  T6_TIMED(ctx, "swiglu forward");
  ld_fc = ld_fc ? ld_fc : 2 * F, ld_out = ld_out ? ld_out : F;
  with_width(F, ld_fc, ld_out, {out, fc}, [&](auto w) {
    swiglu_forward_kernel<w><<<grid(N, F, w), kThreads, 0, stream(ctx)>>>(dev(out), dev(fc), N, F, ld_fc, ld_out);
  });
  CUDA_CHECK_LAUNCH();
}

template <>
void cuda::swiglu_backward<bf16>(const Context& ctx, bf16* dfc, const bf16* dout, const bf16* fc, int N, int F, int ld_fc,
                           int ld_out) {
  T6_TIMED(ctx, "swiglu backward");
  ld_fc = ld_fc ? ld_fc : 2 * F, ld_out = ld_out ? ld_out : F;
  with_width(F, ld_fc, ld_out, {dfc, dout, fc}, [&](auto w) {
    swiglu_backward_kernel<w><<<grid(N, F, w), kThreads, 0, stream(ctx)>>>(dev(dfc), dev(dout), dev(fc), N, F, ld_fc,
                                                                         ld_out);
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace t6
