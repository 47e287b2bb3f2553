// q, k, v from the stacked projection, and back: memory-bound kernels, one warp per token.
// The warp stages its projection row in shared memory (fp32), rotates the rows of B_q and B_k
// there (RoPE, cos/sin from a table made once), and writes the outputs 16 bytes per lane:
// lane l owns features 8·(l % (D/8)) … + 7 of every (32 / (D/8))-th head, so a warp writes
// whole heads side by side. TPA's contraction keeps the lane's slice of the rotated B (R × 8
// values) in registers. Backward stages the gradient row in shared memory and writes it out
// whole (the row's padding becomes zeros); TPA's dA and dB are small products per token
// (16 heads × 8 ranks × up to 64 features at a time) on the tensor cores, from one pass over the gradient
// rows per block of 8 ranks (see backward_factored); the dense slices are un-rotated copies,
// each lane requesting its gradient chunks of 4 heads at a time so their latencies overlap.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/dispatch.h"
#include "kernels/cuda/mma.cuh"

namespace t6 {

using namespace cuda;

namespace {

constexpr int kMaxWarps = 8;  // tokens per block, fewer when wide rows fill the shared memory
// Blocks an SM holds at once: the register budget (80 a thread) that lets 3 blocks of 8 warps
// share an SM; with 128 registers only 2 fitted, and these kernels wait on memory with little
// else to do, so more warps in flight is what speeds them up. Ranks go in blocks of 6 in the
// forward, to stay within that budget (on sm_90 the forward spills 12 bytes, the backward 12
// at D 64 and 28 at D 128).
constexpr int kMinBlocks = 3;

// cos θ(t, i) at table[t·D + i], sin θ(t, i) at table[t·D + D/2 + i]: the angle in fp32, as the
// CPU backend (and the reference's fp32 table) forms it, then cos and sin in double. One table
// per D, kept with the context and grown when a later call needs more positions (rope_table).
__global__ void rope_table_kernel(float* table, int T, int D) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= T * (D / 2)) return;
  const int t = idx / (D / 2), i = idx % (D / 2);
  const float inv_freq = (float)(1.0 / pow(10000.0, (2.0 * i) / D));
  const float angle = (float)t * inv_freq;
  table[t * D + i] = (float)cos((double)angle);
  table[t * D + D / 2 + i] = (float)sin((double)angle);
}

// The table for positions 0 … T − 1 (at least): one per D, grown when a longer T comes, to
// twice its rows at least, so that decoding past block_size, one position a step, rarely waits
// for a new one.
const float* rope_table(const Context& ctx, int T, int D) {
  auto& [table, rows] = ctx.cuda->rope_tables[D];
  if (rows < T) {
    if (cuda::capturing(ctx)) throw std::runtime_error("the RoPE table cannot grow while a Replay records");
    const int grown = rows == 0 ? T : std::max(T, 2 * rows);
    if (table) cuda::release(ctx, table);  // (waits for the kernels still reading it)
    table = nullptr, rows = 0;
    table = cuda::alloc(ctx, sizeof(float) * grown * D);
    rows = grown;
    ctx.cuda->workspace_epoch++;
    rope_table_kernel<<<blocks_for((size_t)grown * D / 2, 256), 256, 0, stream(ctx)>>>(static_cast<float*>(table),
                                                                                        grown, D);
    CUDA_CHECK_LAUNCH();
  }
  return static_cast<const float*>(table);
}

// Tokens (warps) per block: up to kMaxWarps, as many as the shared memory takes (wide rows,
// such as T6-large MHA's 3840-column projection, fit fewer).
int warps_per_block(const Context& ctx, size_t bytes_per_warp) {
  const int warps = (int)std::min<size_t>(kMaxWarps, ctx.cuda->max_shared_per_block / bytes_per_warp);
  if (warps < 1)
    throw std::invalid_argument(fmt::format("qkv on the GPU: a token's {} bytes of staged rows do not fit in the {} "
                                            "bytes of shared memory a block may use", bytes_per_warp,
                                            ctx.cuda->max_shared_per_block));
  return warps;
}

