// Causal attention for Hopper (sm_90a): the same function as attention.cu's mma.sync kernels,
// built from the chip's own parts. One warpgroup produces (a single thread issues TMA copies
// into a ring of shared-memory stages guarded by mbarriers), two consume (wgmma from shared
// memory, fp32 accumulators in registers, softmax in registers), and register reallocation
// moves the producer's registers to the consumers.
//
// Forward: persistent blocks, one per SM, each taking a share of the (query tile, head) items
// (a head's tiles in a row, longest first), so the next item's loads overlap this one's end
// (at T = 1024 an item is a few microseconds, about what a fresh block's start-up costs). An item is 128 query rows of
// one head (64 per consumer warpgroup); it walks the key tiles of 128 from the diagonal (the
// only masked one) down to 0. Each iteration issues
// S = Q·Kᵀ for this tile and O += P·V for the previous one, then computes this tile's softmax
// while the tensor cores work; the two consumers take turns issuing (named barriers), so one's
// softmax overlaps the other's products.
//
// Backward: persistent blocks, one per SM, each claiming items from a counter as it goes
// (BwdItem). An item is 128 keys of one KV head (64 per consumer); the block keeps its K and V
// in shared memory and walks the 64-query tiles at or after them for every query head of its group:
// Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ, Pᵀ and dSᵀ in registers, dV += Pᵀ·dO and dK += dSᵀ·Q (A from
// registers), and dQ = dS·K from dSᵀ staged in shared memory. dQ tiles are added into an
// fp32 buffer by bulk reductions (one 64×D tile per step, not per-element atomics), issued by
// writer threads, one per staging buffer; in the deterministic mode each (head, query tile)
// takes its key tiles' additions in a fixed order.
#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

#include "kernels/cuda/attention_sm90.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/dispatch.h"
#include "kernels/cuda/hopper.cuh"

namespace t6::cuda {

using namespace sm90;

namespace {

constexpr int kConsumers = 2, kThreads = 128 * (kConsumers + 1);
constexpr int kRowBytes = 128;  // one swizzled row: 64 bf16 features

// Accumulator fragments (64 × 16k) as the A operands (64 × 16 each) of a following product.
template <int K16>
__device__ inline void to_a(uint32_t (&a)[K16][4], const float (&c)[K16 * 8]) {
#pragma unroll
  for (int k = 0; k < K16; k++) {
    a[k][0] = pack(c[8 * k + 0], c[8 * k + 1]);
    a[k][1] = pack(c[8 * k + 2], c[8 * k + 3]);
    a[k][2] = pack(c[8 * k + 4], c[8 * k + 5]);
    a[k][3] = pack(c[8 * k + 6], c[8 * k + 7]);
  }
}

// A descriptor's offset to k-step kk (16 features) of K-major operands (features contiguous,
// 128-byte swizzled rows of 64): 32 bytes along the rows, every 4 k-steps the next 64-feature
// block of `rows` rows (in 16-byte units, as descriptors count).
__device__ constexpr uint64_t kmajor(int kk, int rows) {
  return (uint64_t)(((kk / 4) * rows * kRowBytes + (kk % 4) * 32) >> 4);
}

// acc = A·Bᵀ over D features, A (64 × D, rows_a rows a feature block) and B (N × D) both
// K-major: D/16 k-steps, the first overwriting acc.
template <int N, int D, int rows_a>
__device__ inline void product_kmajor(float (&acc)[N / 2], uint64_t a, uint64_t b) {
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++)
    if (kk == 0)
      Wgmma<N, 0, 0>::ss0(acc, a, b);
    else
      Wgmma<N, 0, 0>::ss(acc, a + kmajor(kk, rows_a), b + kmajor(kk, N), true);
}

__device__ inline unsigned char* align1024(unsigned char* p) {
  return reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(p) + 1023) & ~uintptr_t(1023));
}

// ================================ forward ================================

constexpr int kFwdM = 64 * kConsumers, kFwdN = 128;

template <int D>
struct FwdSmem {
  static constexpr int q_bytes = kFwdM * D * 2, kv_bytes = kFwdN * D * 2;
  static constexpr int q = 0, k = 2 * q_bytes, v = k + 2 * kv_bytes, bars = v + 2 * kv_bytes;
  static constexpr int total = bars + 12 * 8 + 1024;  // + room to align the base to 1024
};

// The forward's work items: heads in groups of one per block (`grid`), and within a group the
// longest rows first: item w of group g is query tile mtiles − 1 − q / heads of (sequence, head)
// g·grid + q % heads, q = w − g·grid·mtiles. Blocks stride through them (block i: items i,
// i + grid, …), so in a whole group block i takes all the query tiles of one head, longest
// first (each block the same work), reading that head's keys and values again from L2 rather
// than from memory (in one wave of all heads' tiles they were read anew for every tile: the
// forward then moved 3× its inputs and outputs). The last group, of fewer heads, is shared out
// longest first.
struct FwdItem {
  int b, h, mtile, ntiles;  // ntiles: key tiles up to the diagonal
  __device__ FwdItem(int w, int B_H, int mtiles, int H, int grid) {
    const int group = w / (grid * mtiles), heads = min(grid, B_H - group * grid), q = w - group * grid * mtiles;
    const int bh = group * grid + q % heads;
    mtile = mtiles - 1 - q / heads;
    b = bh / H, h = bh % H;
    ntiles = (mtile * kFwdM + kFwdM - 1) / kFwdN + 1;
  }
};

