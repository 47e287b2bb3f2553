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

constexpr int kPos = 64;            // cache positions per tile
// A launch's splits depend on the context only through its count of tiles, which stays the same
// within a block of kDecodePositionsPerLaunch positions: a recorded launch serves them all.
static_assert(kPos == kDecodePositionsPerLaunch);
constexpr int kWarpPos = 32;        // of them per warp
constexpr int kPosWarps = kPos / kWarpPos;  // warps sharing a tile's positions
constexpr int kMaxHeadTiles = 8;    // 16 query heads each: up to 128 heads a block
// Tiles in shared memory at once. A third stage was measured slower (fewer blocks fit): the
// kernel waits on its own instructions' latencies more than on memory.
constexpr int kStages = 2;

// One side (k or v) of the cache as a block reads it.
struct Side {
  const bf* cache;
  int record;  // numbers per position in the cache
  int row;     // numbers per position in shared memory: the record (factored), D + 8 (dense)
  int b;       // where B starts in a shared row (factored); 0 for the dense slice
  int ranks;   // R; 1 for a dense cache
};

struct DecodeArgs {
  Side k, v;
  const bf* q;
  bf* out;
  float *part_o, *part_lse;  // per split, when there are several
  int H, block_heads, heads_per_a, len, context, chunk, splits;
  const int* at;  // where given, len − 1 read when the kernel runs (op_list.inc)
  float scale_log2;  // log2(e) / (√D · R_k): the 1/R of the key contraction folded in
  float out_scale;   // 1 / R_v
  bool dense;
};

// Starts the copies of positions pos0 … pos0 + kPos − 1 (zeros from `end` on) of one side into
// shared rows. A factored cache is read whole, the tile's records being one contiguous stretch;
// a dense one takes the block's KV head slice of each record.
template <int D>
__device__ void load_positions(bf* rows, const Side& s, int seq, int group, int pos0, int end, int context,
                               bool dense) {
  const bf* base = s.cache + ((size_t)seq * context + pos0) * s.record;
  if (!dense) {
    const int chunks = kPos * s.record / 8, valid = (end - pos0) * s.record;
    for (int c = threadIdx.x; c < chunks; c += blockDim.x) cp_async16(rows + 8 * c, 8 * c < valid ? base + 8 * c : base, 8 * c < valid);
    return;
  }
  constexpr int C = D / 8;
  for (int c = threadIdx.x; c < kPos * C; c += blockDim.x) {
    const int pos = c / C, d = c % C * 8;
    const bool in = pos0 + pos < end;
    cp_async16(rows + pos * s.row + d, in ? base + (size_t)pos * s.record + group * D + d : base, in);
  }
}

