// Fused causal attention in the flash-attention style (tiles in shared memory, online
// softmax, tensor-core mma.sync m16n8k16 in bf16 with fp32 accumulation); no T×T matrix ever
// reaches device memory. Layouts as the op set says: q, out (B,T,H,D); k, v (B,T,Hkv,D);
// lse (B,H,T). Query head h reads KV head h / (H/Hkv).
//
// Forward: a block of 4 warps owns 64 query rows (16 per warp) and walks the key tiles up to
// the diagonal. Backward: a block owns 64 keys of one KV head and walks every query tile at or
// after it, for each query head of the group, accumulating dK and dV in registers; dQ is
// summed across blocks with fp32 atomics into a scratch buffer, then converted.
#include <fmt/format.h>

#include <stdexcept>

#include "kernels/cuda/attention_sm90.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/mma.cuh"

namespace t6 {

using namespace cuda;

namespace {

constexpr int kTile = 64, kThreads = 128;

// Starts copying rows [row0, row0 + kRows) of a (T, ·) matrix whose rows are `stride` elements
// apart, D wide, into a shared tile with leading dimension D + 8 (cp.async, 16 bytes a
// thread at a time; rows past T become zeros). commit() closes the group of copies issued so
// far; wait<n>() waits until at most n groups are in flight.
template <int D, int kRows = kTile>
__device__ void load_tile(bf* tile, const bf* src, int row0, int T, size_t stride) {
  constexpr int kChunks = D / 8;  // 16-byte pieces per row
  for (int c = threadIdx.x; c < kRows * kChunks; c += blockDim.x) {
    const int r = c / kChunks, col = (c % kChunks) * 8;
    const bool in = row0 + r < T;
    cp_async16(tile + r * (D + 8) + col, in ? src + (size_t)(row0 + r) * stride + col : src, in);
  }
}
template <int D>
__global__ void __launch_bounds__(kThreads) attention_forward_kernel(bf* out, float* lse, const bf* q, const bf* k,
                                                                     const bf* v, int T, int H, int Hkv,
                                                                     float scale_log2) {
  constexpr int LD = D + 8;
  extern __shared__ __align__(16) unsigned char smem[];
  bf* Qs = reinterpret_cast<bf*>(smem);
  bf* Kbuf = Qs + kTile * LD;      // two K tiles, then two V tiles: the next pair loads while
  bf* Vbuf = Kbuf + 2 * kTile * LD;  // this one is in use
  const int qtile = gridDim.x - 1 - blockIdx.x;  // the longest rows first
  const int b = blockIdx.y / H, h = blockIdx.y % H, kvh = h / (H / Hkv);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gid = lane / 4, tig = lane % 4;
  const int q0 = qtile * kTile;
  const size_t qstride = (size_t)H * D, kstride = (size_t)Hkv * D;
  const bf* qbase = q + (size_t)b * T * qstride + (size_t)h * D;
  const bf* kbase = k + (size_t)b * T * kstride + (size_t)kvh * D;
  const bf* vbase = v + (size_t)b * T * kstride + (size_t)kvh * D;

  load_tile<D>(Qs, qbase, q0, T, qstride);
  load_tile<D>(Kbuf, kbase, 0, T, kstride);
  load_tile<D>(Vbuf, vbase, 0, T, kstride);
  commit();
  wait<0>();
  __syncthreads();
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++) load_a<LD>(qf[kk], Qs, warp * 16, kk * 16, lane);