template <int D>
__global__ void __launch_bounds__(kThreads, 1)
    forward_kernel(const __grid_constant__ CUtensorMap tq, const __grid_constant__ CUtensorMap tk,
                   const __grid_constant__ CUtensorMap tv, bf* out, float* lse, int B, int T, int H, int Hkv,
                   float scale_log2) {
  using L = FwdSmem<D>;
  constexpr int kSub = D / 64;  // 64-feature column blocks of a tile, each rows × 128 bytes
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = align1024(smem_raw);
  const uint32_t sq = smem_addr(smem + L::q), sk = smem_addr(smem + L::k), sv = smem_addr(smem + L::v);
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem + L::bars);
  uint64_t *q_full = bars, *q_empty = bars + 2, *k_full = bars + 4, *k_empty = bars + 6, *v_full = bars + 8,
           *v_empty = bars + 10;

  const int B_H = B * H, mtiles = (T + kFwdM - 1) / kFwdM, items = B_H * mtiles;
  const int wg = threadIdx.x / 128;
  if (threadIdx.x == 0) {
    for (int s = 0; s < 2; s++) {
      mbar_init(q_full + s, 1), mbar_init(k_full + s, 1), mbar_init(v_full + s, 1);
      mbar_init(q_empty + s, 128 * kConsumers);
      mbar_init(k_empty + s, 128 * kConsumers), mbar_init(v_empty + s, 128 * kConsumers);
    }
    mbar_init_fence();
  }
  __syncthreads();

  // Q has two stages (item j in j % 2), so the next item's Q arrives during this one; K and V
  // one ring of two stages over all the block's tiles (tile g in g % 2).
  if (wg == 0) {  // producer
    regs_dealloc<24>();
    if (threadIdx.x == 0) {
      int g = 0;
      for (int w = blockIdx.x, j = 0; w < items; w += gridDim.x, j++) {
        const FwdItem it(w, B_H, mtiles, H, gridDim.x);
        const int kvh = it.h / (H / Hkv), qs = j & 1;
        if (j >= 2) mbar_wait(q_empty + qs, ((j >> 1) & 1) ^ 1);
        mbar_arrive_expect(q_full + qs, L::q_bytes);
        for (int c = 0; c < kSub; c++)
          tma_load_4d(smem + L::q + qs * L::q_bytes + c * kFwdM * kRowBytes, &tq, q_full + qs, c * 64, it.h,
                      it.mtile * kFwdM, it.b);
        for (int i = 0; i < it.ntiles; i++, g++) {
          const int n = it.ntiles - 1 - i, s = g & 1, phase = (g >> 1) & 1;
          if (g >= 2) mbar_wait(k_empty + s, phase ^ 1);
          mbar_arrive_expect(k_full + s, L::kv_bytes);
          for (int c = 0; c < kSub; c++)
            tma_load_4d(smem + L::k + s * L::kv_bytes + c * kFwdN * kRowBytes, &tk, k_full + s, c * 64, kvh, n * kFwdN,
                        it.b);
          if (g >= 2) mbar_wait(v_empty + s, phase ^ 1);
          mbar_arrive_expect(v_full + s, L::kv_bytes);
          for (int c = 0; c < kSub; c++)
            tma_load_4d(smem + L::v + s * L::kv_bytes + c * kFwdN * kRowBytes, &tv, v_full + s, c * 64, kvh, n * kFwdN,
                        it.b);
        }
      }
    }
    return;
  }

  regs_alloc<240>();
  const int cw = wg - 1, tid = threadIdx.x % 128, warp = tid / 32, lane = tid % 32, gid = lane / 4, tig = lane % 4;
  const int row_in_tile = cw * 64 + warp * 16 + gid;  // and + 8
  // Descriptors: a base per operand and stage, plus compile-time offsets per k-step (a
  // descriptor holds the address in 16-byte units in its low bits). S = Q·Kᵀ: both K-major; a
  // k-step of 16 features is 32 bytes along the swizzled rows, every 4 the next 64-feature block.
  const uint64_t q_d[2] = {desc_sw128(sq + cw * 64 * kRowBytes), desc_sw128(sq + L::q_bytes + cw * 64 * kRowBytes)};
  const uint64_t k_d[2] = {desc_sw128(sk), desc_sw128(sk + L::kv_bytes)};
  // O += P·V: V is MN-major (features contiguous); a k-step is 16 keys = 16 rows.
  const uint64_t v_d[2] = {desc_sw128(sv, kFwdN * kRowBytes), desc_sw128(sv + L::kv_bytes, kFwdN * kRowBytes)};
  auto issue_s = [&](float (&acc)[kFwdN / 2], uint64_t qd, int s) {
    product_kmajor<kFwdN, D, kFwdM>(acc, qd, s ? k_d[1] : k_d[0]);
  };
  // first: the item's first product, which overwrites O instead of adding to it.
  auto issue_o = [&](float (&acc)[D / 2], const uint32_t (&p)[kFwdN / 16][4], int s, bool first) {
    const uint64_t vd = s ? v_d[1] : v_d[0];
#pragma unroll
    for (int kk = 0; kk < kFwdN / 16; kk++)
      Wgmma<D, 0, 1>::rs(acc, p[kk], vd + (uint64_t)(kk * 16 * kRowBytes >> 4), kk > 0 || !first);
  };
  // Turns: consumer c waits on barrier 1 + c before issuing, then lets the other one go. Both
  // take the same number of turns per item, so the alternation carries over from item to item.
  auto my_turn = [&] { named_sync(1 + cw, 256); };
  auto your_turn = [&] { named_arrive(1 + (cw ^ 1), 256); };
  if (cw == 1) named_arrive(1, 256);  // consumer 0 goes first

  float s_acc[kFwdN / 2], o[D / 2];
  uint32_t p[kFwdN / 16][4];
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

  // Raw scores in s_acc; out: the probabilities (relative to the new running max) as bf16 A
  // operands, and the correction of the earlier sums. Scores stay unscaled (and so does m);
  // the scale is in the exponent. s_acc is only read: a product may still be writing nearby.
  auto softmax = [&](uint32_t (&pr)[kFwdN / 16][4], float (&corr)[2]) {
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int j = 0; j < kFwdN / 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) mx[e / 2] = fmaxf(mx[e / 2], s_acc[4 * j + e]);
    float shift[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
      corr[i] = exp2f((m[i] - mx[i]) * scale_log2);  // the diagonal tile comes first: mx is finite
      m[i] = mx[i];
      shift[i] = mx[i] * scale_log2;
      l[i] *= corr[i];
    }
