// q, k, v from the stacked projection, one block per token: the token's projection row is
// staged in shared memory (fp32), RoPE rotates the rows of B_q, B_k (or the dense q, k heads)
// there (cos/sin from a table made once), and each output element is a rank-R contraction. Backward stages the same row and
// one section's output gradient at a time.
#include <fmt/format.h>

#include <cmath>
#include <stdexcept>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/dispatch.h"

namespace t6 {

using namespace cuda;

namespace {

constexpr int kThreads = 128;

// cos θ(t, i) at table[t·D + i], sin θ(t, i) at table[t·D + D/2 + i]: the angle in fp32, as the
// CPU backend (and the reference's fp32 table) forms it, then cos and sin in double. Made once
// per (T, D) and kept with the context.
__global__ void rope_table_kernel(float* table, int T, int D) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= T * (D / 2)) return;
  const int t = idx / (D / 2), i = idx % (D / 2);
  const float inv_freq = (float)(1.0 / pow(10000.0, (2.0 * i) / D));
  const float angle = (float)t * inv_freq;
  table[t * D + i] = (float)cos((double)angle);
  table[t * D + D / 2 + i] = (float)sin((double)angle);
}

const float* rope_table(const Context& ctx, int T, int D) {
  void*& table = ctx.cuda->rope_tables[{T, D}];
  if (!table) {
    table = cuda::alloc(ctx, sizeof(float) * T * D);
    rope_table_kernel<<<blocks_for((size_t)T * D / 2, 256), 256, 0, stream(ctx)>>>(static_cast<float*>(table), T, D);
    CUDA_CHECK_LAUNCH();
  }
  return static_cast<const float*>(table);
}

// Rotates `rows` rows of length D, `pitch` apart, at x by −θ (sign 1) or back (sign −1).
template <int D>
__device__ void rotate(float* x, int rows, const float* cs, float sign, int pitch = D) {
  constexpr int half = D / 2;
  for (int idx = threadIdx.x; idx < rows * half; idx += blockDim.x) {
    float* v = x + (idx / half) * pitch;
    const int i = idx % half;
    const float c = cs[i], s = sign * cs[half + i], x1 = v[i], x2 = v[i + half];
    v[i] = x1 * c + x2 * s;
    v[i + half] = -x1 * s + x2 * c;
  }
}

// n (a multiple of 8) bf16 from 16-byte-aligned src into shared floats, 8 at a time: each run
// of D values starts a new row `pitch` floats apart, or (pitch 0) all of them in one row.
template <int D>
__device__ void load_rows(float* dst, const bf* src, int n, int pitch) {
  for (int c = threadIdx.x * 8; c < n; c += blockDim.x * 8) {
    float f[8];
    load8(f, src + c);
    float* d = pitch ? dst + (c / D) * pitch + c % D : dst + c;
#pragma unroll
    for (int i = 0; i < 8; i++) d[i] = f[i];
  }
}

template <int D>
__global__ void qkv_forward_kernel(bf* q, bf* k, bf* v, const bf* proj, const float* table, QkvLayout L, int T) {
  extern __shared__ float sh[];
  const int n = blockIdx.x;
  float* row = sh;
  const float* cs = table + (n % T) * D;
  load_rows<D>(row, proj + (size_t)n * L.pitch, L.pitch, 0);
  __syncthreads();
  for (int s = 0; s < 2; s++)
    rotate<D>(row + (L.rank[s] ? L.b[s] : L.dense[s]), L.rank[s] ? L.rank[s] : L.heads[s], cs, 1.f);
  __syncthreads();
  bf* outs[3] = {q, k, v};
  for (int s = 0; s < 3; s++) {
    const int H = L.heads[s], R = L.rank[s];
    bf* out = outs[s] + (size_t)n * H * D;
    for (int c = threadIdx.x * 8; c < H * D; c += blockDim.x * 8) {  // 8 adjacent features per thread
      float acc[8];
      if (R == 0) {
#pragma unroll
        for (int i = 0; i < 8; i++) acc[i] = row[L.dense[s] + c + i];
      } else {
        const float *a = row + L.a[s] + (c / D) * R, *b = row + L.b[s] + c % D;
#pragma unroll
        for (int i = 0; i < 8; i++) acc[i] = 0.f;
        for (int r = 0; r < R; r++)
#pragma unroll
          for (int i = 0; i < 8; i++) acc[i] += a[r] * b[r * D + i];
#pragma unroll
        for (int i = 0; i < 8; i++) acc[i] /= R;  // sum first, then divide, as the reference does
      }
      store8(out + c, acc);
    }
  }
}