// Warp (head tile, part) of a block: 16 query heads against its part, kWarpPos positions, of
// each tile, with its own running max, sum and output; the block's parts are merged at the end
// through shared memory.
template <int D>
__global__ void decode_kernel(DecodeArgs p) {
  extern __shared__ __align__(16) unsigned char smem[];
  bf* const stage0 = reinterpret_cast<bf*>(smem);
  const int stage_size = kPos * (p.k.row + p.v.row);
  const int split = blockIdx.x, group = blockIdx.y, seq = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gid = lane / 4, tig = lane % 4;
  const int head_tile = warp / kPosWarps, part = warp % kPosWarps, my0 = kWarpPos * part;  // its first position
  const int len = p.at ? *p.at + 1 : p.len;
  const int start = split * p.chunk, end = min(len, start + p.chunk);
  const int tiles = (end - start + kPos - 1) / kPos;
  // Tile t goes to stage t % kStages; every call commits a group (empty past the last tile), so
  // waiting for all but the newest kStages − 1 groups always means tile t has arrived.
  auto load = [&](int t) {
    if (t < tiles) {
      bf* st = stage0 + (t % kStages) * stage_size;
      load_positions<D>(st, p.k, seq, group, start + t * kPos, end, p.context, p.dense);
      load_positions<D>(st + kPos * p.k.row, p.v, seq, group, start + t * kPos, end, p.context, p.dense);
    }
    commit();
  };
  for (int t = 0; t < kStages - 1; t++) load(t);

  // This lane's two rows: block heads 16·head_tile + gid and + 8; the query head and its A head.
  int head[2], a_col[2];
  bool valid[2];
  for (int i = 0; i < 2; i++) {
    const int row = 16 * head_tile + gid + 8 * i;
    valid[i] = row < p.block_heads;
    head[i] = group * p.block_heads + (valid[i] ? row : 0);
    a_col[i] = head[i] / p.heads_per_a;  // × R + r: A's column in a record
  }
  uint32_t qa[D / 16][4];  // Q's A fragments (16 heads × D), zeros for rows past the block's heads
  for (int kk = 0; kk < D / 16; kk++)
    for (int x = 0; x < 4; x++) {
      const int i = x % 2, col = kk * 16 + (x / 2) * 8 + 2 * tig;
      qa[kk][x] = valid[i] ? *reinterpret_cast<const uint32_t*>(p.q + ((size_t)seq * p.H + head[i]) * D + col) : 0u;
    }

  // Shared-memory offsets, fixed for the block: this warp's positions (a lane's four per 16:
  // 2·tig, + 1, + 8, + 9) times the row, plus its heads' column of A.
  constexpr int NT = kWarpPos / 8;  // 8-position column tiles of the scores
  int k_at[NT][2][2], v_at[NT][2][2];  // [column tile][position + 0/1][row i]
#pragma unroll
  for (int n = 0; n < NT; n++)
#pragma unroll
    for (int x = 0; x < 2; x++)
#pragma unroll
      for (int i = 0; i < 2; i++) {
        const int pos = my0 + 8 * n + 2 * tig + x;
        k_at[n][x][i] = pos * p.k.row + a_col[i] * p.k.ranks;
        v_at[n][x][i] = kPos * p.k.row + pos * p.v.row + a_col[i] * p.v.ranks;
      }
  // ldmatrix row addresses: B rows for the scores (non-transposed, n-tiles of positions) and for
  // the values (transposed, k-steps of positions).
  const int k_lm = (my0 + (lane / 16) * 8 + lane % 8) * p.k.row + p.k.b + (lane / 8 % 2) * 8;
  const int v_lm = kPos * p.k.row + (my0 + (lane / 8 % 2) * 8 + lane % 8) * p.v.row + p.v.b + (lane / 16) * 8;

  float o[D / 8][4] = {}, m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  for (int t = 0; t < tiles; t++) {
    const int pos0 = start + t * kPos;
    load(t + kStages - 1);  // into the stage every warp finished with at the end of tile t − 1
    wait<kStages - 1>();
    __syncthreads();
    const bf* st = stage0 + (t % kStages) * stage_size;

    // Scores of 16 heads × kWarpPos positions: sc[n][e] at position 8n + 2·tig + (e & 1) of the
    // warp's, head row gid + 8·(e / 2): Σ_r A_k·(Q·B_k,rᵀ).
    float sc[NT][4] = {};
#pragma unroll 1
    for (int r = 0; r < p.k.ranks; r++) {
      float s[NT][4] = {};
#pragma unroll
      for (int kk = 0; kk < D / 16; kk++)
#pragma unroll
        for (int np = 0; np < NT / 2; np++) {
          uint32_t b[4];
          ldmatrix_x4(b, st + k_lm + np * 16 * p.k.row + r * D + kk * 16);
          mma(s[2 * np], qa[kk], b[0], b[1]);
          mma(s[2 * np + 1], qa[kk], b[2], b[3]);
        }
#pragma unroll
      for (int n = 0; n < NT; n++)
#pragma unroll
        for (int e = 0; e < 4; e++)
          sc[n][e] += (p.dense ? 1.f : __bfloat162float(st[k_at[n][e & 1][e / 2] + r])) * s[n][e];
    }

    // Online softmax over the warp's positions, two rows a lane; positions from `end` on (in
    // the last tile only) are −∞.
    if (pos0 + kPos > end) {
#pragma unroll
      for (int n = 0; n < NT; n++)
#pragma unroll
        for (int e = 0; e < 4; e++)
          if (pos0 + my0 + 8 * n + 2 * tig + (e & 1) >= end) sc[n][e] = -INFINITY;
    }
    float mx[2] = {m[0], m[1]}, shift[2], corr[2], sum[2] = {0.f, 0.f};
#pragma unroll
    for (int n = 0; n < NT; n++)
#pragma unroll
      for (int e = 0; e < 4; e++) mx[e / 2] = fmaxf(mx[e / 2], sc[n][e]);
#pragma unroll
    for (int i = 0; i < 2; i++) {
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
      // A warp may have seen no position before `end` yet (mx = −∞): then nothing changes.
      shift[i] = mx[i] == -INFINITY ? 0.f : mx[i] * p.scale_log2;
      corr[i] = exp2f(m[i] * p.scale_log2 - shift[i]);
      m[i] = mx[i];
    }
#pragma unroll
    for (int n = 0; n < NT; n++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        sc[n][e] = exp2f(fmaf(sc[n][e], p.scale_log2, -shift[e / 2]));
        sum[e / 2] += sc[n][e];
      }
#pragma unroll
    for (int i = 0; i < 2; i++) l[i] = l[i] * corr[i] + sum[i];
#pragma unroll
    for (int j = 0; j < D / 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) o[j][e] *= corr[e / 2];

    // O += (P ⊙ A_v,r)·B_v,r over the warp's positions, k-steps of 16.
#pragma unroll 1
    for (int r = 0; r < p.v.ranks; r++) {
#pragma unroll
      for (int ks = 0; ks < NT / 2; ks++) {
        float pr[2][4];
#pragma unroll
        for (int h = 0; h < 2; h++)
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const int n = 2 * ks + h;
            pr[h][e] = p.dense ? sc[n][e] : sc[n][e] * __bfloat162float(st[v_at[n][e & 1][e / 2] + r]);
          }
        const uint32_t a[4] = {pack(pr[0][0], pr[0][1]), pack(pr[0][2], pr[0][3]), pack(pr[1][0], pr[1][1]),
                               pack(pr[1][2], pr[1][3])};
#pragma unroll
        for (int dp = 0; dp < D / 16; dp++) {
          uint32_t b[4];
          ldmatrix_x4_trans(b, st + v_lm + ks * 16 * p.v.row + r * D + dp * 16);
          mma(o[2 * dp], a, b[0], b[1]);
          mma(o[2 * dp + 1], a, b[2], b[3]);
        }
      }
    }
    __syncthreads();  // the stage is loaded again in the next iteration
  }

  // Merge the parts: each warp leaves its rows' max (log2 units), sum and unnormalized
  // output in shared memory (the stages are done with), then the block's threads combine them.