#pragma unroll
    for (int j = 0; j < kFwdN / 8; j++) {
      float x[4];
#pragma unroll
      for (int e = 0; e < 4; e++) {
        x[e] = exp2f(fmaf(s_acc[4 * j + e], scale_log2, -shift[e / 2]));
        l[e / 2] += x[e];
      }
      pr[j / 2][(j % 2) * 2] = pack(x[0], x[1]);  // A fragment: rows gid | gid + 8, keys 16k + … (+ 8)
      pr[j / 2][(j % 2) * 2 + 1] = pack(x[2], x[3]);
    }
  };

  int g = 0;  // the block's key/value tile count, as the producer's
  for (int w = blockIdx.x, j = 0; w < items; w += gridDim.x, j++) {
    const FwdItem it(w, B_H, mtiles, H, gridDim.x);
    const int qs = j & 1, last = it.ntiles - 1;
    const uint64_t qd = qs ? q_d[1] : q_d[0];
    m[0] = m[1] = -INFINITY, l[0] = l[1] = 0.f;
    mbar_wait(q_full + qs, (j >> 1) & 1);
    // Iteration 0: the diagonal tile (the last key tile), masked.
    {
      const int s = g & 1;
      mbar_wait(k_full + s, (g >> 1) & 1);
      my_turn();
      wgmma_fence();
      issue_s(s_acc, qd, s);
      wgmma_commit();
      your_turn();
      wgmma_wait<0>();
      fence_regs(s_acc);
      mbar_arrive(k_empty + s);
      const int key0 = last * kFwdN - it.mtile * kFwdM;  // first key's offset from the tile's first row
#pragma unroll
      for (int jj = 0; jj < kFwdN / 8; jj++)
#pragma unroll
        for (int e = 0; e < 4; e++)
          if (key0 + 8 * jj + 2 * tig + (e & 1) > row_in_tile + 8 * (e / 2)) s_acc[4 * jj + e] = -INFINITY;
      float corr[2];
      softmax(p, corr);
    }
    for (int i = 1; i <= last; i++) {
      const int gi = g + i, s = gi & 1, phase = (gi >> 1) & 1, ps = s ^ 1, pphase = ((gi - 1) >> 1) & 1;
      mbar_wait(k_full + s, phase);
      mbar_wait(v_full + ps, pphase);
      my_turn();
      fence_regs(p);
      fence_regs(o);
      wgmma_fence();
      issue_s(s_acc, qd, s);
      wgmma_commit();
      issue_o(o, p, ps, i == 1);
      wgmma_commit();
      your_turn();
      wgmma_wait<1>();  // S is ready; P·V still runs
      fence_regs(s_acc);
      mbar_arrive(k_empty + s);
      float corr[2];
      uint32_t pn[kFwdN / 16][4];
      softmax(pn, corr);
      wgmma_wait<0>();
      fence_regs(o);
      fence_regs(p);  // p stays live (and its registers untouched) until the product has read it
      mbar_arrive(v_empty + ps);
#pragma unroll
      for (int jj = 0; jj < D / 8; jj++)
#pragma unroll
        for (int e = 0; e < 4; e++) o[4 * jj + e] *= corr[e / 2];
#pragma unroll
      for (int k = 0; k < kFwdN / 16; k++)
#pragma unroll
        for (int r = 0; r < 4; r++) p[k][r] = pn[k][r];
    }
    // Q's last product has read it. (Not inside the loop: a branch between a product's issue
    // and its wait makes ptxas serialize the products.)
    mbar_arrive(q_empty + qs);
    {
      const int gl = g + last, ls = gl & 1;
      mbar_wait(v_full + ls, (gl >> 1) & 1);
      my_turn();
      fence_regs(p);
      fence_regs(o);
      wgmma_fence();
      issue_o(o, p, ls, last == 0);
      wgmma_commit();
      // Consumer 1's last turn of the block: no one waits for its signal.
      if (cw == 0 || w + gridDim.x < items) your_turn();
      wgmma_wait<0>();
      fence_regs(o);
      mbar_arrive(v_empty + ls);
    }
    g += it.ntiles;
#pragma unroll
    for (int i = 0; i < 2; i++) {
      l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
      l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
    }
    const size_t qstride = (size_t)H * D;
#pragma unroll
    for (int i = 0; i < 2; i++) {
      const int row = it.mtile * kFwdM + row_in_tile + 8 * i;
      if (row >= T) continue;
      const float inv = 1.f / l[i];
      bf* orow = out + ((size_t)it.b * T + row) * qstride + (size_t)it.h * D;
#pragma unroll
      for (int jj = 0; jj < D / 8; jj++)
        *reinterpret_cast<uint32_t*>(orow + 8 * jj + 2 * tig) =
            pack(o[4 * jj + 2 * i] * inv, o[4 * jj + 2 * i + 1] * inv);
      if (tig == 0) lse[((size_t)it.b * H + it.h) * T + row] = (m[i] * scale_log2 + log2f(l[i])) * kLn2;
    }
  }
}

// ================================ backward ================================

constexpr int kBwdM = 64, kBwdN = 64 * kConsumers;

// lse·log2(e) and delta = rowsum(dO ⊙ O) per (b, h, t), in rows padded to whole query tiles
// (padding: lse +inf, so its probabilities are 0; delta 0), one warp per row.
__global__ void prepare_kernel(float* lse2, float* delta, const float* lse, const bf* dout, const bf* out, int B,
                               int T, int Tp, int H, int D) {
  const size_t row = blockIdx.x * (size_t)(blockDim.x / 32) + threadIdx.x / 32;  // (b·H + h)·Tp + t
  if (row >= (size_t)B * H * Tp) return;
  const int t = row % Tp;
  const size_t bh = row / Tp, b = bh / H, h = bh % H;
  float acc = 0.f;
  if (t < T) {
    const size_t at = ((b * T + t) * H + h) * D;
    for (int d = threadIdx.x % 32 * 2; d < D; d += 64) {
      const float2 x = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(dout + at + d));
      const float2 y = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(out + at + d));
      acc += x.x * y.x + x.y * y.y;
    }
  }
  acc = warp_sum(acc);
  if (threadIdx.x % 32 == 0) {
    delta[row] = acc;
    lse2[row] = t < T ? lse[bh * T + t] * kLog2e : INFINITY;
  }
}

// dQ in (B, T, H, D) bf16 from the fp32 sums. Those are kept per (b, h, 64-query tile) as
// D/64 blocks of 64 rows × 64 columns, each row's 8-float groups rotated by the row (group g of
// row r at g ^ (r % 8)): the layout the backward stages without bank conflicts and adds with
// one bulk reduction per block.
__global__ void dq_convert_kernel(bf* dq, const float* acc, int B, int T, int Tp, int H, int D) {
  const size_t n = (size_t)B * T * H * D / 8;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const size_t e = i * 8;
    const int d = (int)(e % D), block = d / 64, g = d % 64 / 8;
    const size_t bth = e / D, h = bth % H, bt = bth / H, t = bt % T, b = bt / T;
    const size_t tile = (b * H + h) * (Tp / 64) + t / 64;
    const float* src = acc + ((tile * (D / 64) + block) * 64 + t % 64) * 64 + 8 * (g ^ (t % 8));
    const float4 lo = *reinterpret_cast<const float4*>(src), hi = *reinterpret_cast<const float4*>(src + 4);
    const float f[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
    store8(dq + e, f);
  }
}

