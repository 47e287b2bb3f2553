// The op set. Every op is a plain function of raw backend pointers, explicit shapes and the
// execution context; T is float or double on the CPU backend. Shapes use PyTorch's
// conventions: activations are row-major (tokens, features) with N = B·T tokens, and a linear
// weight is (out_features, in_features).
//
// Backward ops overwrite their input gradients unless the comment says "accumulates":
// parameter gradients always accumulate (gradient accumulation over micro-batches), and
// gradients flowing into the residual stream accumulate (x feeds both the branch and the skip).
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/context.h"

namespace t6 {

// out[n,:] = wte[tokens[n],:]. Backward accumulates into dwte.
template <class T> void embedding_forward(const Context&, T* out, const int32_t* tokens, const T* wte, int N, int C);
template <class T> void embedding_backward(const Context&, T* dwte, const T* dout, const int32_t* tokens, int N, int C);

// out = inp / sqrt(mean(inp²) + eps) per row, no weight; rstd (N) is kept for backward.
// Backward accumulates into dinp.
template <class T> void rmsnorm_forward(const Context&, T* out, T* rstd, const T* inp, int N, int C, double eps);
template <class T> void rmsnorm_backward(const Context&, T* dinp, const T* dout, const T* inp, const T* rstd, int N, int C);

// out (M,N) = inp (M,K) · weight (N,K)ᵀ.
// Backward: dweight += doutᵀ·inp (accumulates); dinp = dout·weight, or += when accumulate_dinp;
// dinp may be null when the input needs no gradient.
template <class T> void matmul_forward(const Context&, T* out, const T* inp, const T* weight, int M, int K, int N);
template <class T> void matmul_backward(const Context&, T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                                        int M, int K, int N, bool accumulate_dinp);

// TPA factor contraction: out[n,h,:] = (1/R) Σ_r a[n, h·R + r] · b[n, r·D + :].
// a is (N, H·R), b is (N, R·D), out is (N, H·D).
template <class T> void factor_contract_forward(const Context&, T* out, const T* a, const T* b, int N, int H, int R, int D);
template <class T> void factor_contract_backward(const Context&, T* da, T* db, const T* dout, const T* a, const T* b,
                                                 int N, int H, int R, int D);

// RoPE in place on x (B, T, rows, D): every row of length D at position t is rotated by −θ(t)
// (T6_SPEC.md, "RoPE"). Backward applies the transposed rotation to dx in place.
template <class T> void rope_forward(const Context&, T* x, int B, int T_, int rows, int D);
template <class T> void rope_backward(const Context&, T* dx, int B, int T_, int rows, int D);

// Causal softmax attention, q (B,T,H,D), k and v (B,T,Hkv,D), out (B,T,H,D); query head h
// reads KV head h / (H/Hkv). att (B,H,T,T) keeps the probabilities for backward.
template <class T> void attention_forward(const Context&, T* out, T* att, const T* q, const T* k, const T* v,
                                          int B, int T_, int H, int Hkv, int D);
template <class T> void attention_backward(const Context&, T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k,
                                           const T* v, const T* att, int B, int T_, int H, int Hkv, int D);

// out = silu(a) ⊙ b over n elements.
template <class T> void swiglu_forward(const Context&, T* out, const T* a, const T* b, size_t n);
template <class T> void swiglu_backward(const Context&, T* da, T* db, const T* dout, const T* a, const T* b, size_t n);

// Fused classifier: logits (N,V) are replaced by dloss·(softmax − onehot(target)) / n_valid and
// losses[n] = −log softmax(logits[n])[target[n]]; rows whose target is −1 get zero loss and
// zero gradient. n_valid is the number of targets that are not −1.
template <class T> void classifier_forward_backward(const Context&, T* logits, T* losses, const int32_t* targets,
                                                    int N, int V, int n_valid, double dloss);

// Elementwise and reductions.
template <class T> void add(const Context&, T* out, const T* x, const T* y, size_t n);  // out = x + y
template <class T> void scale(const Context&, T* x, double s, size_t n);                // x *= s
template <class T> double sum(const Context&, const T* x, size_t n);
template <class T> double sum_squares(const Context&, const T* x, size_t n);

// One AdamW step over flat buffers with PyTorch semantics (T6_SPEC.md):
// p −= lr·wd·p; m, v updated; p −= (lr / bias1) · m / (√v / √bias2 + eps).
template <class T> void adamw_update(const Context&, T* params, const T* grads, T* m, T* v, size_t n, double lr,
                                     double beta1, double beta2, double eps, double weight_decay, double bias1,
                                     double bias2);

}  // namespace t6