#pragma unroll
  for (int i = 0; i < 2; i++) {
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
  }
  const int rows = 16 * (blockDim.x / 32 / kPosWarps);  // block rows, padded to whole head tiles
  float* merge_o = reinterpret_cast<float*>(smem);       // [part][row][D]
  float* merge_ml = merge_o + kPosWarps * rows * D;      // [part][row][2]
#pragma unroll
  for (int i = 0; i < 2; i++) {
    const int row = 16 * head_tile + gid + 8 * i;
    float* dst = merge_o + ((size_t)part * rows + row) * D;
#pragma unroll
    for (int j = 0; j < D / 8; j++)
      *reinterpret_cast<float2*>(dst + 8 * j + 2 * tig) = make_float2(o[j][2 * i], o[j][2 * i + 1]);
    if (tig == 0) {
      merge_ml[(part * rows + row) * 2] = m[i] == -INFINITY ? -INFINITY : m[i] * p.scale_log2;
      merge_ml[(part * rows + row) * 2 + 1] = l[i];
    }
  }
  __syncthreads();
  for (int x = threadIdx.x; x < p.block_heads * D; x += blockDim.x) {
    const int row = x / D, d = x % D;
    float mq[kPosWarps], top = -INFINITY;
#pragma unroll
    for (int w = 0; w < kPosWarps; w++) top = fmaxf(top, mq[w] = merge_ml[(w * rows + row) * 2]);
    float sum = 0.f, acc = 0.f;
#pragma unroll
    for (int w = 0; w < kPosWarps; w++) {
      const float weight = mq[w] == -INFINITY ? 0.f : exp2f(mq[w] - top);
      sum += weight * merge_ml[(w * rows + row) * 2 + 1];
      acc += weight * merge_o[((size_t)w * rows + row) * D + d];
    }
    const size_t bh = (size_t)seq * p.H + group * p.block_heads + row;
    if (p.splits == 1) {
      p.out[bh * D + d] = __float2bfloat16(acc * p.out_scale / sum);
    } else {
      p.part_o[(bh * p.splits + split) * D + d] = acc * p.out_scale / sum;
      if (d == 0) p.part_lse[bh * p.splits + split] = top + log2f(sum);
    }
  }
}