// g holds one section's output gradient with rows padded to D + 1, so threads that walk
// different heads at the same feature hit different shared-memory banks.
template <int D>
__global__ void qkv_backward_kernel(bf* dproj, const bf* dq, const bf* dk, const bf* dv, const bf* proj,
                                    const float* table, QkvLayout L, int T, int max_hd, int max_rd) {
  extern __shared__ float sh[];
  constexpr int P = D + 1;
  const int n = blockIdx.x;
  float *row = sh, *g = row + L.pitch, *db = g + max_hd, *da = db + max_rd;
  const float* cs = table + (n % T) * D;
  load_rows<D>(row, proj + (size_t)n * L.pitch, L.pitch, 0);
  __syncthreads();
  for (int s = 0; s < 2; s++)
    if (L.rank[s]) rotate<D>(row + L.b[s], L.rank[s], cs, 1.f);
  bf* drow = dproj + (size_t)n * L.pitch;
  const bf* douts[3] = {dq, dk, dv};
  for (int s = 0; s < 3; s++) {
    const int H = L.heads[s], R = L.rank[s];
    __syncthreads();  // the previous section is done with g, da and db (and the rotations are done)
    load_rows<D>(g, douts[s] + (size_t)n * H * D, H * D, P);
    __syncthreads();
    if (R == 0) {
      if (s < 2) rotate<D>(g, H, cs, -1.f, P);  // the transpose of a rotation is the opposite rotation
      __syncthreads();
      for (int j = threadIdx.x; j < H * D; j += blockDim.x) drow[L.dense[s] + j] = __float2bfloat16(g[(j / D) * P + j % D]);
      continue;
    }
    // dA[h,r] = (1/R) Σ_d g[h,d]·B[r,d]: neighbouring threads share r and walk different heads.
    for (int j = threadIdx.x; j < H * R; j += blockDim.x) {
      const int r = j / H, h = j % H;
      const float *gh = g + h * P, *b = row + L.b[s] + r * D;
      float acc = 0.f;
#pragma unroll 16
      for (int d = 0; d < D; d++) acc += gh[d] * b[d];
      da[h * R + r] = acc / R;
    }
    // dB[r,d] = (1/R) Σ_h A[h,r]·g[h,d], then un-rotated.
    for (int j = threadIdx.x; j < R * D; j += blockDim.x) {
      const float* a = row + L.a[s] + j / D;
      float acc = 0.f;
      for (int h = 0; h < H; h++) acc += a[h * R] * g[h * P + j % D];
      db[j] = acc / R;
    }
    __syncthreads();
    if (s < 2) rotate<D>(db, R, cs, -1.f);
    __syncthreads();
    for (int j = threadIdx.x; j < H * R; j += blockDim.x) drow[L.a[s] + j] = __float2bfloat16(da[j]);
    for (int j = threadIdx.x; j < R * D; j += blockDim.x) drow[L.b[s] + j] = __float2bfloat16(db[j]);
  }
}

template <int D>
void forward(const Context& ctx, bf16* q, bf16* k, bf16* v, const bf16* proj, const QkvLayout& L, int B, int T) {
  const float* table = rope_table(ctx, T, D);
  const size_t shared = sizeof(float) * L.pitch;
  CUDA_CHECK(cudaFuncSetAttribute(qkv_forward_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared));
  qkv_forward_kernel<D><<<B * T, kThreads, shared, stream(ctx)>>>(dev(q), dev(k), dev(v), dev(proj), table, L, T);
  CUDA_CHECK_LAUNCH();
}

template <int D>
void backward(const Context& ctx, bf16* dproj, const bf16* dq, const bf16* dk, const bf16* dv, const bf16* proj,
              const QkvLayout& L, int B, int T) {
  int max_hd = 0, max_rd = 0, max_hr = 0;
  for (int s = 0; s < 3; s++) {
    max_hd = std::max(max_hd, L.heads[s] * (D + 1));
    max_rd = std::max(max_rd, L.rank[s] * D);
    max_hr = std::max(max_hr, L.heads[s] * L.rank[s]);
  }
  const float* table = rope_table(ctx, T, D);
  const size_t shared = sizeof(float) * (L.pitch + max_hd + max_rd + max_hr);
  CUDA_CHECK(cudaFuncSetAttribute(qkv_backward_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared));
  qkv_backward_kernel<D><<<B * T, kThreads, shared, stream(ctx)>>>(dev(dproj), dev(dq), dev(dk), dev(dv), dev(proj),
                                                                  table, L, T, max_hd, max_rd);
  CUDA_CHECK_LAUNCH();
}

// The kernels read whole rows 16 bytes at a time: the pitch must keep rows 16-byte aligned.
void check_pitch(const QkvLayout& L) {
  if (L.pitch % 8)
    throw std::invalid_argument(fmt::format("qkv on the GPU needs a row pitch that is a multiple of 8, got {}", L.pitch));
}

[[noreturn]] void unsupported(int D) {
  throw std::invalid_argument(fmt::format("model.head_dim: the CUDA qkv op supports 32, 64 and 128, got {}", D));
}

}  // namespace

template <>
void qkv_forward<bf16>(const Context& ctx, bf16* q, bf16* k, bf16* v, const bf16* proj, const QkvLayout& L, int B,
                       int T) {
  T6_TIMED(ctx, "qkv forward");
  check_pitch(L);
  switch (L.D) {
    case 32: return forward<32>(ctx, q, k, v, proj, L, B, T);
    case 64: return forward<64>(ctx, q, k, v, proj, L, B, T);
    case 128: return forward<128>(ctx, q, k, v, proj, L, B, T);
    default: unsupported(L.D);
  }
}

template <>
void qkv_backward<bf16>(const Context& ctx, bf16* dproj, const bf16* dq, const bf16* dk, const bf16* dv,
                        const bf16* proj, const QkvLayout& L, int B, int T) {
  T6_TIMED(ctx, "qkv backward");
  check_pitch(L);
  switch (L.D) {
    case 32: return backward<32>(ctx, dproj, dq, dk, dv, proj, L, B, T);
    case 64: return backward<64>(ctx, dproj, dq, dk, dv, proj, L, B, T);
    case 128: return backward<128>(ctx, dproj, dq, dk, dv, proj, L, B, T);
    default: unsupported(L.D);
  }
}

}  // namespace t6
