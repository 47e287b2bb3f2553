// The T6 model: parameters and gradients in flat backend buffers (addressed by ParamLayout),
// activations in one arena planned at construction for a fixed micro-batch shape, and a
// forward and backward that are sequences of backend ops (kernels/ops.h).
//
// A is the activations' type and P the parameters' (docs/model.md's precision: on the GPU,
// T6<bf16, float> computes in bf16 from a bf16 copy of the fp32 master weights, and
// accumulates fp32 gradients; on the CPU, T6<float> and T6<double> use one type throughout).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "kernels/context.h"
#include "kernels/ops.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/layout.h"

namespace t6 {

// rmsnorm's eps: float32 machine epsilon, what the reference's F.rms_norm uses (docs/model.md).
constexpr double kRmsEps = 1.1920928955078125e-07;

// Where q, k and v sit in a row of the stacked input projection (rows padded to a multiple of 8).
QkvLayout qkv_layout(const ModelConfig& cfg, const ParamLayout& layout);

// The products over each layer's stacked q/k/v projections and over c_fc1‖c_fc2 run over a
// multiple of 8 output rows, reading the layout's padding after them. Throws std::logic_error
// unless, in every layer, the stacked tensors lie together (c_fc1 before c_fc2), each followed
// directly by its padding entry of the right size (none where the rows are a multiple of 8).
void check_stacked_layout(const ModelConfig& cfg, const ParamLayout& layout);

template <class A, class P = A>
class T6 {
 public:
  // recompute: keep only the residual stream of each layer's norms and the MLP's input
  // projection, and recompute the normalized inputs and the SwiGLU output in backward.
  T6(const ModelConfig& cfg, const Context& ctx, int batch, int seq, bool recompute = false);

  // tokens and targets are host arrays of batch·seq ids; a target of −1 is ignored.
  // Returns the mean loss over valid targets. With dloss ≠ 0 it also starts the backward pass
  // (the classifier's gradient, chunk by chunk so the logits never exist all at once) and
  // leaves what backward() needs to add dloss·∂loss/∂θ into grads. With targets == nullptr it
  // runs the network up to the final norm (then logits_at reads the output).
  double forward(const int32_t* tokens, const int32_t* targets, double dloss = 0);
  // grads_ready(offset, count), if given, is called as soon as a contiguous range of the
  // gradient buffer is final for this micro-batch (each layer, last to first, then the
  // embedding), so communication can overlap the rest of the backward pass.
  void backward(const std::function<void(size_t offset, size_t count)>& grads_ready = {});
  void zero_grads() { grads.zero(); }

  std::vector<double> logits_at(int n);  // position n's logits, after forward()
  // Each position's loss after forward() with targets (0 where the target is −1).
  std::vector<double> position_losses() const;

  // Generation. A cache for `batch` sequences of up to `context` positions (more than
  // block_size is allowed: RoPE's angles extend). store_prompt, after forward(prompt, nullptr)
  // on this model (batch 1, seq = the prompt's length), copies every layer's keys and values of
  // the prompt into each sequence of the cache. decode runs the next token of each sequence at
  // position cache.len through the layers, appends its keys and values, and returns the logits
  // (batch × vocab_size, row-major), in a buffer the next decode() overwrites (kept, so that a
  // step does not fault in megabytes of fresh host pages).
  KvCache<A> make_cache(int batch, int context) const { return KvCache<A>(ctx, qkv_, cfg.n_layer, batch, context); }
  void store_prompt(KvCache<A>& cache);
  const std::vector<double>& decode(const int32_t* tokens, KvCache<A>& cache);
  std::vector<float> params_to_host() const;
  void params_from_host(const std::vector<float>& host);
  std::vector<float> grads_to_host() const;
  // After params changed (an optimizer step, a gather across ranks): refresh the compute
  // copies of the weights. flat_copy_current: the optimizer already wrote the bf16 copy of the
  // flat buffer (fused AdamW), so only the padded copies need refreshing.
  void refresh_weights(bool flat_copy_current = false);
  // The bf16 compute copy of the flat weights, for the fused optimizer; null when there is
  // none (A == P).
  bf16* bf16_weights();

  int batch() const { return B_; }
  int seq() const { return T_; }
  size_t activation_bytes() const { return arena_.size() * sizeof(A) + stats_.size() * sizeof(P); }