// Stages a projection row (pitch bf16, 16-byte aligned) as floats in the warp's shared row.
__device__ inline void stage_row(float* row, const bf* src, int pitch, int lane) {
  for (int i = lane * 8; i < pitch; i += 256) {
    float f[8];
    load8(f, src + i);
    reinterpret_cast<float4*>(row + i)[0] = make_float4(f[0], f[1], f[2], f[3]);
    reinterpret_cast<float4*>(row + i)[1] = make_float4(f[4], f[5], f[6], f[7]);
  }
}

// 8 floats from or to shared memory: two 16-byte accesses where the address allows (a lane's 8
// consecutive floats, read one at a time, would collide in the banks with its neighbours').
__device__ inline void ld8(float x[8], const float* p, bool aligned) {
  if (aligned) {
    const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
    x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w, x[4] = b.x, x[5] = b.y, x[6] = b.z, x[7] = b.w;
  } else {
#pragma unroll
    for (int i = 0; i < 8; i++) x[i] = p[i];
  }
}
__device__ inline void st8(float* p, const float x[8], bool aligned) {
  if (aligned) {
    reinterpret_cast<float4*>(p)[0] = make_float4(x[0], x[1], x[2], x[3]);
    reinterpret_cast<float4*>(p)[1] = make_float4(x[4], x[5], x[6], x[7]);
  } else {
#pragma unroll
    for (int i = 0; i < 8; i++) p[i] = x[i];
  }
}

// Rotates `rows` rows of D floats at x by −θ (sign 1) or back (sign −1), the warp's lanes
// taking (row, i < D/2) pairs.
template <int D>
__device__ inline void rotate_rows(float* x, int rows, const float* cs, float sign, int lane) {
  constexpr int half = D / 2;
  for (int idx = lane; idx < rows * half; idx += 32) {
    float* v = x + (idx / half) * D;
    const int i = idx % half;
    const float c = cs[i], s = sign * cs[half + i], x1 = v[i], x2 = v[i + half];
    v[i] = x1 * c + x2 * s;
    v[i + half] = -x1 * s + x2 * c;
  }
}

// TPA's contraction for one section, with kR ≥ R (or 6, taking larger ranks in blocks of 6) so
// the loops over a block of the rank unroll completely. T6's q rank 6 is one block: its B rows
// stay in registers instead of two of them being re-read from shared memory for every head.
template <int D, int S, int kR>
__device__ inline void forward_factored(bf* out, const float* row, const QkvLayout& L, int lane) {
  constexpr int C8 = D / 8, HG = 32 / C8;
  const int c = lane % C8, hg = lane / C8, H = L.heads[S], R = L.rank[S];
  float b[kR][8];  // this lane's 8 features of each rotated B row (ranks past kR: re-read per head)
#pragma unroll
  for (int r = 0; r < kR; r++)
    if (r < R)
      ld8(b[r], row + L.b[S] + r * D + 8 * c, L.b[S] % 4 == 0);
    else
#pragma unroll
      for (int i = 0; i < 8; i++) b[r][i] = 0.f;
  const float inv = 1.f / R;
  for (int h = hg; h < H; h += HG) {
    const float* a = row + L.a[S] + h * R;
    float o[8] = {};
    for (int r0 = 0; r0 < R; r0 += kR) {
#pragma unroll
      for (int r = 0; r < kR; r++) {
        const float ar = r0 + r < R ? a[r0 + r] : 0.f;
        if (r0 == 0) {
#pragma unroll
          for (int i = 0; i < 8; i++) o[i] += ar * b[r][i];
        } else if (r0 + r < R) {  // ranks past the first block: B's row from shared memory
          float br[8];
          ld8(br, row + L.b[S] + (r0 + r) * D + 8 * c, L.b[S] % 4 == 0);
#pragma unroll
          for (int i = 0; i < 8; i++) o[i] += ar * br[i];
        }
      }
    }
#pragma unroll
    for (int i = 0; i < 8; i++) o[i] *= inv;
    store8(out + h * D, o);
  }
}

