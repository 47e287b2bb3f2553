#include "model/t6.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <array>
#include <stdexcept>
#include <type_traits>

namespace t6 {

namespace {

// The q/k/v projections' names within a layer (q, k, v): one dense matrix, or factors A and B.
const char* const kFactorA[3] = {"attn.c_qkv.W_A_q.weight", "attn.c_qkv.W_A_k.weight", "attn.c_qkv.W_A_v.weight"};
const char* const kFactorB[3] = {"attn.c_qkv.W_B_q.weight", "attn.c_qkv.W_B_k.weight", "attn.c_qkv.W_B_v.weight"};
const char* dense_name(const ModelConfig& cfg, int s) {
  const char* const names[3] = {"attn.c_q.weight", "attn.c_k.weight", "attn.c_v.weight"};
  return s == 0 && cfg.attention == Attention::tpa_kvonly ? "attn.c_qkv.c_q.weight" : names[s];
}
// Each section's rank; 0 for a dense one.
std::array<int, 3> section_ranks(const ModelConfig& cfg) {
  return {cfg.factored_q() ? cfg.q_rank : 0, cfg.factored_kv() ? cfg.rank_k() : 0,
          cfg.factored_kv() ? cfg.rank_v() : 0};
}

// The q/k/v projections of layer `layer` (names as in the layout), the sections of the stacked
// product.
std::vector<std::string> qkv_names(const ModelConfig& cfg, int layer) {
  const std::array<int, 3> ranks = section_ranks(cfg);
  std::vector<std::string> names;
  for (int s = 0; s < 3; s++) {
    if (ranks[s]) names.push_back(layer_param(layer, kFactorA[s])), names.push_back(layer_param(layer, kFactorB[s]));
    else names.push_back(layer_param(layer, dense_name(cfg, s)));
  }
  return names;
}

// Where `names` sit together in the flat buffer: the first offset and the total size; throws
// unless they fill that range exactly (one matrix a product can read), in any order.
std::pair<size_t, size_t> contiguous_range(const ParamLayout& layout, const std::vector<std::string>& names) {
  size_t first = SIZE_MAX, end = 0, size = 0;
  for (const std::string& n : names) {
    const ParamInfo& p = layout.at(n);
    first = std::min(first, p.offset), end = std::max(end, p.offset + p.size), size += p.size;
  }
  if (end - first != size)
    throw std::logic_error(fmt::format("parameter layout: {} … must lie next to each other (the model multiplies by "
                                       "them as one matrix)", names.front()));
  return {first, size};
}

// The rounded-up products over a stacked matrix of `rows` rows (pitch = round8(rows)) read
// pitch − rows rows past its end, at `end`: these must be the layout's padding entry `name`,
// of exactly that size (none when rows is a multiple of 8).
void check_padding(const ParamLayout& layout, const std::string& name, size_t end, int rows, int cols) {
  const size_t want = (size_t)(round8(rows) - rows) * cols;
  const ParamInfo* p = layout.find(name);
  const bool ok = want == 0 ? p == nullptr : p && p->padding && p->offset == end && p->size == want;
  if (!ok)
    throw std::logic_error(fmt::format("parameter layout: {} must be padding of {} numbers right after the stacked "
                                       "matrix it pads (the model's rounded-up products read it)", name, want));
}

}  // namespace

// Each layer's parameters in layout order are: the q/k/v projections, their padding, attn.c_proj,
// c_fc1, c_fc2, their padding, mlp.c_proj. Stacked, the projections are one matrix (one matmul);
// so are c_fc1 and c_fc2. This records the q/k/v sections' columns in the stacked product, by name.
QkvLayout qkv_layout(const ModelConfig& cfg, const ParamLayout& layout) {
  const size_t C = cfg.n_embd;
  const auto [first, size] = contiguous_range(layout, qkv_names(cfg, 0));
  auto col = [&](const char* suffix) { return (int)((layout.at(layer_param(0, suffix)).offset - first) / C); };
  const std::array<int, 3> ranks = section_ranks(cfg);
  QkvLayout q;
  q.D = cfg.head_dim;
  q.width = (int)(size / C);
  for (int s = 0; s < 3; s++) {
    q.heads[s] = s == 0 ? cfg.n_head : cfg.kv_heads();
    q.rank[s] = ranks[s];
    if (ranks[s]) {
      q.a[s] = col(kFactorA[s]);
      q.b[s] = col(kFactorB[s]);
    } else {
      q.dense[s] = col(dense_name(cfg, s));
    }
  }
  q.pitch = round8(q.width);
  return q;
}

void check_stacked_layout(const ModelConfig& cfg, const ParamLayout& layout) {
  const int C = cfg.n_embd, F = cfg.mlp_hidden();
  for (int l = 0; l < cfg.n_layer; l++) {
    const auto [qkv_first, qkv_size] = contiguous_range(layout, qkv_names(cfg, l));
    const auto [fc_first, fc_size] =
        contiguous_range(layout, {layer_param(l, "mlp.c_fc1.weight"), layer_param(l, "mlp.c_fc2.weight")});
    if (fc_first != layout.at(layer_param(l, "mlp.c_fc1.weight")).offset)
      throw std::logic_error("parameter layout: mlp.c_fc1 must come before c_fc2 (they are one stacked matrix)");
    check_padding(layout, layer_param(l, kQkvPadding), qkv_first + qkv_size, (int)(qkv_size / C), C);
    check_padding(layout, layer_param(l, kFcPadding), fc_first + fc_size, 2 * F, C);
  }
}

template <class A, class P>
T6<A, P>::T6(const ModelConfig& config, const Context& context, int batch, int seq, bool recompute)
    : cfg(config), layout(make_layout(config)), ctx(context), B_(batch), T_(seq), N_(batch * seq),
      recompute_(recompute) {
  cfg.validate();
  if (seq > cfg.block_size)
    throw std::invalid_argument("sequence length exceeds model.block_size");
  // Logits are formed for at most 2^28 elements at a time (512 MB in bf16).
  chunk_ = std::clamp<int>((int)((size_t(1) << 28) / cfg.vocab_size), 1, N_);
  // Each layer's range of the flat buffer: one pass over the tensors, by the layer in their names.
  std::vector<std::pair<size_t, size_t>> bounds(cfg.n_layer, {SIZE_MAX, 0});
  const std::string prefix = "transformer.h.";
  for (const ParamInfo& p : layout.params) {
    if (p.name.rfind(prefix, 0) != 0) continue;
    const int l = std::atoi(p.name.c_str() + prefix.size());
    bounds[l].first = std::min(bounds[l].first, p.offset);
    bounds[l].second = std::max(bounds[l].second, p.offset + p.size);
  }
  for (const auto& [first, end] : bounds) layer_ranges_.push_back({first, end - first});
  qkv_ = qkv_layout(cfg, layout);
  fc_pitch_ = round8(2 * cfg.mlp_hidden());
  g_pitch_ = round8(cfg.mlp_hidden());
  pad_mlp_proj_ = g_pitch_ != cfg.mlp_hidden();
  check_stacked_layout(cfg, layout);
  params = Buffer<P>(ctx, layout.total);
  grads = Buffer<P>(ctx, layout.total);
  if constexpr (std::is_same_v<A, P>) {
    w_ = views<const A>(params.data());
  } else {
    weights_ = Buffer<A>(ctx, layout.total);
    w_ = views<const A>(weights_.data());
  }
  g_ = views<P>(grads.data());
  master_ = views<P>(params.data());
  if (pad_mlp_proj_) {
    const size_t per_layer = (size_t)cfg.n_embd * g_pitch_;
    mlp_proj_padded_ = Buffer<A>(ctx, per_layer * cfg.n_layer);
    for (int l = 0; l < cfg.n_layer; l++) w_.layers[l].mlp_proj = mlp_proj_padded_.data() + per_layer * l;
  }
  // Room for the largest rounded-up weight gradient: the stacked projection's, c_fc's, c_proj's.
  const size_t C8 = round8(cfg.n_embd);
  dweight_padded_ = Buffer<P>(ctx, std::max({(size_t)qkv_.pitch * C8, (size_t)fc_pitch_ * C8, C8 * g_pitch_}));
  tokens_ = Buffer<int32_t>(ctx, N_);
  targets_ = Buffer<int32_t>(ctx, N_);
  plan_memory();
}


template <class A, class P>
template <class X>
typename T6<A, P>::template Weights<X> T6<A, P>::views(X* base) const {
  Weights<X> w;
  w.wte = base + layout.at("transformer.wte.weight").offset;
  for (int i = 0; i < cfg.n_layer; i++) {
    auto at = [&](const char* suffix) { return base + layout.at(layer_param(i, suffix)).offset; };
    w.layers.push_back({base + contiguous_range(layout, qkv_names(cfg, i)).first, at("attn.c_proj.weight"),
                        at("mlp.c_fc1.weight"),
                        at("mlp.c_proj.weight")});
  }
  return w;
}

// One arena holds every activation and scratch buffer, and one more the fp32 statistics. The
// carving runs twice: first to size the arenas, then to hand out pointers into them, so both
// passes stay in sync by construction.
template <class A, class P>
void T6<A, P>::plan_memory() {
  const size_t N = N_, C = cfg.n_embd, H = cfg.n_head, Hkv = cfg.kv_heads(), D = cfg.head_dim,
               V = cfg.vocab_size, Wp = qkv_.pitch, Fc = fc_pitch_, G = g_pitch_;
  for (int pass = 0; pass < 2; pass++) {
    size_t used = 0, used_stats = 0;
    auto carve = [&](size_t count) -> A* {
      A* p = pass == 1 ? arena_.data() + used : nullptr;
      used += (count + 63) / 64 * 64;  // keep every buffer 128-byte aligned
      return p;
    };
    auto carve_stats = [&](size_t count) -> P* {
      P* p = pass == 1 ? stats_.data() + used_stats : nullptr;
      used_stats += (count + 31) / 32 * 32;
      return p;
    };
    acts_.assign(cfg.n_layer, LayerActs{});
    h_scratch_ = recompute_ ? carve(N * C) : nullptr;
    g_scratch_ = recompute_ ? carve(N * G) : nullptr;
    for (LayerActs& a : acts_) {
      a.x = carve(N * C);
      a.rstd1 = carve_stats(N);
      a.h1 = recompute_ ? h_scratch_ : carve(N * C);
      a.proj = carve(N * Wp);
      a.q = carve(N * H * D);
      a.k = carve(N * Hkv * D);
      a.v = carve(N * Hkv * D);
      a.lse = carve_stats((size_t)B_ * H * T_);
      a.y = carve(N * H * D);
      a.x_mid = carve(N * C);
      a.rstd2 = carve_stats(N);
      a.h2 = recompute_ ? h_scratch_ : carve(N * C);
      a.fc = carve(N * Fc);
      a.g = recompute_ ? g_scratch_ : carve(N * G);
    }
    x_final_ = carve(N * C);
    rstd_final_ = carve_stats(N);
    h_final_ = carve(N * C);
    losses_ = carve_stats(N);
    s_.dx = carve(N * C);
    s_.dh = carve(N * C);
    s_.branch = carve(N * C);
    s_.dy = carve(N * H * D);
    s_.dq = carve(N * H * D);
    s_.dk = carve(N * Hkv * D);
    s_.dv = carve(N * Hkv * D);
    s_.dproj = carve(N * Wp);
    s_.dfc = carve(N * Fc);
    s_.dg = carve(N * G);
    s_.logits = carve((size_t)chunk_ * V);
    if (pass == 0) {
      arena_ = Buffer<A>(ctx, used);
      stats_ = Buffer<P>(ctx, used_stats);
    }
  }
}

template <class A, class P>
const A* T6<A, P>::h1(int l) {
  const LayerActs& a = acts_[l];
  if (recompute_) rmsnorm_forward(ctx, a.h1, a.rstd1, a.x, N_, cfg.n_embd, kRmsEps);
  return a.h1;
}

template <class A, class P>
const A* T6<A, P>::h2(int l) {
  const LayerActs& a = acts_[l];
  if (recompute_) rmsnorm_forward(ctx, a.h2, a.rstd2, a.x_mid, N_, cfg.n_embd, kRmsEps);
  return a.h2;
}

template <class A, class P>
const A* T6<A, P>::g(int l) {
  const LayerActs& a = acts_[l];
  if (recompute_) swiglu_forward(ctx, a.g, a.fc, N_, cfg.mlp_hidden(), fc_pitch_, g_pitch_);
  return a.g;
}

template <class A, class P>
double T6<A, P>::forward(const int32_t* tokens, const int32_t* targets, double dloss) {
  const int C = cfg.n_embd, H = cfg.n_head, Hkv = cfg.kv_heads(), D = cfg.head_dim, F = cfg.mlp_hidden(),
            V = cfg.vocab_size;
  tokens_.from_host(tokens, N_);

  embedding_forward(ctx, acts_[0].x, tokens_.data(), w_.wte, N_, C);
  rmsnorm_forward(ctx, acts_[0].h1, acts_[0].rstd1, acts_[0].x, N_, C, kRmsEps);
  for (int l = 0; l < cfg.n_layer; l++) {
    LayerActs& a = acts_[l];
    const Layer<const A>& w = w_.layers[l];
    const bool last = l + 1 == cfg.n_layer;

    // The stacked projection's output width is rounded up to its pitch: the extra rows read
    // the layout's padding after attn_in (zeros), and land in the activation's padding.
    matmul_forward(ctx, a.proj, a.h1, w.attn_in, N_, C, qkv_.pitch, C, qkv_.pitch);
    qkv_forward(ctx, a.q, a.k, a.v, a.proj, qkv_, B_, T_);
    attention_forward(ctx, a.y, a.lse, a.q, a.k, a.v, B_, T_, H, Hkv, D);
    matmul_forward(ctx, s_.branch, a.y, w.attn_proj, N_, H * D, C);
    residual_rmsnorm_forward(ctx, a.x_mid, a.h2, a.rstd2, a.x, s_.branch, N_, C, kRmsEps);

    matmul_forward(ctx, a.fc, a.h2, w.fc, N_, C, fc_pitch_, C, fc_pitch_);  // likewise: padding follows c_fc2
    swiglu_forward(ctx, a.g, a.fc, N_, F, fc_pitch_, g_pitch_);
    matmul_forward(ctx, s_.branch, a.g, w.mlp_proj, N_, mlp_k(), C, g_pitch_, C);
    residual_rmsnorm_forward(ctx, last ? x_final_ : acts_[l + 1].x, last ? h_final_ : acts_[l + 1].h1,
                             last ? rstd_final_ : acts_[l + 1].rstd1, a.x_mid, s_.branch, N_, C, kRmsEps);
  }
  if (!targets) return 0.0;

  // The tied output head and the loss, chunk by chunk; with dloss ≠ 0 each chunk's logits
  // become dlogits at once and flow back into dh_final (s_.dh) and the embedding's gradient.
  int n_valid = 0;
  for (int n = 0; n < N_; n++) n_valid += targets[n] >= 0;
  targets_.from_host(targets, N_);
  for (int n0 = 0; n0 < N_; n0 += chunk_) {
    const int rows = std::min(chunk_, N_ - n0);
    matmul_forward(ctx, s_.logits, h_final_ + (size_t)n0 * C, w_.wte, rows, C, V);
    classifier_forward_backward(ctx, s_.logits, losses_ + n0, targets_.data() + n0, rows, V, n_valid, dloss);
    if (dloss != 0) {
      matmul_backward_input(ctx, s_.dh + (size_t)n0 * C, s_.logits, w_.wte, rows, C, V);
      matmul_backward_weight(ctx, g_.wte, s_.logits, h_final_ + (size_t)n0 * C, rows, C, V);
    }
  }
  return n_valid > 0 ? sum(ctx, losses_, N_) / n_valid : 0.0;
}

// s_.dh holds dloss/dh_final, written by forward().
template <class A, class P>
void T6<A, P>::backward(const std::function<void(size_t, size_t)>& grads_ready) {
  const int C = cfg.n_embd, H = cfg.n_head, Hkv = cfg.kv_heads(), D = cfg.head_dim, F = cfg.mlp_hidden();

  ctx.zero(s_.dx, sizeof(A) * N_ * C);
  rmsnorm_backward(ctx, s_.dx, s_.dh, x_final_, rstd_final_, N_, C);

  for (int l = cfg.n_layer - 1; l >= 0; l--) {
    const LayerActs& a = acts_[l];
    const Layer<const A>& w = w_.layers[l];
    const Layer<P>& g = g_.layers[l];

    // MLP branch; s_.dx holds the gradient of the block's output.
    // The padding columns of dg, dfc and dproj stay zero (nothing writes them), so products
    // may run over the rounded-up widths; weight gradients use the true ones.
    matmul_backward_input(ctx, s_.dg, s_.dx, w.mlp_proj, N_, mlp_k(), C, g_pitch_, C);
    weight_grad(g.mlp_proj, s_.dx, this->g(l), F, C, g_pitch_, C);
    swiglu_backward(ctx, s_.dfc, s_.dg, a.fc, N_, F, fc_pitch_, g_pitch_);
    matmul_backward_input(ctx, s_.dh, s_.dfc, w.fc, N_, C, fc_pitch_, C, fc_pitch_);
    weight_grad(g.fc, s_.dfc, h2(l), C, 2 * F, C, fc_pitch_);
    rmsnorm_backward(ctx, s_.dx, s_.dh, a.x_mid, a.rstd2, N_, C);

    // Attention branch; s_.dx now holds the gradient of x_mid.
    matmul_backward_input(ctx, s_.dy, s_.dx, w.attn_proj, N_, H * D, C);
    matmul_backward_weight(ctx, g.attn_proj, s_.dx, a.y, N_, H * D, C);
    attention_backward(ctx, s_.dq, s_.dk, s_.dv, s_.dy, a.q, a.k, a.v, a.y, a.lse, B_, T_, H, Hkv, D);
    qkv_backward(ctx, s_.dproj, s_.dq, s_.dk, s_.dv, a.proj, qkv_, B_, T_);
    matmul_backward_input(ctx, s_.dh, s_.dproj, w.attn_in, N_, C, qkv_.pitch, C, qkv_.pitch);
    weight_grad(g.attn_in, s_.dproj, h1(l), C, qkv_.width, C, qkv_.pitch);
    rmsnorm_backward(ctx, s_.dx, s_.dh, a.x, a.rstd1, N_, C);
    if (grads_ready) grads_ready(layer_ranges_[l].first, layer_ranges_[l].second);
  }
  embedding_backward(ctx, g_.wte, s_.dx, tokens_.data(), N_, C, cfg.vocab_size);
  if (grads_ready) grads_ready(0, (size_t)cfg.vocab_size * C);  // the tied matrix: both of its uses are done
}

// dweight (N,K) += doutᵀ·inp. A width that is not a multiple of 8 makes the GPU's product
// several times slower, so such a gradient is formed over the rounded-up widths in a scratch
// (the extra rows and columns come from pitch padding and are dropped) and added in.
template <class A, class P>
void T6<A, P>::weight_grad(P* dweight, const A* dout, const A* inp, int K, int N, int ld_in, int ld_out) {
  const int K8 = round8(K), N8 = round8(N);
  if ((K8 == K && N8 == N) || K8 > ld_in || N8 > ld_out) {
    matmul_backward_weight(ctx, dweight, dout, inp, N_, K, N, ld_in, ld_out);
    return;
  }
  ctx.zero(dweight_padded_.data(), sizeof(P) * (size_t)N8 * K8);
  matmul_backward_weight(ctx, dweight_padded_.data(), dout, inp, N_, K8, N8, ld_in, ld_out);
  add_from_pitch(ctx, dweight, dweight_padded_.data(), N, K, K8);
}

template <class A, class P>
std::vector<double> T6<A, P>::logits_at(int n) {
  const int V = cfg.vocab_size;
  matmul_forward(ctx, s_.logits, h_final_ + (size_t)n * cfg.n_embd, w_.wte, 1, cfg.n_embd, V);
  std::vector<A> row(V);
  ctx.to_host(row.data(), s_.logits, sizeof(A) * V);
  std::vector<double> out(V);
  for (int i = 0; i < V; i++) out[i] = (double)to_float(row[i]);
  return out;
}

template <class A, class P>
std::vector<double> T6<A, P>::position_losses() const {
  std::vector<P> host(N_);
  ctx.to_host(host.data(), losses_, sizeof(P) * N_);
  return std::vector<double>(host.begin(), host.end());
}

template <class A, class P>
void T6<A, P>::store_prompt(KvCache<A>& cache) {
  if (B_ != 1 || T_ > cache.context)
    throw std::invalid_argument(fmt::format("store_prompt: a prompt of {} positions (batch {}) into a cache of {} "
                                            "positions per sequence", T_, B_, cache.context));
  for (int l = 0; l < cfg.n_layer; l++) {
    A *k = cache.k[l].data(), *v = cache.v[l].data();
    kv_cache_store(ctx, k, v, acts_[l].proj, qkv_, 1, T_, 0, cache.context);
    for (int b = 1; b < cache.batch; b++) {  // every sequence starts from the same prompt
      ctx.copy(k + (size_t)b * cache.context * cache.k_record, k, sizeof(A) * T_ * cache.k_record);
      ctx.copy(v + (size_t)b * cache.context * cache.v_record, v, sizeof(A) * T_ * cache.v_record);
    }
  }
  cache.len = T_;
}

// forward() for one new row per sequence, reading every earlier position from the cache.
template <class A, class P>
const std::vector<double>& T6<A, P>::decode(const int32_t* tokens, KvCache<A>& cache) {
  const int B = cache.batch, pos = cache.len, C = cfg.n_embd, H = cfg.n_head, Hkv = cfg.kv_heads(),
            D = cfg.head_dim, F = cfg.mlp_hidden(), V = cfg.vocab_size;
  if (pos >= cache.context)
    throw std::invalid_argument(fmt::format("decode: the cache's {} positions are full", cache.context));
  if (decode_rows_ != B) {  // carve one arena for B rows, as plan_memory does for the batch
    const std::pair<A**, size_t> slots[] = {  // each buffer and its width per row
        {&d_.x, C},       {&d_.x_next, C},  {&d_.h, C},     {&d_.proj, qkv_.pitch}, {&d_.q, H * D},
        {&d_.k, Hkv * D}, {&d_.v, Hkv * D}, {&d_.y, H * D}, {&d_.x_mid, C},         {&d_.h2, C},
        {&d_.fc, fc_pitch_}, {&d_.g, g_pitch_}, {&d_.branch, C}, {&d_.logits, V}};
    auto rounded = [&](size_t width) { return ((size_t)B * width + 63) / 64 * 64; };  // 128-byte aligned
    size_t total = 0;
    for (const auto& [slot, width] : slots) total += rounded(width);
    decode_arena_ = Buffer<A>(ctx, total);
    decode_stats_ = Buffer<P>(ctx, (size_t)B);
    decode_tokens_ = Buffer<int32_t>(ctx, (size_t)B + 1);
    A* next = decode_arena_.data();
    for (const auto& [slot, width] : slots) *slot = next, next += rounded(width);
    d_.rstd = decode_stats_.data();
    decode_rows_ = B;
    decode_replay_.reset();  // it used the buffers just replaced
    replay_key_.clear(), warm_key_.clear();
  }
  // The tokens, then the position: one copy. The ops that depend on the position read it there
  // when they run (`at`), so that a recording of this step serves the next positions.
  decode_input_.assign(tokens, tokens + B);
  decode_input_.push_back(pos);
  decode_tokens_.from_host(decode_input_.data(), B + 1);
  const int* pos_at = decode_tokens_.data() + B;
  decode_step([&] {
    embedding_forward(ctx, d_.x, decode_tokens_.data(), w_.wte, B, C);
    rmsnorm_forward(ctx, d_.h, d_.rstd, d_.x, B, C, kRmsEps);
    for (int l = 0; l < cfg.n_layer; l++) {
      const Layer<const A>& w = w_.layers[l];
      A *k = cache.k[l].data(), *v = cache.v[l].data();
      matmul_forward(ctx, d_.proj, d_.h, w.attn_in, B, C, qkv_.pitch, C, qkv_.pitch);
      qkv_forward(ctx, d_.q, d_.k, d_.v, d_.proj, qkv_, B, 1, pos, pos_at);  // q at its position (k, v unused)
      kv_cache_store(ctx, k, v, d_.proj, qkv_, B, 1, pos, cache.context, pos_at);
      attention_decode(ctx, d_.y, d_.q, k, v, qkv_, B, pos + 1, cache.context, pos_at);
      matmul_forward(ctx, d_.branch, d_.y, w.attn_proj, B, H * D, C);
      residual_rmsnorm_forward(ctx, d_.x_mid, d_.h2, d_.rstd, d_.x, d_.branch, B, C, kRmsEps);
      matmul_forward(ctx, d_.fc, d_.h2, w.fc, B, C, fc_pitch_, C, fc_pitch_);
      swiglu_forward(ctx, d_.g, d_.fc, B, F, fc_pitch_, g_pitch_);
      matmul_forward(ctx, d_.branch, d_.g, w.mlp_proj, B, mlp_k(), C, g_pitch_, C);
      residual_rmsnorm_forward(ctx, d_.x_next, d_.h, d_.rstd, d_.x_mid, d_.branch, B, C, kRmsEps);
      std::swap(d_.x, d_.x_next);
    }
    matmul_forward(ctx, d_.logits, d_.h, w_.wte, B, C, V);
  }, cache, pos);
  decode_host_.resize((size_t)B * V);
  decode_logits_.resize(decode_host_.size());
  ctx.to_host(decode_host_.data(), d_.logits, sizeof(A) * decode_host_.size());
  cache.len = pos + 1;
  const A* host = decode_host_.data();
  double* out = decode_logits_.data();
#pragma omp parallel for if (decode_host_.size() >= (1u << 16))
  for (size_t i = 0; i < decode_host_.size(); i++) out[i] = (double)to_float(host[i]);
  return decode_logits_;
}

// A decode step is a dozen small kernels a layer, each costing more to launch than to run at
// batch 1. On the GPU the step is recorded (a CUDA graph) and replayed while the buffers it
// used and the block of kDecodePositionsPerLaunch positions stay the same (the launches depend
// on the position only through that block); the first step of each block runs plainly, so that
// every workspace, table and matmul plan the recording uses exists by then.
template <class A, class P>
void T6<A, P>::decode_step(const std::function<void()>& step, const KvCache<A>& cache, int pos) {
  if (!replays_ || !decode_replay_.available()) return step();
  std::vector<uintptr_t> key = {(uintptr_t)(pos / kDecodePositionsPerLaunch), (uintptr_t)cache.batch,
                                (uintptr_t)cache.context, (uintptr_t)decode_arena_.data()};
  for (size_t l = 0; l < cache.k.size(); l++)
    key.push_back((uintptr_t)cache.k[l].data()), key.push_back((uintptr_t)cache.v[l].data());
  if (key == replay_key_ && decode_replay_.current()) return decode_replay_.run();
  if (key == warm_key_) {
    if (decode_replay_.record(step)) {
      replay_key_ = key;
      return decode_replay_.run();
    }
    replays_ = false;  // something in the step cannot be recorded: plain steps from now on
  }
  warm_key_ = key;
  step();
}

template <class A, class P>
std::vector<float> T6<A, P>::params_to_host() const {
  std::vector<P> host(layout.total);
  params.to_host(host.data(), host.size());
  return std::vector<float>(host.begin(), host.end());
}

template <class A, class P>
std::vector<float> T6<A, P>::grads_to_host() const {
  std::vector<P> host(layout.total);
  grads.to_host(host.data(), host.size());
  return std::vector<float>(host.begin(), host.end());
}

template <class A, class P>
void T6<A, P>::params_from_host(const std::vector<float>& host) {
  if (host.size() != layout.total) throw std::invalid_argument("parameter vector has the wrong size");
  std::vector<P> converted(host.begin(), host.end());
  params.from_host(converted.data(), converted.size());
  refresh_weights();
}

template <class A, class P>
void T6<A, P>::refresh_weights(bool flat_copy_current) {
  if constexpr (std::is_same_v<A, bf16>)
    if (!flat_copy_current) convert(ctx, weights_.data(), params.data(), layout.total);
  if (!pad_mlp_proj_) return;
  const size_t per_layer = (size_t)cfg.n_embd * g_pitch_;
  for (int l = 0; l < cfg.n_layer; l++)
    copy_to_pitch(ctx, mlp_proj_padded_.data() + per_layer * l, master_.layers[l].mlp_proj, cfg.n_embd,
                  cfg.mlp_hidden(), g_pitch_);
}

template <class A, class P>
bf16* T6<A, P>::bf16_weights() {
  if constexpr (std::is_same_v<A, bf16>) return weights_.data();
  else return nullptr;
}

template class T6<float>;
template class T6<double>;
#ifdef T6_WITH_CUDA
template class T6<bf16, float>;
#endif

}  // namespace t6