  float o[D / 8][4] = {};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const int rows[2] = {q0 + warp * 16 + gid, q0 + warp * 16 + gid + 8};
  for (int kt = 0; kt <= qtile; kt++) {
    const bf *Ks = Kbuf + (kt & 1) * kTile * LD, *Vs = Vbuf + (kt & 1) * kTile * LD;
    if (kt < qtile) {  // the other buffers were last read in iteration kt − 1, before its closing barrier
      load_tile<D>(Kbuf + ((kt + 1) & 1) * kTile * LD, kbase, (kt + 1) * kTile, T, kstride);
      load_tile<D>(Vbuf + ((kt + 1) & 1) * kTile * LD, vbase, (kt + 1) * kTile, T, kstride);
      commit();
      wait<1>();
    } else {
      wait<0>();
    }
    __syncthreads();
    float s[8][4] = {};
#pragma unroll
    for (int np = 0; np < 4; np++)
#pragma unroll
      for (int kk = 0; kk < D / 16; kk++) {
        uint32_t kb[4];
        load_b_pair<LD>(kb, Ks, np * 16, kk * 16, lane);
        mma(s[2 * np], qf[kk], kb[0], kb[1]);
        mma(s[2 * np + 1], qf[kk], kb[2], kb[3]);
      }
    // Scores stay raw (m too); the scale is folded into the exponent's FMA. Only the diagonal
    // tile, and a tile running past T, need the mask.
    if (kt == qtile || (kt + 1) * kTile > T) {
#pragma unroll
      for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int key = kt * kTile + nt * 8 + tig * 2 + (e & 1);
          if (key > rows[e / 2] || key >= T) s[nt][e] = -INFINITY;
        }
    }
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int nt = 0; nt < 8; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) mx[e / 2] = fmaxf(mx[e / 2], s[nt][e]);
    float corr[2], shift[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
      corr[i] = mx[i] == -INFINITY ? 1.f : exp2f((m[i] - mx[i]) * scale_log2);
      m[i] = mx[i];
      shift[i] = mx[i] == -INFINITY ? 0.f : mx[i] * scale_log2;
      l[i] *= corr[i];  // per-thread partial sums: the quad shares m, so they add up at the end
    }
#pragma unroll
    for (int nt = 0; nt < 8; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        s[nt][e] = exp2f(fmaf(s[nt][e], scale_log2, -shift[e / 2]));  // exp2(−inf) = 0
        l[e / 2] += s[nt][e];
      }
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) {
      o[dt][0] *= corr[0], o[dt][1] *= corr[0];
      o[dt][2] *= corr[1], o[dt][3] *= corr[1];
    }
    uint32_t pa[4][4];
    c_to_a(pa, s);
    mma_tile_b_trans<D>(o, pa, Vs, lane);
    __syncthreads();  // this K and V are free for the load issued next iteration
  }
#pragma unroll
  for (int i = 0; i < 2; i++) {
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
  }
#pragma unroll
  for (int i = 0; i < 2; i++) {
    if (rows[i] >= T) continue;
    const float inv = 1.f / l[i];
    bf* orow = out + ((size_t)b * T + rows[i]) * qstride + (size_t)h * D;
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++)
      *reinterpret_cast<uint32_t*>(orow + dt * 8 + tig * 2) = pack(o[dt][2 * i] * inv, o[dt][2 * i + 1] * inv);
    if (tig == 0) lse[((size_t)b * H + h) * T + rows[i]] = (m[i] * scale_log2 + log2f(l[i])) * kLn2;
  }
}

// delta = rowsum(dO ⊙ O) per (b, h, t), one warp per row; the softmax backward's correction.
__global__ void attention_delta_kernel(float* delta, const bf* dout, const bf* out, int N, int T, int H, int D) {
  const size_t row = blockIdx.x * (size_t)(blockDim.x / 32) + threadIdx.x / 32;  // (b·T + t)·H + h
  if (row >= (size_t)N * H) return;
  float acc = 0.f;
  for (int d = threadIdx.x % 32; d < D; d += 32)
    acc += __bfloat162float(dout[row * D + d]) * __bfloat162float(out[row * D + d]);
  acc = warp_sum(acc);
  const size_t n = row / H, h = row % H, b = n / T, t = n % T;
  if (threadIdx.x % 32 == 0) delta[(b * H + h) * T + t] = acc;
}