// One section (S: 0 q, 1 k, 2 v) of a token's outputs; row holds its projection, B rotated.
template <int D, int S>
__device__ inline void forward_section(bf* out, const float* row, const float* cs, const QkvLayout& L, int lane) {
  constexpr int C8 = D / 8, HG = 32 / C8, half = D / 2;
  const int c = lane % C8, hg = lane / C8, H = L.heads[S], R = L.rank[S];
  out += 8 * c;
  if (R == 0) {
    const bool aligned = L.dense[S] % 4 == 0;
    for (int h = hg; h < H; h += HG) {
      const float* x = row + L.dense[S] + h * D;
      float o[8], other[8];  // this lane's features f = 8c + i, and f ± D/2
      ld8(o, x + 8 * c, aligned);
      if constexpr (S < 2) {  // RoPE on the dense q and k heads
        ld8(other, x + (8 * c + half) % D, aligned);
#pragma unroll
        for (int i = 0; i < 8; i++) {
          const int f = 8 * c + i, j = f % half;
          o[i] = f < half ? o[i] * cs[j] + other[i] * cs[half + j] : -other[i] * cs[half + j] + o[i] * cs[j];
        }
      }
      store8(out + h * D, o);
    }
    return;
  }
  if (R <= 1) forward_factored<D, S, 1>(out, row, L, lane);
  else if (R <= 2) forward_factored<D, S, 2>(out, row, L, lane);
  else if (R <= 4) forward_factored<D, S, 4>(out, row, L, lane);
  else forward_factored<D, S, 6>(out, row, L, lane);
}

template <int D>
__global__ void __launch_bounds__(32 * kMaxWarps, kMinBlocks) qkv_forward_kernel(bf* q, bf* k, bf* v, const bf* proj,
                                                                  const float* table, QkvLayout L, int N, int T,
                                                                  int t0, const int* at) {
  extern __shared__ float sh[];
  const int lane = threadIdx.x % 32, n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (n >= N) return;
  if (at) t0 = *at;
  float* row = sh + (threadIdx.x / 32) * L.pitch;
  const float* cs = table + (t0 + n % T) * D;
  stage_row(row, proj + (size_t)n * L.pitch, L.pitch, lane);
  __syncwarp();
  if (L.rank[0]) rotate_rows<D>(row + L.b[0], L.rank[0], cs, 1.f, lane);
  if (L.rank[1]) rotate_rows<D>(row + L.b[1], L.rank[1], cs, 1.f, lane);
  __syncwarp();
  forward_section<D, 0>(q + (size_t)n * L.heads[0] * D, row, cs, L, lane);
  forward_section<D, 1>(k + (size_t)n * L.heads[1] * D, row, cs, L, lane);
  forward_section<D, 2>(v + (size_t)n * L.heads[2] * D, row, cs, L, lane);
}

// The transpose of a rotation is the opposite rotation: the gradient of feature f of a rotated
// row from y (its own) and other (feature f ± D/2). The v section is not rotated.
template <int D, int S>
__device__ inline float unrotate(float y, float other, int f, const float* cs) {
  constexpr int half = D / 2;
  const int j = f % half;
  if constexpr (S == 2) return y;
  return f < half ? y * cs[j] - other * cs[half + j] : other * cs[half + j] + y * cs[j];
}

// This lane's 8 features of the gradient rows of kBatch heads (h0 + u·HG + its group, zeros past
// H), all requested before the first is used: the loads' latencies overlap instead of adding up.
constexpr int kBatch = 4;
template <int D>
__device__ inline void load_heads(float (&x)[kBatch][8], const bf* g, int h0, int H, int lane) {
  constexpr int C8 = D / 8, HG = 32 / C8;
  uint4 raw[kBatch];
#pragma unroll
  for (int u = 0; u < kBatch; u++) {
    const int h = h0 + u * HG + lane / C8;
    raw[u] = h < H ? *reinterpret_cast<const uint4*>(g + h * D + 8 * (lane % C8)) : make_uint4(0, 0, 0, 0);
  }
#pragma unroll
  for (int u = 0; u < kBatch; u++) {
    const __nv_bfloat162* p = reinterpret_cast<const __nv_bfloat162*>(&raw[u]);
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const float2 f = __bfloat1622float2(p[i]);
      x[u][2 * i] = f.x, x[u][2 * i + 1] = f.y;
    }
  }
}