// The deterministic mode's last addition to dQ tile (b, h, m) at D 64: the sums of the earlier
// ones (landed in shared memory by one bulk copy; none when it is also the first) plus the
// staged tile, written as bf16 rows of dq by the writer's warp. The same fp32 additions in the
// same order as a bulk reduction followed by dq_convert_kernel (the same values, but for the
// sign of a zero, which a first store keeps, and subnormals, if the bulk addition flushes
// them). At D 128 the shared memory has no room for the landing buffers, so dq_convert_kernel
// runs there.
constexpr bool kWritersFinishDq(int D) { return D == 64; }
template <int D>
__device__ inline void finish_dq_tile(bf* dq, const float* landed, const float* stage, int b, int h, int m, int T,
                                      int H, int lane) {
  constexpr int kChunks = D / 64 * kBwdM * 16;  // 4-float chunks: 64-row blocks, rows, 16 a row
  const int rows = min(kBwdM, T - m * kBwdM), row_stride = H * D;
  bf* out = dq + ((size_t)b * T + (size_t)m * kBwdM) * row_stride + h * D;
#pragma unroll 1
  for (int c = lane; c < kChunks; c += 32) {
    const int r = c / 16 % kBwdM, pos = c % 16;
    if (r >= rows) continue;
    float4 x = reinterpret_cast<const float4*>(stage)[c];
    if (landed) {
      const float4 y = reinterpret_cast<const float4*>(landed)[c];
      x.x = y.x + x.x, x.y = y.y + x.y, x.z = y.z + x.z, x.w = y.w + x.w;
    }
    const int d = c / (kBwdM * 16) * 64 + 8 * ((pos / 2) ^ (r % 8)) + 4 * (pos % 2);
    *reinterpret_cast<uint2*>(out + r * row_stride + d) = make_uint2(pack(x.x, x.y), pack(x.z, x.w));
  }
}

// dQ tiles wait in shared memory for their bulk reduction: one stage per writer thread (a lane
// of each of the producer warpgroup's spare warps), as many as fit (D 128: two). K and V have
// two stages where they fit (D 64), so the next item's arrive during this one.
template <int D>
struct BwdSmem {
  static constexpr int dq_stages = D == 64 ? 3 : 2, kv_stages = D == 64 ? 2 : 1;
  static constexpr int kv_bytes = kBwdN * D * 2, q_bytes = kBwdM * D * 2, stat_bytes = kBwdM * 4;
  static constexpr int ds_bytes = kBwdN * kBwdM * 2, dq_bytes = kBwdM * D * 4;
  // Where the writers finish dQ (kWritersFinishDq), each has a landing buffer for the sums so far.
  static constexpr int land_stages = kWritersFinishDq(D) ? dq_stages : 0;
  static constexpr int k = 0, v = kv_stages * kv_bytes, q = 2 * kv_stages * kv_bytes, dout = q + 2 * q_bytes,
                       ds = dout + 2 * q_bytes, dq = ds + 2 * ds_bytes, land = dq + dq_stages * dq_bytes,
                       lse = land + land_stages * dq_bytes, delta = lse + 2 * stat_bytes, bars = delta + 2 * stat_bytes;
  static constexpr int item_ring = 4;  // items claimed and not yet read by every role
  static constexpr int items = bars + (4 + 2 * kv_stages + 2 * dq_stages + land_stages + 2 * item_ring) * 8;
  static constexpr int total = items + item_ring * 4 + 1024;
  static_assert(total <= 227 * 1024, "more shared memory than an sm_90 block may have");
};

// The backward's work items: item w is key tile ntiles − 1 − w % ntiles (the later, shorter
// ones first, see `order`) of (sequence, KV head) w / ntiles, so a head's key tiles run side
// by side and share its Q and dO in L2. A block's producer claims the next unclaimed item from
// a counter (an item's cost grows 8-fold from the last key tile to the first at T 1024, so a
// fixed share would leave blocks idle) and passes it to the other roles through a ring in
// shared memory. Items are claimed in increasing order by blocks already running, and each
// block works through its own in order; in the deterministic mode an item waits only for items
// before it, so the wait always ends, however many blocks the GPU holds at once (other kernels
// may occupy SMs) and in whatever order it starts them.
struct BwdItem {
  int b, kvh, n, first, per_head, steps;  // key tile n; query tiles first … first + per_head − 1 per head
  __device__ BwdItem(int w, int ntiles, int Hkv, int T, int group) {
    n = ntiles - 1 - w % ntiles;
    b = w / ntiles / Hkv, kvh = w / ntiles % Hkv;
    first = n * kBwdN / kBwdM, per_head = (T + kBwdM - 1) / kBwdM - first, steps = group * per_head;
  }
};

struct BwdArgs {
  bf *dq, *dk, *dv;
  float* dq_acc;
  const float *lse2, *delta;
  int* order;  // per (b, h, query tile): key tiles added so far (deterministic mode), else null
  int* claimed;  // items claimed so far, zero at the start
  int B, T, Tp, H, Hkv;
  float scale, scale_log2;
};