__global__ void convert_dq_kernel(bf* dq, const float* acc, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    dq[i] = __float2bfloat16(acc[i]);
}

// Backward: kBwdWarps warps of 16 keys each. (8 warps, 128 keys, halve the L2 traffic of
// query tiles and dQ sums per key, but measured no faster on an H100 than 4.)
constexpr int kBwdWarps = 4, kBwdKeys = 16 * kBwdWarps;

template <int D>
__global__ void __launch_bounds__(32 * kBwdWarps, 1) attention_backward_kernel(
    float* dq_acc, bf* dk, bf* dv, const bf* dout, const bf* q, const bf* k, const bf* v, const float* lse,
    const float* delta, int T, int H, int Hkv, float scale, float scale_log2) {
  constexpr int LD = D + 8, LDS = kTile + 8;
  extern __shared__ __align__(16) unsigned char smem[];
  bf* Ks = reinterpret_cast<bf*>(smem);
  bf* Vs = Ks + kBwdKeys * LD;
  bf* Qbuf = Vs + kBwdKeys * LD;       // two Q tiles and two dO tiles: the next query tile
  bf* dObuf = Qbuf + 2 * kTile * LD;   // loads while this one is in use
  bf* dSt = dObuf + 2 * kTile * LD;    // dSᵀ of the tile pair: [key][query]
  float* stats = reinterpret_cast<float*>(dSt + kBwdKeys * LDS);  // [buffer][lse·log2e | delta][64]

  const int kt = blockIdx.x, b = blockIdx.y / Hkv, kvh = blockIdx.y % Hkv, group = H / Hkv;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gid = lane / 4, tig = lane % 4, mi = lane / 8,
            ri = lane % 8;
  const int k0 = kt * kBwdKeys, ntiles = (T + kTile - 1) / kTile;
  const size_t qstride = (size_t)H * D, kstride = (size_t)Hkv * D;
  load_tile<D, kBwdKeys>(Ks, k + (size_t)b * T * kstride + (size_t)kvh * D, k0, T, kstride);
  load_tile<D, kBwdKeys>(Vs, v + (size_t)b * T * kstride + (size_t)kvh * D, k0, T, kstride);
  const int keys[2] = {k0 + warp * 16 + gid, k0 + warp * 16 + gid + 8};
  float dK[D / 8][4] = {}, dV[D / 8][4] = {};

  // The (head, query tile) pairs this block visits, in order; pair i uses buffer i & 1. Query
  // tiles start at the block's first key: earlier queries see none of its keys.
  const int first = k0 / kTile, per_head = ntiles - first, pairs = group * per_head;
  auto issue = [&](int i) {
    const int h = kvh * group + i / per_head, q0 = (first + i % per_head) * kTile;
    load_tile<D>(Qbuf + (i & 1) * kTile * LD, q + (size_t)b * T * qstride + (size_t)h * D, q0, T, qstride);
    load_tile<D>(dObuf + (i & 1) * kTile * LD, dout + (size_t)b * T * qstride + (size_t)h * D, q0, T, qstride);
    float* st = stats + (i & 1) * 2 * kTile;
    for (int j = threadIdx.x; j < kTile; j += blockDim.x) {
      const bool in = q0 + j < T;
      st[j] = in ? lse[((size_t)b * H + h) * T + q0 + j] * kLog2e : 0.f;
      st[kTile + j] = in ? delta[((size_t)b * H + h) * T + q0 + j] : 0.f;
    }
    commit();
  };
  issue(0);
  for (int pair = 0; pair < pairs; pair++) {
    const int h = kvh * group + pair / per_head, q0 = (first + pair % per_head) * kTile;
    const bf *Qs = Qbuf + (pair & 1) * kTile * LD, *dOs = dObuf + (pair & 1) * kTile * LD;
    const float *lse_s = stats + (pair & 1) * 2 * kTile, *delta_s = lse_s + kTile;
    if (pair + 1 < pairs) {  // the other buffers were last read in pair − 1, before its closing barrier
      issue(pair + 1);
      wait<1>();
    } else {
      wait<0>();
    }
    __syncthreads();
    if (q0 + kTile > keys[0] - gid) {  // this warp's keys see some of the tile's queries
      // Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ for this warp's 16 keys × 64 queries.
      float st[8][4] = {}, dpt[8][4] = {};
#pragma unroll
      for (int kk = 0; kk < D / 16; kk++) {
        uint32_t ka[4], va[4];
        load_a<LD>(ka, Ks, warp * 16, kk * 16, lane);
        load_a<LD>(va, Vs, warp * 16, kk * 16, lane);
#pragma unroll
        for (int np = 0; np < 4; np++) {
          uint32_t qb[4], db[4];
          load_b_pair<LD>(qb, Qs, np * 16, kk * 16, lane);
          load_b_pair<LD>(db, dOs, np * 16, kk * 16, lane);
          mma(st[2 * np], ka, qb[0], qb[1]);
          mma(st[2 * np + 1], ka, qb[2], qb[3]);
          mma(dpt[2 * np], va, db[0], db[1]);
          mma(dpt[2 * np + 1], va, db[2], db[3]);
        }
      }
      // Pᵀ, then dSᵀ = Pᵀ ⊙ (dPᵀ − delta)·scale. Only pairs that touch the diagonal or T
      // need the mask.
      const bool masked = q0 < k0 + kBwdKeys || q0 + kTile > T || k0 + kBwdKeys > T;
#pragma unroll
      for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int qi = nt * 8 + tig * 2 + (e & 1), query = q0 + qi, key = keys[e / 2];
          float p = exp2f(fmaf(st[nt][e], scale_log2, -lse_s[qi]));
          if (masked && (query < key || query >= T || key >= T)) p = 0.f;
          st[nt][e] = p;
          dpt[nt][e] = p * (dpt[nt][e] - delta_s[qi]) * scale;
        }
      uint32_t a[4][4];
      c_to_a(a, st);
      mma_tile_b_trans<D>(dV, a, dOs, lane);  // dV += Pᵀ·dO
      c_to_a(a, dpt);
      mma_tile_b_trans<D>(dK, a, Qs, lane);   // dK += dSᵀ·Q
#pragma unroll
      for (int nt = 0; nt < 8; nt++) {
        *reinterpret_cast<uint32_t*>(dSt + (warp * 16 + gid) * LDS + nt * 8 + tig * 2) = pack(dpt[nt][0], dpt[nt][1]);
        *reinterpret_cast<uint32_t*>(dSt + (warp * 16 + gid + 8) * LDS + nt * 8 + tig * 2) = pack(dpt[nt][2], dpt[nt][3]);
      }
    } else {  // no query of the tile sees these keys: their dS is zero
#pragma unroll
      for (int nt = 0; nt < 8; nt++) {
        *reinterpret_cast<uint32_t*>(dSt + (warp * 16 + gid) * LDS + nt * 8 + tig * 2) = 0;
        *reinterpret_cast<uint32_t*>(dSt + (warp * 16 + gid + 8) * LDS + nt * 8 + tig * 2) = 0;
      }
    }
    __syncthreads();

    // dQ (64 queries × D) += dS·K over the block's keys: warp w takes queries 16·(w % 4) and
    // its share of D, and adds its part into the fp32 sums.
    {
      constexpr int kHalf = D / (kBwdWarps / 4);
      const int qg = warp % 4, d0 = (warp / 4) * kHalf;
      float dq[kHalf / 8][4] = {};
#pragma unroll
      for (int kk = 0; kk < kBwdKeys / 16; kk++) {
        uint32_t dsa[4];
        ldmatrix_x4_trans(dsa, dSt + (kk * 16 + (mi / 2) * 8 + ri) * LDS + qg * 16 + (mi % 2) * 8);
#pragma unroll
        for (int dp = 0; dp < kHalf / 16; dp++) {
          uint32_t r[4];
          ldmatrix_x4_trans(r, Ks + (kk * 16 + (mi % 2) * 8 + ri) * LD + d0 + dp * 16 + (mi / 2) * 8);
          mma(dq[2 * dp], dsa, r[0], r[1]);
          mma(dq[2 * dp + 1], dsa, r[2], r[3]);
        }
      }
#pragma unroll
      for (int i = 0; i < 2; i++) {
        const int row = q0 + qg * 16 + gid + 8 * i;
        if (row >= T) continue;
        float* dst = dq_acc + ((size_t)b * T + row) * qstride + (size_t)h * D + d0;
#pragma unroll
        for (int dt = 0; dt < kHalf / 8; dt++) {
#if __CUDA_ARCH__ >= 900
          atomicAdd(reinterpret_cast<float2*>(dst + dt * 8 + tig * 2), make_float2(dq[dt][2 * i], dq[dt][2 * i + 1]));
#else
          atomicAdd(dst + dt * 8 + tig * 2, dq[dt][2 * i]);
          atomicAdd(dst + dt * 8 + tig * 2 + 1, dq[dt][2 * i + 1]);
#endif
        }
      }
    }
    __syncthreads();  // this pair's buffers and dSt are free for the next pair
  }