// The splits of each (sequence, head), a block each: out = Σ_i w_i·o_i / Σ_i w_i with
// w_i = 2^(lse_i − max). The splits are many when few sequences are decoded (hundreds at batch
// 1), so the block's threads share them: the weights first, then kCombineThreads / D subsets
// of the splits per feature, each summing with several loads in flight.
constexpr int kCombineThreads = 256;

template <int D>
__global__ void __launch_bounds__(kCombineThreads) combine_kernel(bf* out, const float* part_o, const float* part_lse,
                                                                  int splits) {
  constexpr int kSubsets = kCombineThreads / D;
  extern __shared__ float weights[];  // splits of them
  __shared__ float reduce[kCombineThreads];
  const int row = blockIdx.x, tid = threadIdx.x;
  const float* lse = part_lse + (size_t)row * splits;
  float mx = -INFINITY;
  for (int i = tid; i < splits; i += kCombineThreads) mx = fmaxf(mx, lse[i]);
  reduce[tid] = mx;
  __syncthreads();
  for (int n = kCombineThreads / 2; n > 0; n /= 2) {
    if (tid < n) reduce[tid] = fmaxf(reduce[tid], reduce[tid + n]);
    __syncthreads();
  }
  mx = reduce[0];
  __syncthreads();
  float total = 0.f;
  for (int i = tid; i < splits; i += kCombineThreads) total += (weights[i] = exp2f(lse[i] - mx));
  reduce[tid] = total;
  __syncthreads();
  for (int n = kCombineThreads / 2; n > 0; n /= 2) {
    if (tid < n) reduce[tid] += reduce[tid + n];
    __syncthreads();
  }
  total = reduce[0];
  __syncthreads();
  const int d = tid % D, subset = tid / D;
  const float* o = part_o + (size_t)row * splits * D + d;
  float acc = 0.f;
#pragma unroll 8
  for (int i = subset; i < splits; i += kSubsets) acc += weights[i] * o[(size_t)i * D];
  reduce[tid] = acc;
  __syncthreads();
  if (subset == 0) {
    for (int k = 1; k < kSubsets; k++) acc += reduce[k * D + d];
    out[(size_t)row * D + d] = __float2bfloat16(acc / total);
  }
}