template <int D>
__global__ void __launch_bounds__(kThreads, 1)
    backward_kernel(const __grid_constant__ CUtensorMap tq, const __grid_constant__ CUtensorMap tk,
                    const __grid_constant__ CUtensorMap tv, const __grid_constant__ CUtensorMap tdo, BwdArgs a) {
  using L = BwdSmem<D>;
  constexpr int kSub = D / 64, kDqN = D / 2;  // each consumer makes dQ's columns kDqN·c … + kDqN − 1
  constexpr int kDqStages = L::dq_stages, kKvStages = L::kv_stages;
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = align1024(smem_raw);
  const uint32_t sk = smem_addr(smem + L::k), sv = smem_addr(smem + L::v), sq = smem_addr(smem + L::q),
                 sds = smem_addr(smem + L::ds);
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem + L::bars);
  // kv_full/kv_empty: an item's K and V are in, and no longer read; full/empty: a stage of Q,
  // dO, lse, delta; staged/free: a dQ tile is in its staging buffer, and has been read out by
  // the reduction. Stages are counted over the block's items (g: its steps so far).
  uint64_t *full = bars, *empty = bars + 2, *kv_full = bars + 4, *kv_empty = kv_full + kKvStages,
           *staged = kv_empty + kKvStages, *free = staged + kDqStages, *item_full = free + kDqStages,
           *item_empty = item_full + L::item_ring, *landed = item_empty + L::item_ring;
  int* item_ring = reinterpret_cast<int*>(smem + L::items);

  const int ntiles_k = a.Tp / kBwdN, group = a.H / a.Hkv, items = a.B * a.Hkv * ntiles_k;
  const int wg = threadIdx.x / 128;
  if (threadIdx.x == 0) {
    for (int s = 0; s < 2; s++) mbar_init(full + s, 1), mbar_init(empty + s, 128 * kConsumers);
    for (int s = 0; s < kKvStages; s++) mbar_init(kv_full + s, 1), mbar_init(kv_empty + s, 128 * kConsumers);
    for (int s = 0; s < kDqStages; s++) mbar_init(staged + s, 128 * kConsumers), mbar_init(free + s, 1);
    for (int s = 0; s < L::land_stages; s++) mbar_init(landed + s, 1);
    for (int r = 0; r < L::item_ring; r++)  // read by both consumers and every dQ writer
      mbar_init(item_full + r, 1), mbar_init(item_empty + r, 128 * kConsumers + kDqStages);
    mbar_init_fence();
  }
  __syncthreads();

  // The block's item j, as the producer claimed it (items or more: no more items).
  auto next_item = [&](int j) {
    const int r = j % L::item_ring;
    mbar_wait(item_full + r, (j / L::item_ring) & 1);
    const int w = item_ring[r];
    mbar_arrive(item_empty + r);
    return w;
  };

  if (wg == 0) {
    // Registers: 128·P + 256·C ≤ 168·384, the block's share of the file. D 64's consumers fit
    // in 224 without spills, which leaves the producer and the dQ writers (which claim and track
    // items, and finish dQ tiles) 48; in 40 the finishing spilled.
    if constexpr (D == 64) regs_dealloc<48>(); else regs_dealloc<24>();
    if (threadIdx.x == 0) {  // the producer: per item K and V, then Q, dO, lse, delta per step
      for (int j = 0, g = 0;; j++) {
        const int r = j % L::item_ring;
        if (j >= L::item_ring) mbar_wait(item_empty + r, ((j / L::item_ring) & 1) ^ 1);
        const int w = atomicAdd(a.claimed, 1);
        item_ring[r] = w;
        mbar_arrive(item_full + r);  // (an arrival releases the write; a completed wait acquires it)
        if (w >= items) break;
        const BwdItem it(w, ntiles_k, a.Hkv, a.T, group);
        const int ks = j % kKvStages;
        if (j >= kKvStages) mbar_wait(kv_empty + ks, ((j / kKvStages) & 1) ^ 1);
        mbar_arrive_expect(kv_full + ks, 2 * L::kv_bytes);
        for (int c = 0; c < kSub; c++) {
          const int at = ks * L::kv_bytes + c * kBwdN * kRowBytes;
          tma_load_4d(smem + L::k + at, &tk, kv_full + ks, c * 64, it.kvh, it.n * kBwdN, it.b);
          tma_load_4d(smem + L::v + at, &tv, kv_full + ks, c * 64, it.kvh, it.n * kBwdN, it.b);
        }
        for (int i = 0; i < it.steps; i++, g++) {
          const int h = it.kvh * group + i / it.per_head, m = it.first + i % it.per_head, s = g & 1,
                    phase = (g >> 1) & 1;
          if (g >= 2) mbar_wait(empty + s, phase ^ 1);
          mbar_arrive_expect(full + s, 2 * L::q_bytes + 2 * L::stat_bytes);
          for (int c = 0; c < kSub; c++) {
            const int at = s * L::q_bytes + c * kBwdM * kRowBytes;
            tma_load_4d(smem + L::q + at, &tq, full + s, c * 64, h, m * kBwdM, it.b);
            tma_load_4d(smem + L::dout + at, &tdo, full + s, c * 64, h, m * kBwdM, it.b);
          }
          const size_t stat = ((size_t)it.b * a.H + h) * a.Tp + m * kBwdM;
          bulk_load(smem + L::lse + s * L::stat_bytes, a.lse2 + stat, L::stat_bytes, full + s);
          bulk_load(smem + L::delta + s * L::stat_bytes, a.delta + stat, L::stat_bytes, full + s);
        }
      }
    } else if (threadIdx.x >= 32 && threadIdx.x / 32 <= kDqStages) {  // (thread 0: the producer)
      // dQ writer s (a warp; its lane 0 issues the copies) adds the tiles staged in stage s
      // (the block's steps s, s + stages, …) into the fp32 sums. In the deterministic mode a
      // writer waits for its tile's turn and then for its addition to land; with one writer per
      // stage, those waits overlap. There the first addition (the diagonal key tile's) stores,
      // so the sums need no zeroing, and at D 64 the last (key tile 0's, which every query tile
      // has) finishes the tile: the sums so far land in shared memory, and the whole warp adds
      // them to the staged tile and writes bf16 dQ, so no separate pass reads them again.
      const int s = threadIdx.x / 32 - 1, lane = threadIdx.x % 32;
      int finishes = 0;  // landings so far (the parity of the next one's wait)
      for (int j = 0, g = 0;; j++) {
        const int w = __shfl_sync(0xffffffffu, lane == 0 ? next_item(j) : 0, 0);
        if (w >= items) break;
        const BwdItem it(w, ntiles_k, a.Hkv, a.T, group);
        for (int i = (s - g % kDqStages + kDqStages) % kDqStages; i < it.steps; i += kDqStages) {
          const int h = it.kvh * group + i / it.per_head, m = it.first + i % it.per_head;
          mbar_wait(staged + s, ((g + i) / kDqStages) & 1);
          const size_t tile = ((size_t)it.b * a.H + h) * (a.Tp / kBwdM) + m;
          int* turn = a.order ? a.order + tile : nullptr;
          const int last = min(ntiles_k - 1, (m * kBwdM + kBwdM - 1) / kBwdN);
          float* sums = a.dq_acc + tile * kBwdM * D;
          const float* stage = reinterpret_cast<float*>(smem + L::dq + s * L::dq_bytes);
          if (turn && lane == 0) {  // key tiles add in descending order: the one at the diagonal first
            while (atomicAdd(turn, 0) != last - it.n) __nanosleep(32);
            // Acquire the earlier additions (released before the turn moved), for this warp's
            // reads after the __syncwarp below and for this thread's copy engine: a reduction
            // overtaking the first addition's store would be lost.
            __threadfence();
            fence_async_global();
          }
          __syncwarp();
          if (kWritersFinishDq(D) && turn && it.n == 0) {
            const float* land = it.n == last ? nullptr : reinterpret_cast<float*>(smem + L::land + s * L::dq_bytes);
            if (land) {
              if (lane == 0) {
                fence_async_shared();  // (the last finish's reads of the buffer come first)
                mbar_arrive_expect(landed + s, L::dq_bytes);
                bulk_load(smem + L::land + s * L::dq_bytes, sums, L::dq_bytes, landed + s);
              }
              mbar_wait(landed + s, finishes++ & 1);
            }
            finish_dq_tile<D>(a.dq, land, stage, it.b, h, m, a.T, a.H, lane);
            __syncwarp();
            if (lane == 0) mbar_arrive(free + s);
          } else if (lane == 0) {
            if (turn && it.n == last)
              bulk_store(sums, stage, L::dq_bytes);
            else
              bulk_reduce_add(sums, stage, L::dq_bytes);
            bulk_commit();
            bulk_wait_read<0>();
            mbar_arrive(free + s);
            if (turn) {
              bulk_wait<0>();
              fence_async_global();
              __threadfence();
              atomicAdd(turn, 1);
            }
          }
          __syncwarp();
        }
        g += it.steps;
      }
      if (lane == 0) bulk_wait<0>();
    }
    return;
  }

  if constexpr (D == 64) regs_alloc<224>(); else regs_alloc<240>();
  const int cw = wg - 1, tid = threadIdx.x % 128, warp = tid / 32, lane = tid % 32, gid = lane / 4, tig = lane % 4;
  const int key_in_tile = cw * 64 + warp * 16 + gid;  // this thread's keys: + 0 and + 8
  // Descriptors: a base per operand (and stage), plus compile-time offsets per k-step (a
  // descriptor holds the address in 16-byte units in its low bits).
  // Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ: all K-major (features contiguous); a k-step of 16 features is 32
  // bytes along the swizzled rows, every 4 k-steps the next 64-feature block.
  // (K and V's second stage: one stage's bytes further, in every descriptor.)
  const uint64_t k_d = desc_sw128(sk + cw * 64 * kRowBytes), v_d = desc_sw128(sv + cw * 64 * kRowBytes);
  // Stage s of Q, dO and dSᵀ: a compile-time step further from stage 0's descriptor (three
  // 64-bit bases live through the loop instead of ten descriptors: D 128's consumers spill less).
  constexpr uint64_t kQStage = L::q_bytes >> 4, kDoFromQ = (L::dout - L::q) >> 4, kDsStage = L::ds_bytes >> 4;
  const uint64_t q_d = desc_sw128(sq);
  // dV += Pᵀ·dO, dK += dSᵀ·Q: B is MN-major (features contiguous); a k-step is 16 queries.
  const uint64_t qt_d = desc_sw128(sq, kBwdM * kRowBytes);
  // dQ = dS·K: A = dSᵀ (keys × queries) and B = K (keys × features), both MN-major; a k-step
  // is 16 keys. This consumer's columns start kDqN·cw features into K's rows.
  const uint64_t ds_d = desc_sw128(sds, kBwdN * kRowBytes);
  // dK += dSᵀ·Q at D 128 reads dSᵀ (keys × queries, queries contiguous: K-major) from there too.
  const uint64_t dsk_d = desc_sw128(sds + cw * 64 * kRowBytes);
  const uint64_t kt_d = desc_sw128(sk + (cw * kDqN / 64) * kBwdN * kRowBytes + (cw * kDqN % 64) * 2, kBwdN * kRowBytes);
  constexpr uint64_t kRows16 = 16 * kRowBytes >> 4;
  // Sᵀ = K·Qᵀ or dPᵀ = V·dOᵀ (a: this consumer's keys, b: the step's queries), overwriting acc.
  auto issue_t = [&](float (&acc)[kBwdM / 2], uint64_t a, uint64_t b) { product_kmajor<kBwdM, D, kBwdN>(acc, a, b); };

  // This thread's rows of the dSᵀ tile (keys key_in_tile, + 8) and of the dQ staging tile
  // (queries warp·16 + gid, + 8); both swizzle 16-byte (or 32-byte) groups by gid = row % 8.
  const uint32_t ds_row = key_in_tile * kRowBytes + tig * 4, g16 = gid * 16;
  const int q_row = warp * 16 + gid;

  float dk[D / 2], dv[D / 2];
  for (int j = 0, g = 0, w; (w = next_item(j)) < items; j++) {
    const BwdItem it(w, ntiles_k, a.Hkv, a.T, group);
    const int ks = j % kKvStages;
    const uint64_t kv_step = (uint64_t)(ks * L::kv_bytes >> 4), kd = k_d + kv_step, vd = v_d + kv_step,
                   ktd = kt_d + kv_step;
#pragma unroll
    for (int i = 0; i < D / 2; i++) dk[i] = dv[i] = 0.f;
    mbar_wait(kv_full + ks, (j / kKvStages) & 1);
    for (int i = 0; i < it.steps; i++, g++) {
      const int m = it.first + i % it.per_head, s = g & 1, phase = (g >> 1) & 1;
      const int q0 = m * kBwdM, k0 = it.n * kBwdN;
      mbar_wait(full + s, phase);
      float st[kBwdM / 2], dpt[kBwdM / 2];
      const uint64_t qd = q_d + s * kQStage, dod = qd + kDoFromQ;
      wgmma_fence();
      issue_t(st, kd, qd);
      wgmma_commit();
      issue_t(dpt, vd, dod);
      wgmma_commit();
      // This thread's 16 queries: 8j + 2·tig + {0, 1}; lse·log2e and delta·scale for each.
      const float2* lse_s = reinterpret_cast<const float2*>(smem + L::lse + s * L::stat_bytes) + tig;
      float lse[kBwdM / 4];
#pragma unroll
      for (int jj = 0; jj < kBwdM / 8; jj++) {
        const float2 l2 = lse_s[4 * jj];
        lse[2 * jj] = l2.x, lse[2 * jj + 1] = l2.y;
      }
      wgmma_wait<1>();
      fence_regs(st);
      // Pᵀ; only steps that cross the diagonal need the mask (padded queries have lse = +inf,
      // so their probabilities are 0 already).
      float p[kBwdM / 2];
      if (q0 < k0 + kBwdN) {
        const int rel = k0 + key_in_tile - q0;  // this thread's first key, from the tile's first query
#pragma unroll
        for (int jj = 0; jj < kBwdM / 8; jj++)
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const float x = exp2f(fmaf(st[4 * jj + e], a.scale_log2, -lse[2 * jj + (e & 1)]));
            p[4 * jj + e] = 8 * jj + 2 * tig + (e & 1) < rel + 8 * (e / 2) ? 0.f : x;
          }
      } else {
#pragma unroll
        for (int jj = 0; jj < kBwdM / 8; jj++)
#pragma unroll
          for (int e = 0; e < 4; e++) p[4 * jj + e] = exp2f(fmaf(st[4 * jj + e], a.scale_log2, -lse[2 * jj + (e & 1)]));
      }
      uint32_t pa[kBwdM / 16][4], dsa[kBwdM / 16][4];
      to_a(pa, p);
      wgmma_wait<0>();
      fence_regs(dpt);
      // dSᵀ = Pᵀ ⊙ (dPᵀ − delta), with the softmax scale folded in (delta read only now: fewer
      // registers live while P is made).
      const float2* delta_s = reinterpret_cast<const float2*>(smem + L::delta + s * L::stat_bytes) + tig;
#pragma unroll
      for (int jj = 0; jj < kBwdM / 8; jj++) {
        const float2 d2 = delta_s[4 * jj];
        const float dsc[2] = {d2.x * a.scale, d2.y * a.scale};
#pragma unroll
        for (int e = 0; e < 4; e++) p[4 * jj + e] *= fmaf(dpt[4 * jj + e], a.scale, -dsc[e & 1]);
      }
      to_a(dsa, p);
      // dSᵀ into shared memory for dQ, in the swizzled layout the descriptor expects. Buffer s
      // was last read by the dQ products two steps ago, which finished before the last barrier.
      {
        unsigned char* ds = smem + L::ds + s * L::ds_bytes + ds_row;
#pragma unroll
        for (int jj = 0; jj < kBwdM / 8; jj++)
#pragma unroll
          for (int i2 = 0; i2 < 2; i2++)
            *reinterpret_cast<uint32_t*>(ds + i2 * 8 * kRowBytes + ((jj * 16) ^ g16)) = dsa[jj / 2][(jj % 2) * 2 + i2];
      }
      fence_async_shared();
      named_sync(1, 256);  // both consumers' halves of dSᵀ are in place
      fence_regs(pa);
      fence_regs(dsa);
      float dq[kDqN / 2];
      wgmma_fence();
      const uint64_t qtd = qt_d + s * kQStage, dotd = qtd + kDoFromQ, dsd = ds_d + s * kDsStage;
      // dQ first, as a group of its own: its staging then overlaps dV's and dK's products.
#pragma unroll
      for (int kk = 0; kk < kBwdN / 16; kk++)
        if (kk == 0)
          Wgmma<kDqN, 1, 1>::ss0(dq, dsd, ktd);
        else
          Wgmma<kDqN, 1, 1>::ss(dq, dsd + kk * kRows16, ktd + kk * kRows16, true);
      wgmma_commit();
#pragma unroll
      for (int kk = 0; kk < kBwdM / 16; kk++) Wgmma<D, 0, 1>::rs(dv, pa[kk], dotd + kk * kRows16, true);
#pragma unroll
      for (int kk = 0; kk < kBwdM / 16; kk++)
        if constexpr (D == 128)  // A = this consumer's rows of dSᵀ in shared memory: dsa is dead by now
          Wgmma<D, 0, 1>::ss(dk, dsk_d + s * kDsStage + kmajor(kk, kBwdN), qtd + kk * kRows16, true);
        else
          Wgmma<D, 0, 1>::rs(dk, dsa[kk], qtd + kk * kRows16, true);
      wgmma_commit();
      wgmma_wait<1>();
      fence_regs(dq);
      // This consumer's columns of the dQ tile into its staging buffer, once the writer has
      // read out what was there kDqStages steps ago; the layout is the fp32 sums' (see
      // dq_convert_kernel).
      const int qs = g % kDqStages;
      if (g >= kDqStages) mbar_wait(free + qs, ((g / kDqStages) & 1) ^ 1);
      float* stage = reinterpret_cast<float*>(smem + L::dq + qs * L::dq_bytes) + q_row * 64 + 2 * tig;
#pragma unroll
      for (int jj = 0; jj < kDqN / 8; jj++) {
        const int col = cw * kDqN + 8 * jj, block = col / 64, gr = col % 64 / 8;
#pragma unroll
        for (int i2 = 0; i2 < 2; i2++)
          *reinterpret_cast<float2*>(stage + (block * kBwdM + 8 * i2) * 64 + 8 * (gr ^ gid)) =
              make_float2(dq[4 * jj + 2 * i2], dq[4 * jj + 2 * i2 + 1]);
      }
      fence_async_shared();
      mbar_arrive(staged + qs);
      wgmma_wait<0>();
      fence_regs(dv);
      fence_regs(dk);
      fence_regs(pa);
      fence_regs(dsa);
      mbar_arrive(empty + s);
    }
    mbar_arrive(kv_empty + ks);  // this item's products are done with K and V
    // (The item's place made again from w: fewer registers live through the steps at D 128.)
    const BwdItem done(w, ntiles_k, a.Hkv, a.T, group);
    const size_t kstride = (size_t)a.Hkv * D;