// The 8 × 8 bf16 matrix a warp holds one register a lane of (lane 4i + j: row i, columns 2j and
// 2j + 1), transposed, in the same layout.
__device__ inline uint32_t transpose8x8(uint32_t x) {
  uint32_t y;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
  return y;
}

// x0 and x1 as bf16 pairs hi (rounded) and lo (the remainder, rounded): hi + lo carries them to
// about 16 bits, so products with them lose little against fp32.
__device__ inline void split_bf16(float x0, float x1, uint32_t& hi, uint32_t& lo) {
  hi = pack(x0, x1);
  lo = pack(x0 - __uint_as_float(hi << 16), x1 - __uint_as_float(hi & 0xffff0000u));
}

// TPA's gradients for one section on the tensor cores (mma.sync, bf16 in, fp32 sums), per
// block of 8 ranks and 16 heads:
//   dA (16 heads × 8 ranks) = (1/R) G (16 × D) · Bᵀ, with the rotated B as bf16 hi + lo;
//   dBᵀ (D × 8 ranks) += (1/R) Gᵀ (D × 16 heads) · A, A and G being bf16 already (exact).
// Lane (gid, tig) loads 16 bytes, features 8·tig … + 7 of each 32, of gradient rows gid and
// gid + 8, and the fragments take them as they come: dA's sums over features do not mind their
// order as long as B's fragments follow it, and for dBᵀ movmatrix transposes each 8 heads × 8
// features block, so that a product's rows are the features of two such blocks, in the order
// the lanes loaded them (see the end for which lane ends with which). The features D/2 apart,
// which un-rotating pairs, land in the same lane (D ≥ 64) or in lane ^ 16 (D 32). At D 128 the
// feature groups go in two passes (groups g and g + 2), so that dB's sums fit in the
// registers; dA's parts are added into drow, which starts at zero.
template <int D, int S>
__device__ inline void backward_factored(float* drow, const bf* g, const float* row, const float* cs,
                                         const QkvLayout& L, int lane) {
  constexpr int kGroups = D / 32, kPerPass = kGroups == 1 ? 1 : 2, kPasses = kGroups / kPerPass;
  const int gid = lane / 4, tig = lane % 4, H = L.heads[S], R = L.rank[S];
  const float inv = 1.f / R;
  const float* A = row + L.a[S];
  const bool b_aligned = L.b[S] % 4 == 0;
  for (int r0 = 0; r0 < R; r0 += 8) {
    const int rank = r0 + gid;  // this lane's rank: dA's B column, dB's row
    for (int p = 0; p < kPasses; p++) {
      float dbt[kPerPass][2][4] = {};  // dBᵀ, per group: features of words 0, 1 and of words 2, 3
      // dA's B fragments: this lane's rank at its features of the pass's groups, hi and lo,
      // made once for all the head blocks (the loads may be unaligned and collide in the banks).
      uint32_t bh[kPerPass][4] = {}, bl[kPerPass][4] = {};
      if (rank < R)
#pragma unroll
        for (int q = 0; q < kPerPass; q++) {
          float b[8];
          ld8(b, row + L.b[S] + rank * D + 32 * (p + q * (kGroups / 2)) + 8 * tig, b_aligned);
#pragma unroll
          for (int w = 0; w < 4; w++) split_bf16(b[2 * w], b[2 * w + 1], bh[q][w], bl[q][w]);
        }
      for (int h0 = 0; h0 < H; h0 += 16) {
        // dBᵀ's B fragment: A at heads h0 + 2·tig (+ 1) and + 8, this lane's rank.
        auto a_at = [&](int h) { return h < H && rank < R ? A[h * R + rank] : 0.f; };
        const int hk = h0 + 2 * tig;
        const uint32_t a_lo = pack(a_at(hk), a_at(hk + 1)), a_hi = pack(a_at(hk + 8), a_at(hk + 9));
        float da[4] = {};
#pragma unroll
        for (int q = 0; q < kPerPass; q++) {
          const int f0 = 32 * (p + q * (kGroups / 2)) + 8 * tig;
          const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
          const uint4 x0 = h0 + gid < H ? *reinterpret_cast<const uint4*>(g + (h0 + gid) * D + f0) : zero;
          const uint4 x1 = h0 + 8 + gid < H ? *reinterpret_cast<const uint4*>(g + (h0 + 8 + gid) * D + f0) : zero;
          const uint32_t g0[4] = {x0.x, x1.x, x0.y, x1.y}, g1[4] = {x0.z, x1.z, x0.w, x1.w};
          mma(da, g0, bh[q][0], bh[q][1]);
          mma(da, g0, bl[q][0], bl[q][1]);
          mma(da, g1, bh[q][2], bh[q][3]);
          mma(da, g1, bl[q][2], bl[q][3]);
          // Gᵀ's fragments: each 8 × 8 block (8 heads × the 8 features of word w) transposed.
          const uint32_t t0[4] = {transpose8x8(x0.x), transpose8x8(x0.y), transpose8x8(x0.z), transpose8x8(x0.w)};
          const uint32_t t1[4] = {transpose8x8(x1.x), transpose8x8(x1.y), transpose8x8(x1.z), transpose8x8(x1.w)};
#pragma unroll
          for (int m = 0; m < 2; m++) {
            const uint32_t gt[4] = {t0[2 * m], t0[2 * m + 1], t1[2 * m], t1[2 * m + 1]};
            mma(dbt[q][m], gt, a_lo, a_hi);
          }
        }
        // dA: heads h0 + gid (and + 8), ranks r0 + 2·tig (and + 1)
#pragma unroll
        for (int e = 0; e < 2; e++) {
          const int r = r0 + 2 * tig + e;
          if (r >= R) continue;
          if (h0 + gid < H) drow[L.a[S] + (h0 + gid) * R + r] += da[e] * inv;
          if (h0 + 8 + gid < H) drow[L.a[S] + (h0 + 8 + gid) * R + r] += da[2 + e] * inv;
        }
      }
      // dB, un-rotated: dbt[q][m][c] is rank r0 + 2·tig + c % 2 at feature
      // 32·group + 8·(gid / 2) + 2·(2m + c / 2) + gid % 2.
#pragma unroll
      for (int q = 0; q < kPerPass; q++)
#pragma unroll
        for (int m = 0; m < 2; m++)
#pragma unroll
          for (int c = 0; c < 4; c++) {
            const float t = dbt[q][m][c] * inv;
            float other;  // the feature D/2 away
            if constexpr (kPerPass == 2)
              other = dbt[q ^ 1][m][c] * inv;
            else
              other = __shfl_xor_sync(0xffffffffu, t, 16);  // D 32: lane gid ^ 4 holds it
            const int f = 32 * (p + q * (kGroups / 2)) + 8 * (gid / 2) + 2 * (2 * m + c / 2) + gid % 2;
            const int r = r0 + 2 * tig + c % 2;
            const float y = unrotate<D, S>(t, other, f, cs);
            if (r < R) drow[L.b[S] + r * D + f] = y;
          }
    }
  }
}

