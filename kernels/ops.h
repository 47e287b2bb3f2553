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
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/context.h"

namespace t6 {

// out[n,:] = wte[tokens[n],:]. Backward accumulates into dwte (V rows), in token order on both
// backends, so repeated tokens sum the same way every run.
template <class A> void embedding_forward(const Context&, A* out, const int32_t* tokens, const A* wte, int N, int C);
template <class A, class P>
void embedding_backward(const Context&, P* dwte, const A* dout, const int32_t* tokens, int N, int C, int V);

// out = inp / sqrt(mean(inp²) + eps) per row, no weight; rstd (N) is kept for backward.
// The residual form first adds the branch into the stream: x_out = x + branch, out = rmsnorm(x_out).
// Backward accumulates into dinp (the stream's gradient, which is also the branch's).
template <class A, class P> void rmsnorm_forward(const Context&, A* out, P* rstd, const A* inp, int N, int C, double eps);
template <class A, class P> void residual_rmsnorm_forward(const Context&, A* x_out, A* out, P* rstd, const A* x,
                                                          const A* branch, int N, int C, double eps);
template <class A, class P> void rmsnorm_backward(const Context&, A* dinp, const A* dout, const A* inp, const P* rstd, int N, int C);

// out (M,N) = inp (M,K) · weight (N,K)ᵀ. Backward: dinp = dout·weight (or += with
// accumulate), and dweight += doutᵀ·inp (accumulates). ld_in and ld_out are the row pitches
// of inp/dinp and out/dout when their rows are padded (0: K and N). The GPU's fast matmul
// kernels want every dimension and pitch a multiple of 8, so the model rounds K or N up into
// the padding where it can (see model/t6.cpp).
template <class A> void matmul_forward(const Context&, A* out, const A* inp, const A* weight, int M, int K, int N,
                                       int ld_in = 0, int ld_out = 0);
template <class A> void matmul_backward_input(const Context&, A* dinp, const A* dout, const A* weight, int M, int K,
                                              int N, int ld_in = 0, int ld_out = 0, bool accumulate = false);
template <class A, class P> void matmul_backward_weight(const Context&, P* dweight, const A* dout, const A* inp, int M,
                                                        int K, int N, int ld_in = 0, int ld_out = 0);

// Copies between a dense (rows, cols) matrix and one whose rows are `pitch` apart (the
// padded compute copy of a weight whose width is not a multiple of 8, and its gradient):
// to_pitch converts (fp32 → bf16 on CUDA), add_from_pitch accumulates.
template <class A, class P> void copy_to_pitch(const Context&, A* dst, const P* src, int rows, int cols, int pitch);
template <class P> void add_from_pitch(const Context&, P* dst, const P* src, int rows, int cols, int pitch);

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
// q (B,T,H,D), k and v (B,T,Hkv,D) from proj (B·T, width), row t of each sequence at position
// t0 + t (RoPE's angle). Backward writes every column of dproj.
template <class A>
void qkv_forward(const Context&, A* q, A* k, A* v, const A* proj, const QkvLayout&, int B, int T_, int t0 = 0);
template <class A> void qkv_backward(const Context&, A* dproj, const A* dq, const A* dk, const A* dv, const A* proj,
                                     const QkvLayout&, int B, int T_);

// Causal softmax attention, q (B,T,H,D), k and v (B,T,Hkv,D), out (B,T,H,D); query head h
// reads KV head h / (H/Hkv). lse (B,H,T) keeps each row's log-sum-exp of the scaled scores,
// from which backward recomputes the probabilities (no T×T matrix is kept).
template <class A, class P> void attention_forward(const Context&, A* out, P* lse, const A* q, const A* k, const A* v,
                                                   int B, int T_, int H, int Hkv, int D);
template <class A, class P> void attention_backward(const Context&, A* dq, A* dk, A* dv, const A* dout, const A* q,
                                                    const A* k, const A* v, const A* out, const P* lse, int B, int T_,
                                                    int H, int Hkv, int D);

// Generation's key/value cache, one layer: `context` positions per sequence, each position a
// k record and a v record. A dense k or v (rank 0) is its Hkv·D slice (k rotated at its
// position); a factored one is A (heads·R, as projected, zeros after it up to a multiple of 8
// so that B starts 16-byte aligned for the GPU's loads) then B (R·D; B_k rotated), from which
// attention_decode contracts keys and values: TPA's cache holds about (H + D)·R numbers per
// side instead of H·D. kv_cache_store writes positions t0 … t0 + T − 1 of B sequences from the
// stacked projection's rows (B·T rows of `proj`).
int kv_record(const QkvLayout&, int side);    // side 1: k, 2: v; numbers per position
int kv_b_offset(const QkvLayout&, int side);  // where B starts in a factored record
template <class A>
void kv_cache_store(const Context&, A* k_cache, A* v_cache, const A* proj, const QkvLayout&, int B, int T_, int t0,
                    int context);
// One new query per sequence (q: B, H, D, at position len − 1) against positions 0 … len − 1
// of its cache; out (B, H, D). Query head h reads KV head h / (H/Hkv), as attention_forward.
template <class A>
void attention_decode(const Context&, A* out, const A* q, const A* k_cache, const A* v_cache, const QkvLayout&, int B,
                      int len, int context);

// out (N,F) = silu(a) ⊙ b where each row of fc (N,2F) is [a | b]; ld_fc and ld_out are the
// row pitches of fc/dfc and out/dout (0: 2F and F).
template <class A> void swiglu_forward(const Context&, A* out, const A* fc, int N, int F, int ld_fc = 0, int ld_out = 0);
template <class A> void swiglu_backward(const Context&, A* dfc, const A* dout, const A* fc, int N, int F, int ld_fc = 0,
                                        int ld_out = 0);

// Fused classifier: losses[n] = −log softmax(logits[n])[target[n]], and unless dloss is 0 (an
// evaluation) the logits (N,V) are replaced by dloss·(softmax − onehot(target)) / n_valid.
// Rows whose target is −1 get zero loss and zero gradient. n_valid is the number of targets
// that are not −1 (in the whole batch: the model calls this per chunk of rows).
template <class A, class P> void classifier_forward_backward(const Context&, A* logits, P* losses, const int32_t* targets,
                                                             int N, int V, int n_valid, double dloss);

// Elementwise and reductions (fp32 ones also run on CUDA).
template <class T> void scale(const Context&, T* x, double s, size_t n);  // x *= s
template <class T> double sum(const Context&, const T* x, size_t n);
template <class T> double sum_squares(const Context&, const T* x, size_t n);
void convert(const Context&, bf16* out, const float* in, size_t n);     // CUDA only: compute weights

// One AdamW step over flat buffers with PyTorch semantics (docs/model.md), on the gradient
// g = grad_scale·grads (the 1/ranks average and the clipping factor, applied here instead of
// in passes of their own): p −= lr·wd·p; m, v updated; p −= (lr / bias1) · m / (√v / √bias2 + eps).
// weights, if not null (CUDA), receives the updated parameters in bf16 in the same pass.
template <class T> void adamw_update(const Context&, T* params, const T* grads, T* m, T* v, size_t n, double lr,
                                     double beta1, double beta2, double eps, double weight_decay, double bias1,
                                     double bias2, double grad_scale = 1.0, bf16* weights = nullptr);

}  // namespace t6