#pragma unroll
    for (int i2 = 0; i2 < 2; i2++) {
      const int key = done.n * kBwdN + key_in_tile + 8 * i2;
      if (key >= a.T) continue;
      const size_t at = ((size_t)done.b * a.T + key) * kstride + (size_t)done.kvh * D;
#pragma unroll
      for (int jj = 0; jj < D / 8; jj++) {
        *reinterpret_cast<uint32_t*>(a.dk + at + 8 * jj + 2 * tig) = pack(dk[4 * jj + 2 * i2], dk[4 * jj + 2 * i2 + 1]);
        *reinterpret_cast<uint32_t*>(a.dv + at + 8 * jj + 2 * tig) = pack(dv[4 * jj + 2 * i2], dv[4 * jj + 2 * i2 + 1]);
      }
    }
  }
}

// ================================ host side ================================

using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                 const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                 CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

EncodeTiled encoder() {
  static const EncodeTiled fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult found{};
    CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &found));
    if (found != cudaDriverEntryPointSuccess || !p)
      throw std::runtime_error("the CUDA driver lacks cuTensorMapEncodeTiled (tensor maps need a 12.0+ driver)");
    return reinterpret_cast<EncodeTiled>(p);
  }();
  return fn;
}

// A (B, T, heads, D) bf16 tensor as tiles of 64 features × 1 head × `rows` positions × 1
// sequence, 128-byte swizzled; positions past T read as zeros.
CUtensorMap tile_map(const bf* base, int B, int T, int heads, int D, int rows) {
  CUtensorMap map;
  const cuuint64_t dims[4] = {(cuuint64_t)D, (cuuint64_t)heads, (cuuint64_t)T, (cuuint64_t)B};
  const cuuint64_t strides[3] = {(cuuint64_t)D * 2, (cuuint64_t)heads * D * 2, (cuuint64_t)T * heads * D * 2};
  const cuuint32_t box[4] = {64, 1, (cuuint32_t)rows, 1}, unit[4] = {1, 1, 1, 1};
  const CUresult r = encoder()(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4, const_cast<bf*>(base), dims, strides, box,
                               unit, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                               CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    throw std::runtime_error(fmt::format("cuTensorMapEncodeTiled failed ({}) for a ({}, {}, {}, {}) tensor", (int)r, B,
                                         T, heads, D));
  return map;
}

template <int D>
void forward(const Context& ctx, bf* out, float* lse, const bf* q, const bf* k, const bf* v, int B, int T, int H,
             int Hkv, bool persistent) {
  const CUtensorMap tq = tile_map(q, B, T, H, D, kFwdM), tk = tile_map(k, B, T, Hkv, D, kFwdN),
                    tv = tile_map(v, B, T, Hkv, D, kFwdN);
  CUDA_CHECK(cudaFuncSetAttribute(forward_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, FwdSmem<D>::total));
  // One block per SM, each walking its items: the next item's loads overlap this one's end.
  const long items = (long)B * H * ((T + kFwdM - 1) / kFwdM);
  const int grid = (int)std::min<long>(items, persistent ? ctx.cuda->sm_count : INT32_MAX);
  forward_kernel<D><<<grid, kThreads, FwdSmem<D>::total, stream(ctx)>>>(tq, tk, tv, out, lse, B, T, H, Hkv,
                                                                        kLog2e / sqrtf((float)D));
  CUDA_CHECK_LAUNCH();
}

template <int D>
void backward(const Context& ctx, bf* dq, bf* dk, bf* dv, const bf* dout, const bf* q, const bf* k, const bf* v,
              const bf* out, const float* lse, int B, int T, int H, int Hkv, bool deterministic, bool persistent) {
  const int Tp = (T + kBwdN - 1) / kBwdN * kBwdN;  // whole key tiles, so also whole query tiles
  const size_t rows = (size_t)B * H * Tp, nacc = rows * D, tiles = rows / kBwdM;
  // Scratch: dQ sums, lse·log2e, delta, the items claimed, then the order counters.
  float* acc = static_cast<float*>(cuda::scratch(ctx, sizeof(float) * (nacc + 2 * rows) + sizeof(int) * (1 + tiles)));
  float *lse2 = acc + nacc, *delta = lse2 + rows;
  int *claimed = reinterpret_cast<int*>(delta + rows), *order = claimed + 1;
  // In the deterministic mode every query tile's first addition (its diagonal key tile's, which
  // every tile has) stores, so the sums need no zeroing: 4 bytes per dQ element not written.
  if (!deterministic) cuda::zero(ctx, acc, sizeof(float) * nacc);
  cuda::zero(ctx, claimed, sizeof(int) * (deterministic ? 1 + tiles : 1));
  prepare_kernel<<<blocks_for(rows * 32, 256), 256, 0, stream(ctx)>>>(lse2, delta, lse, dout, out, B, T, Tp, H, D);
  CUDA_CHECK_LAUNCH();
  const CUtensorMap tq = tile_map(q, B, T, H, D, kBwdM), tdo = tile_map(dout, B, T, H, D, kBwdM),
                    tk = tile_map(k, B, T, Hkv, D, kBwdN), tv = tile_map(v, B, T, Hkv, D, kBwdN);
  BwdArgs a{dq, dk, dv, acc, lse2, delta, deterministic ? order : nullptr, claimed, B, T, Tp, H, Hkv, 0.f, 0.f};
  a.scale = 1.f / sqrtf((float)D);
  a.scale_log2 = a.scale * kLog2e;
  CUDA_CHECK(cudaFuncSetAttribute(backward_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, BwdSmem<D>::total));
  // One block per SM, each claiming items as it goes (see BwdItem), or one block per item.
  const long items = (long)B * Hkv * (Tp / kBwdN);
  const int grid = (int)std::min<long>(items, persistent ? ctx.cuda->sm_count : INT32_MAX);
  backward_kernel<D><<<grid, kThreads, BwdSmem<D>::total, stream(ctx)>>>(tq, tk, tv, tdo, a);
  CUDA_CHECK_LAUNCH();
  if (!deterministic || !kWritersFinishDq(D)) {  // (else the writers finished dQ themselves)
    dq_convert_kernel<<<blocks_for((size_t)B * T * H * D / 8, 256), 256, 0, stream(ctx)>>>(dq, acc, B, T, Tp, H, D);
    CUDA_CHECK_LAUNCH();
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

bool attention_sm90_supports(const Context& ctx, const void* const* tensors, int n, int D) {
  if (ctx.cuda->compute_major != 9 || ctx.cuda->compute_minor != 0) return false;
  if (D != 64 && D != 128) return false;
  for (int i = 0; i < n; i++)
    if (!aligned16(tensors[i])) return false;
  return true;
}

void attention_forward_sm90(const Context& ctx, bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                            int B, int T, int H, int Hkv, int D, bool persistent) {
  if (D == 64)
    forward<64>(ctx, dev(out), lse, dev(q), dev(k), dev(v), B, T, H, Hkv, persistent);
  else
    forward<128>(ctx, dev(out), lse, dev(q), dev(k), dev(v), B, T, H, Hkv, persistent);
}

void attention_backward_sm90(const Context& ctx, bf16* dq, bf16* dk, bf16* dv, const bf16* dout, const bf16* q,
                             const bf16* k, const bf16* v, const bf16* out, const float* lse, int B, int T, int H,
                             int Hkv, int D, bool deterministic, bool persistent) {
  if (D == 64)
    backward<64>(ctx, dev(dq), dev(dk), dev(dv), dev(dout), dev(q), dev(k), dev(v), dev(out), lse, B, T, H, Hkv,
                 deterministic, persistent);
  else
    backward<128>(ctx, dev(dq), dev(dk), dev(dv), dev(dout), dev(q), dev(k), dev(v), dev(out), lse, B, T, H, Hkv,
                  deterministic, persistent);
}

}  // namespace t6::cuda