  const ModelConfig cfg;
  const ParamLayout layout;
  const Context& ctx;
  Buffer<P> params, grads;

 private:
  template <class X> struct Layer {  // views: each layer's four weight matrices (the layout keeps them contiguous)
    X *attn_in, *attn_proj, *fc, *mlp_proj;  // attn_in: every q/k/v projection stacked; fc: c_fc1 over c_fc2
  };
  template <class X> struct Weights {
    X* wte = nullptr;
    std::vector<Layer<X>> layers;
  };
  struct LayerActs {  // what backward reads, per layer
    A *x, *h1, *proj, *q, *k, *v, *y, *x_mid, *h2, *fc, *g;
    P *rstd1, *lse, *rstd2;
  };
  struct Scratch {  // gradients of activations, reused by every layer
    A *dx, *dh, *branch, *dy, *dq, *dk, *dv, *dproj, *dfc, *dg, *logits;
  };

  template <class X> Weights<X> views(X* base) const;
  void plan_memory();
  const A* h1(int l);  // the normalized inputs: stored, or recomputed into scratch
  const A* h2(int l);
  const A* g(int l);
  int mlp_k() const { return pad_mlp_proj_ ? g_pitch_ : cfg.mlp_hidden(); }  // c_proj's K as stored

  std::vector<std::pair<size_t, size_t>> layer_ranges_;  // (offset, count) of each layer's parameters
  int B_, T_, N_, chunk_;  // chunk_: rows of logits formed at once
  bool recompute_;
  // Row pitches of the activations whose widths need not be multiples of 8 (the stacked
  // projection's output, c_fc's, SwiGLU's): padded so every row stays 16-byte aligned.
  int fc_pitch_, g_pitch_;  // the stacked projection's is qkv_.pitch
  // mlp.c_proj is (C, F): when F is not a multiple of 8 its compute copy is kept with rows
  // padded to g_pitch_ (zeros in the padding). Unlike the stacked matrices' padding (rows after
  // the matrix, in the layout) this is padding inside each row: in the layout it would make the
  // reference tensor a strided one that exports, checkpoints, init and the tests would all have
  // to step over.
  bool pad_mlp_proj_;
  Buffer<A> mlp_proj_padded_;
  Buffer<P> dweight_padded_;  // weight gradients of widths not a multiple of 8 form here first
  void weight_grad(P* dweight, const A* dout, const A* inp, int K, int N, int ld_in, int ld_out);
  QkvLayout qkv_;
  Buffer<A> weights_;      // the compute copy (A ≠ P only)
  Weights<const A> w_;
  Weights<P> g_, master_;  // views of the gradients and of the fp32 master weights
  std::vector<LayerActs> acts_;
  A *x_final_, *h_final_, *h_scratch_, *g_scratch_;
  P *rstd_final_, *losses_;
  Scratch s_;
  Buffer<A> arena_;
  Buffer<P> stats_;
  Buffer<int32_t> tokens_, targets_;
  // decode()'s activations, for one row per sequence (made for the first cache it sees).
  struct DecodeActs {
    A *x, *x_next, *h, *proj, *q, *k, *v, *y, *x_mid, *h2, *fc, *g, *branch, *logits;
    P* rstd;
  };
  int decode_rows_ = 0;
  DecodeActs d_{};
  Buffer<A> decode_arena_;
  Buffer<P> decode_stats_;
  Buffer<int32_t> decode_tokens_;        // the step's B tokens and its position, on the device
  std::vector<int32_t> decode_input_;  // the same on the host
  // On the GPU the decode step is recorded and replayed (see decode_step in t6.cpp), for the
  // buffers and block of positions in replay_key_; the first step of a block runs plainly.
  Replay decode_replay_{ctx};
  std::vector<uintptr_t> replay_key_, warm_key_;
  bool replays_ = true;  // off once a recording failed
  void decode_step(const std::function<void()>& step, const KvCache<A>& cache, int pos);
  std::vector<A> decode_host_;  // the logits as the device holds them
  std::vector<double> decode_logits_;
};

extern template class T6<float>;
extern template class T6<double>;
#ifdef T6_WITH_CUDA
extern template class T6<bf16, float>;
#endif

}  // namespace t6
