#include "model/t6.h"

#include <algorithm>
#include <stdexcept>

#include "kernels/ops.h"

namespace t6 {

template <class T>
T6<T>::T6(const ModelConfig& config, const Context& context, int batch, int seq)
    : cfg(config), layout(make_layout(config)), ctx(context), B_(batch), T_(seq), N_(batch * seq) {
  cfg.validate();
  if (seq > cfg.block_size)
    throw std::invalid_argument("sequence length exceeds model.block_size");
  params = Buffer<T>(ctx, layout.total);
  grads = Buffer<T>(ctx, layout.total);
  w_ = views(params.data());
  g_ = views(grads.data());
  for (int l = 0; l < cfg.n_layer; l++) {
    size_t first = SIZE_MAX, end = 0;
    for (const ParamInfo& p : layout.params)
      if (p.name.rfind(layer_param(l, ""), 0) == 0) {
        first = std::min(first, p.offset);
        end = std::max(end, p.offset + p.size);
      }
    layer_ranges_.push_back({first, end - first});
  }
  tokens_ = Buffer<int32_t>(ctx, N_);
  targets_ = Buffer<int32_t>(ctx, N_);
  plan_memory();
}

template <class T>
typename T6<T>::Weights T6<T>::views(T* base) const {
  auto view = [&](const std::string& name) -> T* {
    const ParamInfo* p = layout.find(name);
    return p ? base + p->offset : nullptr;
  };
  Weights w;
  w.wte = view("transformer.wte.weight");
  for (int i = 0; i < cfg.n_layer; i++) {
    auto at = [&](const char* suffix) { return view(layer_param(i, suffix)); };
    Layer l;
    l.W_A_q = at("attn.c_qkv.W_A_q.weight");
    l.W_B_q = at("attn.c_qkv.W_B_q.weight");
    l.W_A_k = at("attn.c_qkv.W_A_k.weight");
    l.W_B_k = at("attn.c_qkv.W_B_k.weight");
    l.W_A_v = at("attn.c_qkv.W_A_v.weight");
    l.W_B_v = at("attn.c_qkv.W_B_v.weight");
    l.c_q = cfg.attention == Attention::tpa_kvonly ? at("attn.c_qkv.c_q.weight") : at("attn.c_q.weight");
    l.c_k = at("attn.c_k.weight");
    l.c_v = at("attn.c_v.weight");
    l.attn_proj = at("attn.c_proj.weight");
    l.fc1 = at("mlp.c_fc1.weight");
    l.fc2 = at("mlp.c_fc2.weight");
    l.mlp_proj = at("mlp.c_proj.weight");
    w.layers.push_back(l);
  }
  return w;
}

// One arena holds every activation and scratch buffer. The carving runs twice: first to size
// the arena, then to hand out pointers into it, so both passes stay in sync by construction.
template <class T>
void T6<T>::plan_memory() {
  const size_t N = N_, C = cfg.n_embd, H = cfg.n_head, Hkv = cfg.kv_heads(), D = cfg.head_dim,
               F = cfg.mlp_hidden(), V = cfg.vocab_size;
  const size_t Rq = cfg.factored_q() ? cfg.q_rank : 0, Rk = cfg.factored_kv() ? cfg.rank_k() : 0,
               Rv = cfg.factored_kv() ? cfg.rank_v() : 0;
  for (int pass = 0; pass < 2; pass++) {
    size_t used = 0;
    auto carve = [&](size_t count) -> T* {
      if (count == 0) return nullptr;
      T* p = pass == 1 ? arena_.data() + used : nullptr;
      used += (count + 15) / 16 * 16;  // keep every buffer 64-byte aligned
      return p;
    };
    acts_.assign(cfg.n_layer, LayerActs{});
    for (LayerActs& a : acts_) {
      a.x = carve(N * C);
      a.rstd1 = carve(N);
      a.h1 = carve(N * C);
      a.a_q = carve(N * H * Rq);
      a.b_q = carve(N * Rq * D);
      a.a_k = carve(N * H * Rk);
      a.b_k = carve(N * Rk * D);
      a.a_v = carve(N * H * Rv);
      a.b_v = carve(N * Rv * D);
      a.q = carve(N * H * D);
      a.k = carve(N * Hkv * D);
      a.v = carve(N * Hkv * D);
      a.att = carve((size_t)B_ * H * T_ * T_);
      a.y = carve(N * H * D);
      a.x_mid = carve(N * C);
      a.rstd2 = carve(N);
      a.h2 = carve(N * C);
      a.fc1 = carve(N * F);
      a.fc2 = carve(N * F);
      a.g = carve(N * F);
    }
    x_final_ = carve(N * C);
    rstd_final_ = carve(N);
    h_final_ = carve(N * C);
    logits_ = carve(N * V);
    losses_ = carve(N);
    s_.dx = carve(N * C);
    s_.dh = carve(N * C);
    s_.branch = carve(N * C);
    s_.dy = carve(N * H * D);
    s_.dq = carve(N * H * D);
    s_.dk = carve(N * Hkv * D);
    s_.dv = carve(N * Hkv * D);
    s_.da_q = carve(N * H * Rq);
    s_.db_q = carve(N * Rq * D);
    s_.da_k = carve(N * H * Rk);
    s_.db_k = carve(N * Rk * D);
    s_.da_v = carve(N * H * Rv);
    s_.db_v = carve(N * Rv * D);
    s_.dfc1 = carve(N * F);
    s_.dfc2 = carve(N * F);
    s_.dg = carve(N * F);
    if (pass == 0) arena_ = Buffer<T>(ctx, used);
  }
}

// q, k or v for all heads: either TPA's contraction of A = W_a·h and B = W_b·h (RoPE on B's
// rows), or a dense projection W_dense·h (RoPE on each head).
template <class T>
void T6<T>::project(T* out, T* a, T* b, const T* W_a, const T* W_b, const T* W_dense, const T* h, int heads, int R,
                    bool rotate) {
  const int C = cfg.n_embd, D = cfg.head_dim;
  if (W_dense) {
    matmul_forward(ctx, out, h, W_dense, N_, C, heads * D);
    if (rotate) rope_forward(ctx, out, B_, T_, heads, D);
    return;
  }
  matmul_forward(ctx, a, h, W_a, N_, C, heads * R);
  matmul_forward(ctx, b, h, W_b, N_, C, R * D);
  if (rotate) rope_forward(ctx, b, B_, T_, R, D);
  factor_contract_forward(ctx, out, a, b, N_, heads, R, D);
}

template <class T>
void T6<T>::project_backward(T* dh, T* dW_a, T* dW_b, T* dW_dense, T* dout, T* da, T* db, const T* a, const T* b,
                             const T* W_a, const T* W_b, const T* W_dense, const T* h, int heads, int R, bool rotate,
                             bool accumulate) {
  const int C = cfg.n_embd, D = cfg.head_dim;
  if (W_dense) {
    if (rotate) rope_backward(ctx, dout, B_, T_, heads, D);
    matmul_backward(ctx, dh, dW_dense, dout, h, W_dense, N_, C, heads * D, accumulate);
    return;
  }
  factor_contract_backward(ctx, da, db, dout, a, b, N_, heads, R, D);
  if (rotate) rope_backward(ctx, db, B_, T_, R, D);
  matmul_backward(ctx, dh, dW_a, da, h, W_a, N_, C, heads * R, accumulate);
  matmul_backward(ctx, dh, dW_b, db, h, W_b, N_, C, R * D, true);
}

template <class T>
double T6<T>::forward(const int32_t* tokens, const int32_t* targets, double dloss) {
  const int C = cfg.n_embd, H = cfg.n_head, Hkv = cfg.kv_heads(), D = cfg.head_dim, F = cfg.mlp_hidden(),
            V = cfg.vocab_size;
  const int Rq = cfg.q_rank, Rk = cfg.rank_k(), Rv = cfg.rank_v();
  tokens_.from_host(tokens, N_);

  embedding_forward(ctx, acts_[0].x, tokens_.data(), w_.wte, N_, C);
  for (int l = 0; l < cfg.n_layer; l++) {
    LayerActs& a = acts_[l];
    const Layer& w = w_.layers[l];
    T* x_out = l + 1 < cfg.n_layer ? acts_[l + 1].x : x_final_;

    rmsnorm_forward(ctx, a.h1, a.rstd1, a.x, N_, C, kRmsEps);
    project(a.q, a.a_q, a.b_q, w.W_A_q, w.W_B_q, w.c_q, a.h1, H, Rq, true);
    project(a.k, a.a_k, a.b_k, w.W_A_k, w.W_B_k, w.c_k, a.h1, Hkv, Rk, true);
    project(a.v, a.a_v, a.b_v, w.W_A_v, w.W_B_v, w.c_v, a.h1, Hkv, Rv, false);
    attention_forward(ctx, a.y, a.att, a.q, a.k, a.v, B_, T_, H, Hkv, D);
    matmul_forward(ctx, s_.branch, a.y, w.attn_proj, N_, H * D, C);
    add(ctx, a.x_mid, a.x, s_.branch, (size_t)N_ * C);

    rmsnorm_forward(ctx, a.h2, a.rstd2, a.x_mid, N_, C, kRmsEps);
    matmul_forward(ctx, a.fc1, a.h2, w.fc1, N_, C, F);
    matmul_forward(ctx, a.fc2, a.h2, w.fc2, N_, C, F);
    swiglu_forward(ctx, a.g, a.fc1, a.fc2, (size_t)N_ * F);
    matmul_forward(ctx, s_.branch, a.g, w.mlp_proj, N_, F, C);
    add(ctx, x_out, a.x_mid, s_.branch, (size_t)N_ * C);
  }
  rmsnorm_forward(ctx, h_final_, rstd_final_, x_final_, N_, C, kRmsEps);
  matmul_forward(ctx, logits_, h_final_, w_.wte, N_, C, V);  // tied output head
  if (!targets) return 0.0;

  int n_valid = 0;
  for (int n = 0; n < N_; n++) n_valid += targets[n] >= 0;
  targets_.from_host(targets, N_);
  classifier_forward_backward(ctx, logits_, losses_, targets_.data(), N_, V, n_valid, dloss);
  return n_valid > 0 ? sum(ctx, losses_, N_) / n_valid : 0.0;
}

// The logits buffer holds dlogits, written by the fused classifier in forward().
template <class T>
void T6<T>::backward(const std::function<void(size_t, size_t)>& grads_ready) {
  const int C = cfg.n_embd, H = cfg.n_head, Hkv = cfg.kv_heads(), D = cfg.head_dim, F = cfg.mlp_hidden(),
            V = cfg.vocab_size;
  const int Rq = cfg.q_rank, Rk = cfg.rank_k(), Rv = cfg.rank_v();
  const T* dlogits = logits_;

  matmul_backward(ctx, s_.dh, g_.wte, dlogits, h_final_, w_.wte, N_, C, V, false);
  ctx.zero(s_.dx, sizeof(T) * N_ * C);
  rmsnorm_backward(ctx, s_.dx, s_.dh, x_final_, rstd_final_, N_, C);

  for (int l = cfg.n_layer - 1; l >= 0; l--) {
    const LayerActs& a = acts_[l];
    const Layer& w = w_.layers[l];
    const Layer& g = g_.layers[l];

    // MLP branch; s_.dx holds the gradient of the block's output.
    matmul_backward(ctx, s_.dg, g.mlp_proj, s_.dx, a.g, w.mlp_proj, N_, F, C, false);
    swiglu_backward(ctx, s_.dfc1, s_.dfc2, s_.dg, a.fc1, a.fc2, (size_t)N_ * F);
    matmul_backward(ctx, s_.dh, g.fc1, s_.dfc1, a.h2, w.fc1, N_, C, F, false);
    matmul_backward(ctx, s_.dh, g.fc2, s_.dfc2, a.h2, w.fc2, N_, C, F, true);
    rmsnorm_backward(ctx, s_.dx, s_.dh, a.x_mid, a.rstd2, N_, C);

    // Attention branch; s_.dx now holds the gradient of x_mid.
    matmul_backward(ctx, s_.dy, g.attn_proj, s_.dx, a.y, w.attn_proj, N_, H * D, C, false);
    attention_backward(ctx, s_.dq, s_.dk, s_.dv, s_.dy, a.q, a.k, a.v, a.att, B_, T_, H, Hkv, D);
    project_backward(s_.dh, g.W_A_q, g.W_B_q, g.c_q, s_.dq, s_.da_q, s_.db_q, a.a_q, a.b_q, w.W_A_q, w.W_B_q, w.c_q,
                     a.h1, H, Rq, true, false);
    project_backward(s_.dh, g.W_A_k, g.W_B_k, g.c_k, s_.dk, s_.da_k, s_.db_k, a.a_k, a.b_k, w.W_A_k, w.W_B_k, w.c_k,
                     a.h1, Hkv, Rk, true, true);
    project_backward(s_.dh, g.W_A_v, g.W_B_v, g.c_v, s_.dv, s_.da_v, s_.db_v, a.a_v, a.b_v, w.W_A_v, w.W_B_v, w.c_v,
                     a.h1, Hkv, Rv, false, true);
    rmsnorm_backward(ctx, s_.dx, s_.dh, a.x, a.rstd1, N_, C);
    if (grads_ready) grads_ready(layer_ranges_[l].first, layer_ranges_[l].second);
  }
  embedding_backward(ctx, g_.wte, s_.dx, tokens_.data(), N_, C);
  if (grads_ready) grads_ready(0, (size_t)cfg.vocab_size * C);  // the tied matrix: both of its uses are done
}

template <class T>
std::vector<float> T6<T>::logits_at(int n) const {
  std::vector<T> row(cfg.vocab_size);
  ctx.to_host(row.data(), logits_ + (size_t)n * cfg.vocab_size, sizeof(T) * row.size());
  return std::vector<float>(row.begin(), row.end());
}

template <class T>
std::vector<float> T6<T>::params_to_host() const {
  std::vector<T> host(layout.total);
  params.to_host(host.data(), host.size());
  return std::vector<float>(host.begin(), host.end());
}

template <class T>
std::vector<float> T6<T>::grads_to_host() const {
  std::vector<T> host(layout.total);
  grads.to_host(host.data(), host.size());
  return std::vector<float>(host.begin(), host.end());
}

template <class T>
void T6<T>::params_from_host(const std::vector<float>& host) {
  if (host.size() != layout.total) throw std::invalid_argument("parameter vector has the wrong size");
  std::vector<T> converted(host.begin(), host.end());
  params.from_host(converted.data(), converted.size());
}

template class T6<float>;
template class T6<double>;

}  // namespace t6
