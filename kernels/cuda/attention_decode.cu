// Generation's attention: one new query per sequence against its key/value cache (the records
// of kernels/ops.h), split over the cache in the flash-decoding way so that even one sequence
// fills the GPU, the splits merged by their log-sum-exp in fp32.
//
// A block takes one sequence, one stretch of positions and a set of query heads, 16 heads per
// warp, so the heads play the part of flash attention's query rows and the products run on the
// tensor cores (mma.sync): scores S_r = Q·B_rᵀ for each key rank r against the tile's B rows,
// mixed per head and position by A_k (score = Σ_r A_k[s, h, r]·S_r[h, s]), online softmax, then
// O += Σ_r (P ⊙ A_v[·, h, r])·B_v,r. TPA's B rows are shared by all heads, so a block holds every
// head and reads each cached number once. A dense cache (MHA, GQA, MQA) is the same with one
// rank, A = 1 and B the KV head's slice: a block per KV head and its query heads. The cache is
// read where it lies (records of the stored layout, 64 positions a tile, double-buffered
// cp.async), never permuted.
#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/mma.cuh"

namespace t6 {

using namespace cuda;

namespace {

constexpr int kPos = 64;       // cache positions per tile
constexpr int kMaxWarps = 8;   // 16 query heads each: up to 128 heads a block

// One side (k or v) of the cache as a block reads it.
struct Side {
  const bf* cache;
  int record;  // numbers per position
  int b;       // where the block's B rows start in a record (the dense slice: its KV head's)
  int a;       // A's numbers at the record's start (padded to 8); 0 for a dense cache
  int ranks;   // R; 1 for a dense cache
};

struct DecodeArgs {
  Side k, v;
  const bf* q;
  bf* out;
  float *part_o, *part_lse;  // per split, when there are several
  int H, block_heads, heads_per_a, len, context, chunk, splits;
  float scale_log2;  // log2(e) / (√D · R_k): the 1/R of the key contraction folded in
  float out_scale;   // 1 / R_v
  bool dense;
};

template <int D>
__device__ inline int stage_elems(const DecodeArgs& p) {
  return kPos * ((D + 8) * (p.k.ranks + p.v.ranks) + p.k.a + p.v.a);
}

// Starts the copies of positions pos0 … pos0 + kPos − 1 (zeros from `end` on) of both sides into
// a stage: B rows [rank][position][D + 8] for k then v, then A rows [position][a] for k then v.
template <int D>
__device__ void load_positions(bf* stage, const DecodeArgs& p, int seq, int group, int pos0, int end) {
  constexpr int LD = D + 8, C = D / 8;
  bf* b_rows[2] = {stage, stage + p.k.ranks * kPos * LD};
  bf* a_rows[2] = {b_rows[1] + p.v.ranks * kPos * LD, nullptr};
  a_rows[1] = a_rows[0] + kPos * p.k.a;
  for (int side = 0; side < 2; side++) {
    const Side& s = side ? p.v : p.k;
    const bf* base = s.cache + (size_t)seq * p.context * s.record;
    const int b0 = p.dense ? group * D : s.b;
    for (int c = threadIdx.x; c < s.ranks * kPos * C; c += blockDim.x) {
      const int r = c / (kPos * C), pos = c / C % kPos, d = c % C * 8;
      const bool in = pos0 + pos < end;
      cp_async16(b_rows[side] + (r * kPos + pos) * LD + d, in ? base + (size_t)(pos0 + pos) * s.record + b0 + r * D + d : base, in);
    }
    const int ac = s.a / 8;
    for (int c = threadIdx.x; c < kPos * ac; c += blockDim.x) {
      const int pos = c / ac, j = c % ac * 8;
      const bool in = pos0 + pos < end;
      cp_async16(a_rows[side] + pos * s.a + j, in ? base + (size_t)(pos0 + pos) * s.record + j : base, in);
    }
  }
}

template <int D>
__global__ void decode_kernel(DecodeArgs p) {
  constexpr int LD = D + 8;
  extern __shared__ __align__(16) unsigned char smem[];
  bf* const stage0 = reinterpret_cast<bf*>(smem);
  const int stage_size = stage_elems<D>(p);
  const int split = blockIdx.x, group = blockIdx.y, seq = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gid = lane / 4, tig = lane % 4;
  const int start = split * p.chunk, end = min(p.len, start + p.chunk);
  const int tiles = (end - start + kPos - 1) / kPos;

  load_positions<D>(stage0, p, seq, group, start, end);
  commit();

  // This lane's two rows: block heads 16·warp + gid and + 8; the query head and its A head.
  int head[2], a_head[2];
  bool valid[2];
  for (int i = 0; i < 2; i++) {
    const int row = 16 * warp + gid + 8 * i;
    valid[i] = row < p.block_heads;
    head[i] = group * p.block_heads + (valid[i] ? row : 0);
    a_head[i] = head[i] / p.heads_per_a;
  }
  uint32_t qa[D / 16][4];  // Q's A fragments (16 heads × D), zeros for rows past the block's heads
  for (int kk = 0; kk < D / 16; kk++)
    for (int x = 0; x < 4; x++) {
      const int i = x % 2, col = kk * 16 + (x / 2) * 8 + 2 * tig;
      qa[kk][x] = valid[i] ? *reinterpret_cast<const uint32_t*>(p.q + ((size_t)seq * p.H + head[i]) * D + col) : 0u;
    }

  float o[D / 8][4] = {}, m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  for (int t = 0; t < tiles; t++) {
    const int pos0 = start + t * kPos;
    if (t + 1 < tiles) {
      load_positions<D>(stage0 + ((t + 1) & 1) * stage_size, p, seq, group, pos0 + kPos, end);
      commit();
      wait<1>();
    } else {
      wait<0>();
    }
    __syncthreads();
    const bf* st = stage0 + (t & 1) * stage_size;
    const bf *bk = st, *bv = st + p.k.ranks * kPos * LD;
    const bf* ak = bv + p.v.ranks * kPos * LD;
    const bf* av = ak + kPos * p.k.a;

    float sc[8][4];
#pragma unroll 1
    for (int r = 0; r < p.k.ranks; r++) {
      float s[8][4] = {};
#pragma unroll
      for (int kk = 0; kk < D / 16; kk++)
#pragma unroll
        for (int np = 0; np < 4; np++) {
          uint32_t b[4];
          load_b_pair<LD>(b, bk + r * kPos * LD, np * 16, kk * 16, lane);
          mma(s[2 * np], qa[kk], b[0], b[1]);
          mma(s[2 * np + 1], qa[kk], b[2], b[3]);
        }
#pragma unroll
      for (int j = 0; j < 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int pos = 8 * j + 2 * tig + (e & 1);
          const float mix = p.dense ? 1.f : __bfloat162float(ak[pos * p.k.a + a_head[e / 2] * p.k.ranks + r]);
          sc[j][e] = (r == 0 ? 0.f : sc[j][e]) + mix * s[j][e];
        }
    }

    // Online softmax over the tile's positions (past `end`: −∞), two rows a lane.
    float mx[2] = {m[0], m[1]}, corr[2], sum[2] = {0.f, 0.f};
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        if (pos0 + 8 * j + 2 * tig + (e & 1) >= end) sc[j][e] = -INFINITY;
        mx[e / 2] = fmaxf(mx[e / 2], sc[j][e]);
      }
#pragma unroll
    for (int i = 0; i < 2; i++) {
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
      corr[i] = exp2f((m[i] - mx[i]) * p.scale_log2);  // every tile has a position before `end`: mx is finite
      m[i] = mx[i];
    }
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        sc[j][e] = exp2f((sc[j][e] - mx[e / 2]) * p.scale_log2);
        sum[e / 2] += sc[j][e];
      }
#pragma unroll
    for (int i = 0; i < 2; i++) l[i] = l[i] * corr[i] + sum[i];
#pragma unroll
    for (int j = 0; j < D / 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) o[j][e] *= corr[e / 2];

#pragma unroll 1
    for (int r = 0; r < p.v.ranks; r++) {
      float pr[8][4];
#pragma unroll
      for (int j = 0; j < 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int pos = 8 * j + 2 * tig + (e & 1);
          pr[j][e] = p.dense ? sc[j][e] : sc[j][e] * __bfloat162float(av[pos * p.v.a + a_head[e / 2] * p.v.ranks + r]);
        }
      uint32_t a[4][4];
      c_to_a(a, pr);
      mma_tile_b_trans<D>(o, a, bv + r * kPos * LD, lane);
    }
    __syncthreads();  // the stage is loaded again two tiles on
  }

#pragma unroll
  for (int i = 0; i < 2; i++) {
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
  }
#pragma unroll
  for (int i = 0; i < 2; i++) {
    if (!valid[i]) continue;
    const float inv = p.out_scale / l[i];
    const size_t bh = (size_t)seq * p.H + head[i];
    if (p.splits == 1) {
      bf* row = p.out + bh * D;
#pragma unroll
      for (int j = 0; j < D / 8; j++)
        *reinterpret_cast<uint32_t*>(row + 8 * j + 2 * tig) = pack(o[j][2 * i] * inv, o[j][2 * i + 1] * inv);
      continue;
    }
    float* row = p.part_o + (bh * p.splits + split) * D;
#pragma unroll
    for (int j = 0; j < D / 8; j++)
      *reinterpret_cast<float2*>(row + 8 * j + 2 * tig) = make_float2(o[j][2 * i] * inv, o[j][2 * i + 1] * inv);
    if (tig == 0) p.part_lse[bh * p.splits + split] = m[i] * p.scale_log2 + log2f(l[i]);
  }
}

