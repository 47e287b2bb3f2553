// Causal attention for Hopper (sm_90a), backward (the overview: attention_sm90.cu). Persistent
// blocks, one per SM, each claiming items from a counter as it goes (BwdItem). An item is 128
// keys of one KV head (64 per consumer); the block keeps its K and V in shared memory and walks
// the 64-query tiles at or after them for every query head of its group: Sᵀ = K·Qᵀ and
// dPᵀ = V·dOᵀ, Pᵀ and dSᵀ in registers, dV += Pᵀ·dO and dK += dSᵀ·Q (A from registers), and
// dQ = dS·K from dSᵀ staged in shared memory. dQ tiles are added into an fp32 buffer by bulk
// reductions (one 64×D tile per step, not per-element atomics), issued by writer threads, one
// per staging buffer; in the deterministic mode each (head, query tile) takes its key tiles'
// additions in a fixed order.
#include <algorithm>

#include "kernels/cuda/attention_sm90.cuh"
#include "kernels/cuda/attention_sm90.h"
#include "kernels/cuda/dispatch.h"

namespace t6::cuda {

using namespace sm90;

namespace {

constexpr int kBwdM = 64, kBwdN = 64 * kConsumers;

// lse·log2(e) and delta = rowsum(dO ⊙ O) per (b, h, t), in rows padded to whole query tiles
// (padding: lse +inf, so its probabilities are 0; delta 0). D/8 threads a row, 16 bytes of dO
// and of O each, so a warp has 32/(D/8) rows' loads in flight at once.
template <int D>
__global__ void prepare_kernel(float* lse2, float* delta, const float* lse, const bf* dout, const bf* out, int B,
                               int T, int Tp, int H) {
  constexpr int kLanes = D / 8;
  const size_t row = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / kLanes;  // (b·H + h)·Tp + t
  const bool in_rows = row < (size_t)B * H * Tp;  // (no early return: the whole warp shuffles)
  const int t = row % Tp, part = threadIdx.x % kLanes;
  const size_t bh = row / Tp, b = bh / H, h = bh % H;
  float acc = 0.f;
  if (in_rows && t < T) {
    const size_t at = ((b * T + t) * H + h) * D + part * 8;
    const uint4 x = *reinterpret_cast<const uint4*>(dout + at), y = *reinterpret_cast<const uint4*>(out + at);
    const uint32_t xs[4] = {x.x, x.y, x.z, x.w}, ys[4] = {y.x, y.y, y.z, y.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&xs[i]));
      const float2 c = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&ys[i]));
      acc += a.x * c.x + a.y * c.y;
    }
  }
#pragma unroll
  for (int o = kLanes / 2; o > 0; o /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (in_rows && part == 0) {
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
            const float x = exp2_ftz(fmaf(st[4 * jj + e], a.scale_log2, -lse[2 * jj + (e & 1)]));
            p[4 * jj + e] = 8 * jj + 2 * tig + (e & 1) < rel + 8 * (e / 2) ? 0.f : x;
          }
      } else {
#pragma unroll
        for (int jj = 0; jj < kBwdM / 8; jj++)
#pragma unroll
          for (int e = 0; e < 4; e++) p[4 * jj + e] = exp2_ftz(fmaf(st[4 * jj + e], a.scale_log2, -lse[2 * jj + (e & 1)]));
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
  prepare_kernel<D><<<blocks_for(rows * (D / 8), 256), 256, 0, stream(ctx)>>>(lse2, delta, lse, dout, out, B, T, Tp, H);
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

}  // namespace

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