#pragma unroll
  for (int i = 0; i < 2; i++) {
    if (keys[i] >= T) continue;
    const size_t at = ((size_t)b * T + keys[i]) * kstride + (size_t)kvh * D;
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) {
      *reinterpret_cast<uint32_t*>(dk + at + dt * 8 + tig * 2) = pack(dK[dt][2 * i], dK[dt][2 * i + 1]);
      *reinterpret_cast<uint32_t*>(dv + at + dt * 8 + tig * 2) = pack(dV[dt][2 * i], dV[dt][2 * i + 1]);
    }
  }
}

template <int D>
void forward(const Context& ctx, bf* out, float* lse, const bf* q, const bf* k, const bf* v, int B, int T, int H,
             int Hkv) {
  const size_t shared = 5 * kTile * (D + 8) * sizeof(bf);
  CUDA_CHECK(cudaFuncSetAttribute(attention_forward_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared));
  const dim3 grid((T + kTile - 1) / kTile, B * H);
  attention_forward_kernel<D><<<grid, kThreads, shared, stream(ctx)>>>(out, lse, q, k, v, T, H, Hkv,
                                                                      kLog2e / sqrtf((float)D));
  CUDA_CHECK_LAUNCH();
}

template <int D>
void backward(const Context& ctx, float* dq_acc, bf* dk, bf* dv, const bf* dout, const bf* q, const bf* k, const bf* v,
              const float* lse, const float* delta, int B, int T, int H, int Hkv) {
  const size_t shared = (2 * kBwdKeys * (D + 8) + 4 * kTile * (D + 8) + kBwdKeys * (kTile + 8)) * sizeof(bf) +
                        4 * kTile * sizeof(float);
  auto kernel = attention_backward_kernel<D>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared));
  const dim3 grid((T + kBwdKeys - 1) / kBwdKeys, B * Hkv);
  const float scale = 1.f / sqrtf((float)D);
  kernel<<<grid, 32 * kBwdWarps, shared, stream(ctx)>>>(dq_acc, dk, dv, dout, q, k, v, lse, delta, T,
                                                                       H, Hkv, scale, scale * kLog2e);
  CUDA_CHECK_LAUNCH();
}

