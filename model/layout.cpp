#include "model/layout.h"

#include <fmt/format.h>

#include <stdexcept>

namespace t6 {

const char* const kQkvPadding = "attn.qkv_padding";
const char* const kFcPadding = "mlp.fc_padding";

size_t ParamLayout::parameter_count() const {
  size_t n = 0;
  for (const ParamInfo& p : params)
    if (!p.padding) n += p.size;
  return n;
}

const ParamInfo* ParamLayout::find(const std::string& name) const {
  if (indexed_ != params.size()) {
    index_.clear();
    for (size_t i = 0; i < params.size(); i++) index_.emplace(params[i].name, i);
    indexed_ = params.size();
  }
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &params[it->second];
}

const ParamInfo& ParamLayout::at(const std::string& name) const {
  const ParamInfo* p = find(name);
  if (!p) throw std::out_of_range("no parameter named " + name);
  return *p;
}

std::string layer_param(int layer, const char* suffix) { return fmt::format("transformer.h.{}.{}", layer, suffix); }

ParamLayout make_layout(const ModelConfig& cfg) {
  ParamLayout layout;
  auto add = [&](std::string name, int64_t rows, int64_t cols, bool padding = false) {
    ParamInfo p{std::move(name), {rows, cols}, layout.total, (size_t)(rows * cols), padding};
    layout.total += p.size;
    layout.params.push_back(std::move(p));
  };
  const int64_t C = cfg.n_embd, H = cfg.n_head, D = cfg.head_dim, F = cfg.mlp_hidden();
  // The model multiplies by a stacked matrix (the rows added since `first`) with its output
  // rounded up to a multiple of 8 rows (model/t6.cpp): the rows it reads past the end are
  // this padding, not the next tensor.
  auto pad_rows_since = [&](size_t first, int layer, const char* name) {
    const int rows = (int)((layout.total - first) / C), missing = round8(rows) - rows;
    if (missing > 0) add(layer_param(layer, name), missing, C, /*padding=*/true);
  };
  add("transformer.wte.weight", cfg.vocab_size, C);
  for (int i = 0; i < cfg.n_layer; i++) {
    const size_t qkv_first = layout.total;
    if (cfg.factored_q()) {
      add(layer_param(i, "attn.c_qkv.W_A_q.weight"), H * cfg.q_rank, C);
    }
    if (cfg.factored_kv()) {
      add(layer_param(i, "attn.c_qkv.W_A_k.weight"), H * cfg.rank_k(), C);
      add(layer_param(i, "attn.c_qkv.W_A_v.weight"), H * cfg.rank_v(), C);
    }
    if (cfg.factored_q()) {
      add(layer_param(i, "attn.c_qkv.W_B_q.weight"), cfg.q_rank * D, C);
    }
    if (cfg.factored_kv()) {
      add(layer_param(i, "attn.c_qkv.W_B_k.weight"), cfg.rank_k() * D, C);
      add(layer_param(i, "attn.c_qkv.W_B_v.weight"), cfg.rank_v() * D, C);
    }
    if (cfg.attention == Attention::tpa_kvonly) {
      add(layer_param(i, "attn.c_qkv.c_q.weight"), H * D, C);
    } else if (!cfg.factored_kv()) {
      add(layer_param(i, "attn.c_q.weight"), H * D, C);
      add(layer_param(i, "attn.c_k.weight"), cfg.kv_heads() * D, C);
      add(layer_param(i, "attn.c_v.weight"), cfg.kv_heads() * D, C);
    }
    pad_rows_since(qkv_first, i, kQkvPadding);
    add(layer_param(i, "attn.c_proj.weight"), C, H * D);
    const size_t fc_first = layout.total;
    add(layer_param(i, "mlp.c_fc1.weight"), F, C);
    add(layer_param(i, "mlp.c_fc2.weight"), F, C);
    pad_rows_since(fc_first, i, kFcPadding);
    add(layer_param(i, "mlp.c_proj.weight"), C, F);
  }
  return layout;
}

double flops_per_token(const ModelConfig& cfg) {
  return 6.0 * make_layout(cfg).parameter_count() + 12.0 * cfg.n_layer * cfg.n_head * cfg.head_dim * cfg.block_size;
}

}  // namespace t6
