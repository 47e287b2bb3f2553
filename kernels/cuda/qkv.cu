// q, k, v from the stacked projection, one block per token: the token's projection row is
// staged in shared memory (fp32), RoPE rotates the rows of B_q, B_k (or the dense q, k heads)
// there (cos/sin from a table made once), and each output element is a rank-R contraction. Backward stages the same row and
// one section's output gradient at a time.
#include <cmath>

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
__device__ void rotate(float* x, int rows, int D, const float* cs, float sign, int pitch = 0) {
  const int half = D / 2;
  for (int idx = threadIdx.x; idx < rows * half; idx += blockDim.x) {
    float* v = x + (idx / half) * (pitch ? pitch : D);
    const int i = idx % half;
    const float c = cs[i], s = sign * cs[half + i], x1 = v[i], x2 = v[i + half];
    v[i] = x1 * c + x2 * s;
    v[i + half] = -x1 * s + x2 * c;
  }
}

__device__ void load_row(float* row, const bf* src, int n) {
  for (int c = threadIdx.x; c < n; c += blockDim.x) row[c] = __bfloat162float(src[c]);
}

__global__ void qkv_forward_kernel(bf* q, bf* k, bf* v, const bf* proj, const float* table, QkvLayout L, int T) {
  extern __shared__ float sh[];
  const int n = blockIdx.x, D = L.D;
  float* row = sh;
  const float* cs = table + (n % T) * D;
  load_row(row, proj + (size_t)n * L.pitch, L.width);
  __syncthreads();
  for (int s = 0; s < 2; s++)
    rotate(row + (L.rank[s] ? L.b[s] : L.dense[s]), L.rank[s] ? L.rank[s] : L.heads[s], D, cs, 1.f);
  __syncthreads();
  bf* outs[3] = {q, k, v};
  for (int s = 0; s < 3; s++) {
    const int H = L.heads[s], R = L.rank[s];
    __nv_bfloat162* out = reinterpret_cast<__nv_bfloat162*>(outs[s] + (size_t)n * H * D);
    for (int j = threadIdx.x; j < H * D / 2; j += blockDim.x) {  // two adjacent features per thread
      const int h = 2 * j / D, d = 2 * j % D;
      float2 acc;
      if (R == 0) {
        acc = make_float2(row[L.dense[s] + 2 * j], row[L.dense[s] + 2 * j + 1]);
      } else {
        const float *a = row + L.a[s] + h * R, *b = row + L.b[s] + d;
        acc = make_float2(0.f, 0.f);
        for (int r = 0; r < R; r++) acc.x += a[r] * b[r * D], acc.y += a[r] * b[r * D + 1];
        acc.x /= R, acc.y /= R;  // sum first, then divide, as the reference does
      }
      out[j] = __floats2bfloat162_rn(acc.x, acc.y);
    }
  }
}

// g holds one section's output gradient with rows padded to D + 1, so threads that walk
// different heads at the same feature hit different shared-memory banks.
__global__ void qkv_backward_kernel(bf* dproj, const bf* dq, const bf* dk, const bf* dv, const bf* proj,
                                    const float* table, QkvLayout L, int T, int max_hd, int max_rd) {
  extern __shared__ float sh[];
  const int n = blockIdx.x, D = L.D, P = D + 1;
  float *row = sh, *g = row + L.width, *db = g + max_hd, *da = db + max_rd;
  const float* cs = table + (n % T) * D;
  load_row(row, proj + (size_t)n * L.pitch, L.width);
  __syncthreads();
  for (int s = 0; s < 2; s++)
    if (L.rank[s]) rotate(row + L.b[s], L.rank[s], D, cs, 1.f);
  bf* drow = dproj + (size_t)n * L.pitch;
  const bf* douts[3] = {dq, dk, dv};
  for (int s = 0; s < 3; s++) {
    const int H = L.heads[s], R = L.rank[s];
    __syncthreads();  // the previous section is done with g, da and db (and the rotations are done)
    const bf* src = douts[s] + (size_t)n * H * D;
    for (int c = threadIdx.x; c < H * D; c += blockDim.x) g[(c / D) * P + c % D] = __bfloat162float(src[c]);
    __syncthreads();
    if (R == 0) {
      if (s < 2) rotate(g, H, D, cs, -1.f, P);  // the transpose of a rotation is the opposite rotation
      __syncthreads();
      for (int j = threadIdx.x; j < H * D; j += blockDim.x) drow[L.dense[s] + j] = __float2bfloat16(g[(j / D) * P + j % D]);
      continue;
    }
    // dA[h,r] = (1/R) Σ_d g[h,d]·B[r,d]: neighbouring threads share r and walk different heads.
    for (int j = threadIdx.x; j < H * R; j += blockDim.x) {
      const int r = j / H, h = j % H;
      const float *gh = g + h * P, *b = row + L.b[s] + r * D;
      float acc = 0.f;
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
    if (s < 2) rotate(db, R, D, cs, -1.f);
    __syncthreads();
    for (int j = threadIdx.x; j < H * R; j += blockDim.x) drow[L.a[s] + j] = __float2bfloat16(da[j]);
    for (int j = threadIdx.x; j < R * D; j += blockDim.x) drow[L.b[s] + j] = __float2bfloat16(db[j]);
  }
}

}  // namespace

template <>
void qkv_forward<bf16>(const Context& ctx, bf16* q, bf16* k, bf16* v, const bf16* proj, const QkvLayout& L, int B,
                       int T) {
  T6_TIMED(ctx, "qkv forward");
  const float* table = rope_table(ctx, T, L.D);
  QkvLayout Lp = L;
  Lp.pitch = L.stride();  // the kernels read pitch
  const size_t shared = sizeof(float) * L.width;
  CUDA_CHECK(cudaFuncSetAttribute(qkv_forward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared));
  qkv_forward_kernel<<<B * T, kThreads, shared, stream(ctx)>>>(dev(q), dev(k), dev(v), dev(proj), table, Lp, T);
  CUDA_CHECK_LAUNCH();
}

template <>
void qkv_backward<bf16>(const Context& ctx, bf16* dproj, const bf16* dq, const bf16* dk, const bf16* dv,
                        const bf16* proj, const QkvLayout& L, int B, int T) {
  T6_TIMED(ctx, "qkv backward");
  int max_hd = 0, max_rd = 0, max_hr = 0;
  for (int s = 0; s < 3; s++) {
    max_hd = std::max(max_hd, L.heads[s] * (L.D + 1));
    max_rd = std::max(max_rd, L.rank[s] * L.D);
    max_hr = std::max(max_hr, L.heads[s] * L.rank[s]);
  }
  const float* table = rope_table(ctx, T, L.D);
  QkvLayout Lp = L;
  Lp.pitch = L.stride();
  const size_t shared = sizeof(float) * (L.width + max_hd + max_rd + max_hr);
  CUDA_CHECK(cudaFuncSetAttribute(qkv_backward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared));
  qkv_backward_kernel<<<B * T, kThreads, shared, stream(ctx)>>>(dev(dproj), dev(dq), dev(dk), dev(dv), dev(proj),
                                                              table, Lp, T, max_hd, max_rd);
  CUDA_CHECK_LAUNCH();
}

}  // namespace t6
