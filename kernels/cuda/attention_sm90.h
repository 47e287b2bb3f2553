// Hopper's attention kernels (attention_sm90*.cu, built for sm_90a only); attention.cu
// dispatches to them. Same layouts and results as the op set's attention (kernels/ops.h).
#pragma once
#include "kernels/context.h"

namespace t6::cuda {

// Whether this GPU runs them for head_dim D with these tensors (16-byte aligned).
bool attention_sm90_supports(const Context&, const void* const* tensors, int n, int D);
// persistent: one block per SM walking many tiles (else a block per tile, for comparison).
void attention_forward_sm90(const Context&, bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, int B,
                            int T, int H, int Hkv, int D, bool persistent);
// deterministic: dQ's additions in a fixed order, so repeated calls agree bitwise.
void attention_backward_sm90(const Context&, bf16* dq, bf16* dk, bf16* dv, const bf16* dout, const bf16* q,
                             const bf16* k, const bf16* v, const bf16* out, const float* lse, int B, int T, int H,
                             int Hkv, int D, bool deterministic, bool persistent);

}  // namespace t6::cuda
