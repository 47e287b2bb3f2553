// The parts Hopper's two attention passes share (attention_sm90_forward.cu,
// attention_sm90_backward.cu; the overview is in attention_sm90.cu): the block's roles, the
// K-major product over D features, and the tensor maps the producer's copies read. Device code
// here compiles only for sm_90a.
#pragma once
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/hopper.cuh"

namespace t6::cuda::sm90 {

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

// A (B, T, heads, D) bf16 tensor as tiles of 64 features × 1 head × `rows` positions × 1
// sequence, 128-byte swizzled; positions past T read as zeros.
CUtensorMap tile_map(const bf* base, int B, int T, int heads, int D, int rows);

}  // namespace t6::cuda::sm90