// The gradient of one section into drow (the token's gradient row in shared memory).
template <int D, int S>
__device__ inline void backward_section(float* drow, const bf* g, const float* row, const float* cs,
                                        const QkvLayout& L, int lane) {
  constexpr int C8 = D / 8, HG = 32 / C8;
  const int c = lane % C8, hg = lane / C8, H = L.heads[S], R = L.rank[S];
  if (R == 0) {  // a slice; every lane walks the same number of heads, so all take part in the shuffles
    const bool aligned = L.dense[S] % 4 == 0;
    for (int h1 = 0; h1 < H; h1 += kBatch * HG) {
      float xs[kBatch][8];
      load_heads<D>(xs, g, h1, H, lane);
#pragma unroll
      for (int u = 0; u < kBatch; u++) {
        const int h0 = h1 + u * HG, h = h0 + hg;
        if (h0 >= H) break;  // the same on every lane: all of them take part in the shuffles
        float y[8];
#pragma unroll
        for (int i = 0; i < 8; i++) {
          const float other = __shfl_xor_sync(0xffffffffu, xs[u][i], C8 / 2);
          y[i] = unrotate<D, S>(xs[u][i], other, 8 * c + i, cs);
        }
        if (h < H) st8(drow + L.dense[S] + h * D + 8 * c, y, aligned);
      }
    }
    return;
  }
  backward_factored<D, S>(drow, g, row, cs, L, lane);
}