// FlashAttention's count for the forward pass: two products over half of the T×T matrix (the
// backward's five: 2.5 times this), so TFLOP/s compare with its published figures and cuDNN's.
double causal_flops(int B, int T, int H, int D) { return 4.0 * B * H * (double)T * T * D / 2; }

// Hopper's kernels where they run (versions 2 and 3 insist on them), else mma.sync.
bool use_sm90(const Context& ctx, const void* const* tensors, int n, int D) {
  const int version = ctx.cuda->attention_version;
  if (version == 1) return false;
  const bool ok = attention_sm90_supports(ctx, tensors, n, D);
  if (version >= 2 && !ok)
    throw std::invalid_argument(fmt::format("the Hopper attention kernels need an sm_90 GPU, head_dim 64 or 128 "
                                            "and 16-byte aligned tensors (head_dim {})", D));
  return ok;
}

[[noreturn]] void unsupported(int D) {
  throw std::invalid_argument(fmt::format("model.head_dim: the CUDA attention supports 32, 64 and 128, got {}", D));
}

}  // namespace

template <>
void cuda::attention_forward<bf16, float>(const Context& ctx, bf16* out, float* lse, const bf16* q, const bf16* k,
                                    const bf16* v, int B, int T, int H, int Hkv, int D) {
  cuda::OpTimer timer(ctx, "attention forward", causal_flops(B, T, H, D));
  const void* tensors[] = {out, q, k, v};
  if (use_sm90(ctx, tensors, 4, D))
    return attention_forward_sm90(ctx, out, lse, q, k, v, B, T, H, Hkv, D, ctx.cuda->attention_version != 3);
  switch (D) {
    case 32: return forward<32>(ctx, dev(out), lse, dev(q), dev(k), dev(v), B, T, H, Hkv);
    case 64: return forward<64>(ctx, dev(out), lse, dev(q), dev(k), dev(v), B, T, H, Hkv);
    case 128: return forward<128>(ctx, dev(out), lse, dev(q), dev(k), dev(v), B, T, H, Hkv);
    default: unsupported(D);
  }
}

