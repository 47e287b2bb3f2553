// Tensor-core building blocks of the sm_80 kernels (attention, decode): mma.sync m16n8k16 in
// bf16 with fp32 accumulation, ldmatrix fragment loads from shared memory, cp.async groups.
#pragma once
#include "kernels/cuda/common.cuh"

namespace t6::cuda {

// c += a·b for one 16×8×16 tile (PTX ISA fragment layouts: a row-major 16×16, b 16×8, c 16×8).
__device__ inline void mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8×8 bf16 matrices, transposed on the way: lane l gives the address of row l % 8 of
// matrix l / 8.
__device__ inline void ldmatrix_x4_trans(uint32_t r[4], const bf* row_address) {
  const uint32_t s = (uint32_t)__cvta_generic_to_shared(row_address);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}

__device__ inline void ldmatrix_x4(uint32_t r[4], const bf* row_address) {
  const uint32_t s = (uint32_t)__cvta_generic_to_shared(row_address);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}

// The A fragment (16 rows × 16 columns at (row0, col0)) of a row-major tile in shared memory.
template <int LD>
__device__ inline void load_a(uint32_t a[4], const bf* tile, int row0, int col0, int lane) {
  ldmatrix_x4(a, tile + (row0 + (lane / 8 % 2) * 8 + lane % 8) * LD + col0 + (lane / 16) * 8);
}

// B fragments of two n-tiles (rows n0 and n0 + 8 of a row-major [n][k] tile) at k-step col0:
// b[0], b[1] for n-tile n0 and b[2], b[3] for n-tile n0 + 8.
template <int LD>
__device__ inline void load_b_pair(uint32_t b[4], const bf* tile, int n0, int col0, int lane) {
  ldmatrix_x4(b, tile + (n0 + (lane / 16) * 8 + lane % 8) * LD + col0 + (lane / 8 % 2) * 8);
}

// Starts a 16-byte copy from global to shared memory; with in false, writes 16 zero bytes
// instead (src must still be a valid address).
__device__ inline void cp_async16(bf* dst, const bf* src, bool in) {
  const uint32_t to = (uint32_t)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(to), "l"(src), "r"(in ? 16 : 0));
}
__device__ inline void commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ inline void wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// acc (16 × D, per warp) += A (16 × 64, from registers) · tile (64 × D, row-major in shared).
template <int D>
__device__ inline void mma_tile_b_trans(float acc[][4], const uint32_t a[4][4], const bf* tile, int lane) {
  constexpr int LD = D + 8;
  const int mi = lane / 8, ri = lane % 8;
#pragma unroll
  for (int kk = 0; kk < 4; kk++)
#pragma unroll
    for (int dp = 0; dp < D / 16; dp++) {
      uint32_t r[4];
      ldmatrix_x4_trans(r, tile + (kk * 16 + (mi % 2) * 8 + ri) * LD + dp * 16 + (mi / 2) * 8);
      mma(acc[2 * dp], a[kk], r[0], r[1]);
      mma(acc[2 * dp + 1], a[kk], r[2], r[3]);
    }
}

// The C fragments of a 16 × 64 product, as A fragments (16 × 16 each) of the next product.
__device__ inline void c_to_a(uint32_t a[4][4], const float c[8][4]) {
#pragma unroll
  for (int kk = 0; kk < 4; kk++) {
    a[kk][0] = pack(c[2 * kk][0], c[2 * kk][1]);
    a[kk][1] = pack(c[2 * kk][2], c[2 * kk][3]);
    a[kk][2] = pack(c[2 * kk + 1][0], c[2 * kk + 1][1]);
    a[kk][3] = pack(c[2 * kk + 1][2], c[2 * kk + 1][3]);
  }
}

}  // namespace t6::cuda