template <int D>
__global__ void __launch_bounds__(32 * kMaxWarps, kMinBlocks) qkv_backward_kernel(bf* dproj, const bf* dq, const bf* dk,
                                                                   const bf* dv, const bf* proj, const float* table,
                                                                   QkvLayout L, int N, int T) {
  extern __shared__ float sh[];
  const int lane = threadIdx.x % 32, n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (n >= N) return;
  float* row = sh + (threadIdx.x / 32) * 2 * L.pitch;
  float* drow = row + L.pitch;  // the gradient row, written out whole at the end
  const float* cs = table + (n % T) * D;
  if (L.rank[0] || L.rank[1] || L.rank[2]) stage_row(row, proj + (size_t)n * L.pitch, L.pitch, lane);
  for (int i = lane * 4; i < L.pitch; i += 128) *reinterpret_cast<float4*>(drow + i) = make_float4(0.f, 0.f, 0.f, 0.f);
  __syncwarp();
  if (L.rank[0]) rotate_rows<D>(row + L.b[0], L.rank[0], cs, 1.f, lane);
  if (L.rank[1]) rotate_rows<D>(row + L.b[1], L.rank[1], cs, 1.f, lane);
  __syncwarp();
  backward_section<D, 0>(drow, dq + (size_t)n * L.heads[0] * D, row, cs, L, lane);
  backward_section<D, 1>(drow, dk + (size_t)n * L.heads[1] * D, row, cs, L, lane);
  backward_section<D, 2>(drow, dv + (size_t)n * L.heads[2] * D, row, cs, L, lane);
  __syncwarp();
  bf* dst = dproj + (size_t)n * L.pitch;
  for (int i = lane * 8; i < L.pitch; i += 256) {
    float y[8];
    ld8(y, drow + i, true);
    store8(dst + i, y);
  }
}

// The table's rows for positions t0 … t0 + T − 1, and with `at` for the rest of t0's block of
// kDecodePositionsPerLaunch positions, which a recorded decode step reads at later positions.
const float* rope_rows(const Context& ctx, int t0, int T, const int* at, int D) {
  constexpr int block = kDecodePositionsPerLaunch;
  return rope_table(ctx, at ? (t0 / block + 1) * block + T : t0 + T, D);
}

template <int D>
void forward(const Context& ctx, bf16* q, bf16* k, bf16* v, const bf16* proj, const QkvLayout& L, int B, int T,
             int t0, const int* at) {
  const float* table = rope_rows(ctx, t0, T, at, D);
  const int N = B * T;
  const int warps = warps_per_block(ctx, sizeof(float) * L.pitch);
  const size_t shared = sizeof(float) * L.pitch * warps;
  auto kernel = qkv_forward_kernel<D>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared));
  kernel<<<(N + warps - 1) / warps, 32 * warps, shared, stream(ctx)>>>(dev(q), dev(k), dev(v), dev(proj), table,
                                                                          L, N, T, t0, at);
  CUDA_CHECK_LAUNCH();
}

template <int D>
void backward(const Context& ctx, bf16* dproj, const bf16* dq, const bf16* dk, const bf16* dv, const bf16* proj,
              const QkvLayout& L, int B, int T) {
  const float* table = rope_table(ctx, T, D);
  const int N = B * T;
  const int warps = warps_per_block(ctx, sizeof(float) * 2 * L.pitch);
  const size_t shared = sizeof(float) * 2 * L.pitch * warps;
  auto kernel = qkv_backward_kernel<D>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared));
  kernel<<<(N + warps - 1) / warps, 32 * warps, shared, stream(ctx)>>>(dev(dproj), dev(dq), dev(dk), dev(dv),
                                                                          dev(proj), table, L, N, T);
  CUDA_CHECK_LAUNCH();
}