template <int D>
void decode(const Context& ctx, bf16* out, const bf16* q, const bf16* k_cache, const bf16* v_cache, const QkvLayout& L,
            int B, int len, int context, const int* at) {
  const int H = L.heads[0], Hkv = L.heads[1];
  const bool dense = L.rank[1] == 0;
  if (dense != (L.rank[2] == 0))
    throw std::invalid_argument("attention_decode on the GPU: keys and values must both be factored or both dense");
  if (Hkv < 1 || H % Hkv || L.heads[2] != Hkv)
    throw std::invalid_argument(fmt::format("attention_decode on the GPU: {} query heads over {} key and {} value heads",
                                            H, Hkv, L.heads[2]));
  DecodeArgs p{};
  auto side = [&](const bf16* cache, int s) {
    const int record = kv_record(L, s);
    return dense ? Side{dev(cache), record, D + 8, 0, 1} : Side{dev(cache), record, record, kv_b_offset(L, s), L.rank[s]};
  };
  p.k = side(k_cache, 1), p.v = side(v_cache, 2);
  p.q = dev(q), p.out = dev(out);
  p.H = H, p.len = len, p.context = context, p.dense = dense, p.at = at;
  p.block_heads = dense ? H / Hkv : H;
  p.heads_per_a = H / Hkv;
  p.scale_log2 = kLog2e / sqrtf((float)D) / (float)p.k.ranks;
  p.out_scale = 1.f / (float)p.v.ranks;
  const int groups = dense ? Hkv : 1, head_tiles = (p.block_heads + 15) / 16;
  if (head_tiles > kMaxHeadTiles)
    throw std::invalid_argument(fmt::format("attention_decode on the GPU: {} query heads a block, at most {}",
                                            p.block_heads, 16 * kMaxHeadTiles));
  const int threads = 32 * kPosWarps * head_tiles;
  const size_t stage = sizeof(bf) * (size_t)kPos * (p.k.row + p.v.row);
  const size_t merge = sizeof(float) * (size_t)kPosWarps * 16 * head_tiles * (D + 2);
  const size_t shared = std::max(kStages * stage, merge);
  if (shared > ctx.cuda->max_shared_per_block)
    throw std::invalid_argument(fmt::format("attention_decode on the GPU: ranks {} / {} with {} heads need {} bytes of "
                                            "shared memory for {} tiles of {} positions; a block may use {}",
                                            L.rank[1], L.rank[2], H, shared, kStages, kPos,
                                            ctx.cuda->max_shared_per_block));
  auto kernel = decode_kernel<D>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared));
  int per_sm = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, shared));
  // Enough splits for every SM to hold as many blocks as fit, in one wave, each split whole tiles.
  const int tiles = (len + kPos - 1) / kPos, want = std::max(per_sm, 1) * ctx.cuda->sm_count;
  const int splits0 = std::clamp(want / (B * groups), 1, tiles);
  p.chunk = (tiles + splits0 - 1) / splits0 * kPos;
  p.splits = (len + p.chunk - 1) / p.chunk;
  if (p.splits > 1) {
    const size_t rows = (size_t)B * H;
    p.part_o = static_cast<float*>(cuda::scratch(ctx, sizeof(float) * rows * p.splits * (D + 1)));
    p.part_lse = p.part_o + rows * p.splits * D;
  }
  kernel<<<dim3(p.splits, groups, B), threads, shared, stream(ctx)>>>(p);
  CUDA_CHECK_LAUNCH();
  if (p.splits > 1) {
    const int rows = B * H;
    combine_kernel<D><<<rows, kCombineThreads, sizeof(float) * p.splits, stream(ctx)>>>(dev(out), p.part_o,
                                                                                         p.part_lse, p.splits);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace

template <>
void cuda::attention_decode<bf16>(const Context& ctx, bf16* out, const bf16* q, const bf16* k_cache, const bf16* v_cache,
                            const QkvLayout& L, int B, int len, int context, const int* at) {
  T6_TIMED(ctx, "attention decode");
  if (B < 1 || len < 1 || len > context)
    throw std::invalid_argument(fmt::format("attention_decode: {} positions of a {}-position cache, batch {}", len,
                                            context, B));
  switch (L.D) {
    case 32: return decode<32>(ctx, out, q, k_cache, v_cache, L, B, len, context, at);
    case 64: return decode<64>(ctx, out, q, k_cache, v_cache, L, B, len, context, at);
    case 128: return decode<128>(ctx, out, q, k_cache, v_cache, L, B, len, context, at);
    default: throw std::invalid_argument(fmt::format("attention_decode on the GPU: head_dim 32, 64 or 128, got {}", L.D));
  }
}

}  // namespace t6
