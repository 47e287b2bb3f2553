// Causal attention for Hopper (sm_90a), forward (the overview: attention_sm90.cu). Persistent
// blocks, one per SM, each taking a share of the (query tile, head) items (a head's tiles in a
// row, longest first), so the next item's loads overlap this one's end (at T = 1024 an item is a
// few microseconds, about what a fresh block's start-up costs). An item is 128 query rows of one
// head (64 per consumer warpgroup); it walks the key tiles of 128 from the diagonal (the only
// masked one) down to 0. Each iteration issues S = Q·Kᵀ for this tile and O += P·V for the
// previous one, then computes this tile's softmax while the tensor cores work; the two consumers
// take turns issuing (named barriers), so one's softmax overlaps the other's products.
#include <algorithm>

#include "kernels/cuda/attention_sm90.cuh"
#include "kernels/cuda/attention_sm90.h"
#include "kernels/cuda/dispatch.h"

namespace t6::cuda {

using namespace sm90;

namespace {

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
    const int G = min(grid, B_H);  // heads a group (a block per tile: all, and G·mtiles stays within int)
    const int group = w / (G * mtiles), heads = min(G, B_H - group * G), q = w - group * G * mtiles;
    const int bh = group * G + q % heads;
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
      corr[i] = exp2_ftz((m[i] - mx[i]) * scale_log2);  // the diagonal tile comes first: mx is finite
      m[i] = mx[i];
      shift[i] = mx[i] * scale_log2;
      l[i] *= corr[i];
    }
#pragma unroll
    for (int j = 0; j < kFwdN / 8; j++) {
      float x[4];
#pragma unroll
      for (int e = 0; e < 4; e++) {
        x[e] = exp2_ftz(fmaf(s_acc[4 * j + e], scale_log2, -shift[e / 2]));
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

}  // namespace

void attention_forward_sm90(const Context& ctx, bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                            int B, int T, int H, int Hkv, int D, bool persistent) {
  if (D == 64)
    forward<64>(ctx, dev(out), lse, dev(q), dev(k), dev(v), B, T, H, Hkv, persistent);
  else
    forward<128>(ctx, dev(out), lse, dev(q), dev(k), dev(v), B, T, H, Hkv, persistent);
}

}  // namespace t6::cuda