// The splits of each (sequence, head), a warp each: out = Σ_i 2^(lse_i − max)·o_i / Σ_i 2^(lse_i − max).
template <int D>
__global__ void combine_kernel(bf* out, const float* part_o, const float* part_lse, int rows, int splits) {
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= rows) return;
  const float* lse = part_lse + (size_t)row * splits;
  float mx = -INFINITY;
  for (int i = lane; i < splits; i += 32) mx = fmaxf(mx, lse[i]);
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  constexpr int kPer = D / 32;
  float acc[kPer] = {}, total = 0.f;
  for (int i = 0; i < splits; i++) {
    const float w = exp2f(lse[i] - mx);
    total += w;
    const float* o = part_o + ((size_t)row * splits + i) * D;
#pragma unroll
    for (int x = 0; x < kPer; x++) acc[x] += w * o[lane + 32 * x];
  }
#pragma unroll
  for (int x = 0; x < kPer; x++) out[(size_t)row * D + lane + 32 * x] = __float2bfloat16(acc[x] / total);
}

template <int D>
void decode(const Context& ctx, bf16* out, const bf16* q, const bf16* k_cache, const bf16* v_cache, const QkvLayout& L,
            int B, int len, int context) {
  const int H = L.heads[0], Hkv = L.heads[1];
  const bool dense = L.rank[1] == 0;
  if (dense != (L.rank[2] == 0))
    throw std::invalid_argument("attention_decode on the GPU: keys and values must both be factored or both dense");
  if (Hkv < 1 || H % Hkv || L.heads[2] != Hkv)
    throw std::invalid_argument(fmt::format("attention_decode on the GPU: {} query heads over {} key and {} value heads",
                                            H, Hkv, L.heads[2]));
  DecodeArgs p{};
  auto side = [&](const bf16* cache, int s) {
    const int b = dense ? 0 : kv_b_offset(L, s);
    return Side{dev(cache), kv_record(L, s), b, b, dense ? 1 : L.rank[s]};
  };
  p.k = side(k_cache, 1), p.v = side(v_cache, 2);
  p.q = dev(q), p.out = dev(out);
  p.H = H, p.len = len, p.context = context, p.dense = dense;
  p.block_heads = dense ? H / Hkv : H;
  p.heads_per_a = H / Hkv;
  p.scale_log2 = kLog2e / sqrtf((float)D) / (float)p.k.ranks;
  p.out_scale = 1.f / (float)p.v.ranks;
  const int groups = dense ? Hkv : 1, warps = (p.block_heads + 15) / 16;
  if (warps > kMaxWarps)
    throw std::invalid_argument(fmt::format("attention_decode on the GPU: {} query heads a block, at most {}",
                                            p.block_heads, 16 * kMaxWarps));
  const size_t shared = 2 * sizeof(bf) * (size_t)kPos * ((D + 8) * (p.k.ranks + p.v.ranks) + p.k.a + p.v.a);
  if (shared > ctx.cuda->max_shared_per_block)
    throw std::invalid_argument(fmt::format("attention_decode on the GPU: ranks {} / {} with {} heads need {} bytes of "
                                            "shared memory for two tiles of {} positions; a block may use {}",
                                            L.rank[1], L.rank[2], H, shared, kPos, ctx.cuda->max_shared_per_block));
  auto kernel = decode_kernel<D>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared));
  // Enough splits for every SM to hold as many blocks as fit, each split whole tiles.
  int per_sm = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, 32 * warps, shared));
  const int tiles = (len + kPos - 1) / kPos, want = std::max(1, per_sm) * ctx.cuda->sm_count;
  const int splits0 = std::clamp((want + B * groups - 1) / (B * groups), 1, tiles);
  p.chunk = (tiles + splits0 - 1) / splits0 * kPos;
  p.splits = (len + p.chunk - 1) / p.chunk;
  if (p.splits > 1) {
    const size_t rows = (size_t)B * H;
    p.part_o = static_cast<float*>(cuda::scratch(ctx, sizeof(float) * rows * p.splits * (D + 1)));
    p.part_lse = p.part_o + rows * p.splits * D;
  }
  kernel<<<dim3(p.splits, groups, B), 32 * warps, shared, stream(ctx)>>>(p);
  CUDA_CHECK_LAUNCH();
  if (p.splits > 1) {
    const int rows = B * H;
    combine_kernel<D><<<(rows + 3) / 4, 128, 0, stream(ctx)>>>(dev(out), p.part_o, p.part_lse, rows, p.splits);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace

template <>
void attention_decode<bf16>(const Context& ctx, bf16* out, const bf16* q, const bf16* k_cache, const bf16* v_cache,
                            const QkvLayout& L, int B, int len, int context) {
  T6_TIMED(ctx, "attention decode");
  if (B < 1 || len < 1 || len > context)
    throw std::invalid_argument(fmt::format("attention_decode: {} positions of a {}-position cache, batch {}", len,
                                            context, B));
  switch (L.D) {
    case 32: return decode<32>(ctx, out, q, k_cache, v_cache, L, B, len, context);
    case 64: return decode<64>(ctx, out, q, k_cache, v_cache, L, B, len, context);
    case 128: return decode<128>(ctx, out, q, k_cache, v_cache, L, B, len, context);
    default: throw std::invalid_argument(fmt::format("attention_decode on the GPU: head_dim 32, 64 or 128, got {}", L.D));
  }
}

}  // namespace t6