template <>
void cuda::attention_backward<bf16, float>(const Context& ctx, bf16* dq, bf16* dk, bf16* dv, const bf16* dout,
                                     const bf16* q, const bf16* k, const bf16* v, const bf16* out, const float* lse,
                                     int B, int T, int H, int Hkv, int D) {
  cuda::OpTimer timer(ctx, "attention backward", 2.5 * causal_flops(B, T, H, D));
  const void* tensors[] = {dq, dk, dv, dout, q, k, v, out};
  if (use_sm90(ctx, tensors, 8, D))
    return attention_backward_sm90(ctx, dq, dk, dv, dout, q, k, v, out, lse, B, T, H, Hkv, D,
                                   ctx.cuda->deterministic, ctx.cuda->attention_version != 3);
  const size_t N = (size_t)B * T, nq = N * H * D;
  // Scratch: the fp32 dQ sums, then delta.
  float* dq_acc = static_cast<float*>(cuda::scratch(ctx, sizeof(float) * (nq + N * H)));
  float* delta = dq_acc + nq;
  CUDA_CHECK(cudaMemsetAsync(dq_acc, 0, sizeof(float) * nq, stream(ctx)));
  attention_delta_kernel<<<blocks_for(N * H * 32, 256), 256, 0, stream(ctx)>>>(delta, dev(dout), dev(out), (int)N, T,
                                                                             H, D);
  CUDA_CHECK_LAUNCH();
  switch (D) {
    case 32: backward<32>(ctx, dq_acc, dev(dk), dev(dv), dev(dout), dev(q), dev(k), dev(v), lse, delta, B, T, H, Hkv); break;
    case 64: backward<64>(ctx, dq_acc, dev(dk), dev(dv), dev(dout), dev(q), dev(k), dev(v), lse, delta, B, T, H, Hkv); break;
    case 128: backward<128>(ctx, dq_acc, dev(dk), dev(dv), dev(dout), dev(q), dev(k), dev(v), lse, delta, B, T, H, Hkv); break;
    default: unsupported(D);
  }
  convert_dq_kernel<<<blocks_for(nq, 256), 256, 0, stream(ctx)>>>(dev(dq), dq_acc, nq);
  CUDA_CHECK_LAUNCH();
}

}  // namespace t6
