// q, k, v from the stacked projection, one block per token: the token's projection row is
// staged in shared memory (fp32), RoPE rotates the rows of B_q, B_k (or the dense q, k heads)
// there, and each output element is a rank-R contraction. Backward stages the same row and
// one section's output gradient at a time.
#include <cmath>

#include "kernels/cuda/common.cuh"

namespace t6 {

using namespace cuda;

namespace {

constexpr int kThreads = 256;

// cos θ(t, i) in cs[i], sin θ(t, i) in cs[D/2 + i]: the angle in fp32, as the CPU backend (and
// the reference's fp32 table) forms it, then cos and sin in double.
__device__ void rope_table(float* cs, int t, int D) {
  for (int i = threadIdx.x; i < D / 2; i += blockDim.x) {
    const float inv_freq = (float)(1.0 / pow(10000.0, (2.0 * i) / D));
    const float angle = (float)t * inv_freq;
    cs[i] = (float)cos((double)angle);
    cs[D / 2 + i] = (float)sin((double)angle);
  }
}

// Rotates `rows` rows of length D at x by −θ (sign 1) or back (sign −1).
__device__ void rotate(float* x, int rows, int D, const float* cs, float sign) {
  const int half = D / 2;
  for (int idx = threadIdx.x; idx < rows * half; idx += blockDim.x) {
    float* v = x + (idx / half) * D;
    const int i = idx % half;
    const float c = cs[i], s = sign * cs[half + i], x1 = v[i], x2 = v[i + half];
    v[i] = x1 * c + x2 * s;
    v[i + half] = -x1 * s + x2 * c;
  }
}

__device__ void load_row(float* row, const bf* src, int width) {
  for (int c = threadIdx.x; c < width; c += blockDim.x) row[c] = __bfloat162float(src[c]);
}

__global__ void qkv_forward_kernel(bf* q, bf* k, bf* v, const bf* proj, QkvLayout L, int T) {
  extern __shared__ float sh[];
  const int n = blockIdx.x, D = L.D;
  float *row = sh, *cs = sh + L.width;
  load_row(row, proj + (size_t)n * L.width, L.width);
  rope_table(cs, n % T, D);
  __syncthreads();
  for (int s = 0; s < 2; s++)
    rotate(row + (L.rank[s] ? L.b[s] : L.dense[s]), L.rank[s] ? L.rank[s] : L.heads[s], D, cs, 1.f);
  __syncthreads();
  bf* outs[3] = {q, k, v};
  for (int s = 0; s < 3; s++) {
    const int H = L.heads[s], R = L.rank[s];
    bf* out = outs[s] + (size_t)n * H * D;
    for (int j = threadIdx.x; j < H * D; j += blockDim.x) {
      float acc;
      if (R == 0) {
        acc = row[L.dense[s] + j];
      } else {
        const float *a = row + L.a[s] + (j / D) * R, *b = row + L.b[s] + j % D;
        acc = 0.f;
        for (int r = 0; r < R; r++) acc += a[r] * b[r * D];
        acc /= R;  // sum first, then divide, as the reference does
      }
      out[j] = __float2bfloat16(acc);
    }
  }
}

__global__ void qkv_backward_kernel(bf* dproj, const bf* dq, const bf* dk, const bf* dv, const bf* proj, QkvLayout L,
                                    int T, int max_hd, int max_rd) {
  extern __shared__ float sh[];
  const int n = blockIdx.x, D = L.D, half = D / 2;
  float *row = sh, *cs = row + L.width, *g = cs + D, *db = g + max_hd;
  load_row(row, proj + (size_t)n * L.width, L.width);
  rope_table(cs, n % T, D);
  __syncthreads();
  for (int s = 0; s < 2; s++)
    if (L.rank[s]) rotate(row + L.b[s], L.rank[s], D, cs, 1.f);
  bf* drow = dproj + (size_t)n * L.width;
  const bf* douts[3] = {dq, dk, dv};
  for (int s = 0; s < 3; s++) {
    const int H = L.heads[s], R = L.rank[s];
    __syncthreads();  // the previous section is done with g and db
    load_row(g, douts[s] + (size_t)n * H * D, H * D);
    __syncthreads();
    if (R == 0) {
      if (s < 2) rotate(g, H, D, cs, -1.f);  // the transpose of a rotation is the opposite rotation
      __syncthreads();
      for (int j = threadIdx.x; j < H * D; j += blockDim.x) drow[L.dense[s] + j] = __float2bfloat16(g[j]);
      continue;
    }
    // dA[h,r] = (1/R) Σ_d g[h,d]·B[r,d];   dB[r,d] = (1/R) Σ_h A[h,r]·g[h,d], then un-rotated.
    for (int j = threadIdx.x; j < H * R; j += blockDim.x) {
      const float *gh = g + (j / R) * D, *b = row + L.b[s] + (j % R) * D;
      float acc = 0.f;
      for (int d = 0; d < D; d++) acc += gh[d] * b[d];
      drow[L.a[s] + j] = __float2bfloat16(acc / R);
    }
    for (int j = threadIdx.x; j < R * D; j += blockDim.x) {
      const float* a = row + L.a[s] + j / D;
      float acc = 0.f;
      for (int h = 0; h < H; h++) acc += a[h * R] * g[h * D + j % D];
      db[j] = acc / R;
    }
    __syncthreads();
    if (s < 2) rotate(db, R, D, cs, -1.f);
    __syncthreads();
    for (int j = threadIdx.x; j < R * D; j += blockDim.x) drow[L.b[s] + j] = __float2bfloat16(db[j]);
  }
  (void)half;
}

}  // namespace

template <>
void qkv_forward<bf16>(const Context& ctx, bf16* q, bf16* k, bf16* v, const bf16* proj, const QkvLayout& L, int B,
                       int T) {
  const size_t shared = sizeof(float) * (L.width + L.D);
  CUDA_CHECK(cudaFuncSetAttribute(qkv_forward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared));
  qkv_forward_kernel<<<B * T, kThreads, shared, stream(ctx)>>>(dev(q), dev(k), dev(v), dev(proj), L, T);
  CUDA_CHECK_LAUNCH();
}

template <>
void qkv_backward<bf16>(const Context& ctx, bf16* dproj, const bf16* dq, const bf16* dk, const bf16* dv,
                        const bf16* proj, const QkvLayout& L, int B, int T) {
  int max_hd = 0, max_rd = 0;
  for (int s = 0; s < 3; s++) max_hd = std::max(max_hd, L.heads[s] * L.D), max_rd = std::max(max_rd, L.rank[s] * L.D);
  const size_t shared = sizeof(float) * (L.width + L.D + max_hd + max_rd);
  CUDA_CHECK(cudaFuncSetAttribute(qkv_backward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared));
  qkv_backward_kernel<<<B * T, kThreads, shared, stream(ctx)>>>(dev(dproj), dev(dq), dev(dk), dev(dv), dev(proj), L, T,
                                                              max_hd, max_rd);
  CUDA_CHECK_LAUNCH();
}

}  // namespace t6
