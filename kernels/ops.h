// The op set. Every op is a plain function of raw backend pointers, explicit shapes and the
// execution context. Two type parameters: A, the activations' type (float or double on the
// CPU backend, bf16 on CUDA), and P, the type of parameter gradients and of statistics that
// need the range (P = A on the CPU, float on CUDA). Shapes use PyTorch's conventions:
// activations are row-major (tokens, features) with N = B·T tokens, and a linear weight is
// (out_features, in_features).
//
// Backward ops overwrite their input gradients unless the comment says "accumulates":
// parameter gradients always accumulate (gradient accumulation over micro-batches), and
// gradients flowing into the residual stream accumulate (x feeds both the branch and the skip).
//
// The ops are declared once, in op_list.inc, and each is dispatched once, by the context's
// backend (dispatch.cpp), to kernels/cpu/ or kernels/cuda/: the element types are the op's
// parameters, not what picks the backend.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/context.h"

namespace t6 {

// Where q, k and v (index 0, 1, 2) come from in a row of the attention's input projection,
// (N, width): either a dense slice of heads·D columns at `dense`, or TPA's factors, A (heads·R
// columns at `a`, index head·R + r) and B (R·D columns at `b`, index r·D + d), contracted as
// (1/R) Σ_r A[h,r]·B[r,:]. RoPE rotates q and k: the rows of B, or each dense head.
struct QkvLayout {
  int width = 0, D = 0;
  int pitch = 0;  // of proj's rows, ≥ width
  int heads[3] = {}, rank[3] = {};  // rank 0: dense
  int a[3] = {}, b[3] = {}, dense[3] = {};
};

// The generation cache's record layout (kernels/cuda/qkv.cu and kernels/cpu/qkv.cpp write it).
int kv_record(const QkvLayout&, int side);    // side 1: k, 2: v; numbers per position
int kv_b_offset(const QkvLayout&, int side);  // where B starts in a factored record
// A decode op launched for position t0 with `at` (op_list.inc) serves positions up to the end
// of t0's block of this many.
constexpr int kDecodePositionsPerLaunch = 64;

#include "kernels/op_list.inc"

// CUDA only: the bf16 compute copy of fp32 weights.
void convert(const Context&, bf16* out, const float* in, size_t n);

}  // namespace t6