// Generation's cache records (kernels/ops.h) from B·T projection rows, a block per row: A
// copied and zero-padded, B (or the dense slice) copied, the k side rotated at its position as
// qkv_forward rotates it.
template <int D>
__global__ void kv_cache_store_kernel(bf* k_cache, bf* v_cache, const bf* proj, const float* table, QkvLayout L,
                                      int T, int t0, const int* at, int context, int k_record, int v_record, int k_b,
                                      int v_b) {
  constexpr int half = D / 2;
  const int n = blockIdx.x, pos = (at ? *at : t0) + n % T;
  const bf* row = proj + (size_t)n * L.pitch;
  const float* cs = table + (size_t)pos * D;
  for (int side = 1; side < 3; side++) {
    const int H = L.heads[side], R = L.rank[side], width = side == 1 ? k_record : v_record;
    bf* rec = (side == 1 ? k_cache : v_cache) + ((size_t)(n / T) * context + pos) * width;
    const int b0 = R ? (side == 1 ? k_b : v_b) : 0, from = R ? L.b[side] : L.dense[side];
    for (int j = threadIdx.x; j < b0; j += blockDim.x)
      rec[j] = j < H * R ? row[L.a[side] + j] : __float2bfloat16(0.f);
    for (int j = threadIdx.x; j < width - b0; j += blockDim.x) {
      const float x = __bfloat162float(row[from + j]);
      if (side == 2) {
        rec[b0 + j] = row[from + j];
        continue;
      }
      const int f = j % D, i = f % half;
      const float other = __bfloat162float(row[from + j - f + (f + half) % D]);
      rec[b0 + j] = __float2bfloat16(f < half ? x * cs[i] + other * cs[half + i] : -other * cs[half + i] + x * cs[i]);
    }
  }
}

template <int D>
void store(const Context& ctx, bf16* k_cache, bf16* v_cache, const bf16* proj, const QkvLayout& L, int B, int T,
           int t0, int context, const int* at) {
  const float* table = rope_rows(ctx, t0, T, at, D);
  kv_cache_store_kernel<D><<<B * T, 128, 0, stream(ctx)>>>(dev(k_cache), dev(v_cache), dev(proj), table, L, T, t0, at,
                                                           context, kv_record(L, 1), kv_record(L, 2),
                                                           kv_b_offset(L, 1), kv_b_offset(L, 2));
  CUDA_CHECK_LAUNCH();
}

// The kernels read whole rows 16 bytes at a time: the pitch must keep rows 16-byte aligned.
void check_pitch(const QkvLayout& L) {
  if (L.pitch % 8 || L.pitch < L.width)
    throw std::invalid_argument(fmt::format("qkv on the GPU needs a row pitch that is a multiple of 8 and at least "
                                            "the row's {} columns, got {}", L.width, L.pitch));
}

[[noreturn]] void unsupported(int D) {
  throw std::invalid_argument(fmt::format("model.head_dim: the CUDA qkv op supports 32, 64 and 128, got {}", D));
}

}  // namespace

template <>
void cuda::qkv_forward<bf16>(const Context& ctx, bf16* q, bf16* k, bf16* v, const bf16* proj, const QkvLayout& L, int B,
                       int T, int t0, const int* at) {
  T6_TIMED(ctx, "qkv forward");
  check_pitch(L);
  switch (L.D) {
    case 32: return forward<32>(ctx, q, k, v, proj, L, B, T, t0, at);
    case 64: return forward<64>(ctx, q, k, v, proj, L, B, T, t0, at);
    case 128: return forward<128>(ctx, q, k, v, proj, L, B, T, t0, at);
    default: unsupported(L.D);
  }
}

template <>
void cuda::qkv_backward<bf16>(const Context& ctx, bf16* dproj, const bf16* dq, const bf16* dk, const bf16* dv,
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

template <>
void cuda::kv_cache_store<bf16>(const Context& ctx, bf16* k_cache, bf16* v_cache, const bf16* proj, const QkvLayout& L,
                          int B, int T, int t0, int context, const int* at) {
  T6_TIMED(ctx, "kv cache store");
  check_pitch(L);
  if (B * T == 0) return;
  switch (L.D) {
    case 32: return store<32>(ctx, k_cache, v_cache, proj, L, B, T, t0, context, at);
    case 64: return store<64>(ctx, k_cache, v_cache, proj, L, B, T, t0, context, at);
    case 128: return store<128>(ctx, k_cache, v_cache, proj, L, B, T, t0, context, at);
    default: unsupported(L.D);
  }
}

}  // namespace t6
