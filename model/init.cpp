#include "model/init.h"
#include "model/random.h"

#include <cmath>
#include <random>
#include <stdexcept>
#include <string>

namespace t6 {

static bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Half-width of the uniform distribution of one tensor; 0 means zero-initialized.
static double init_bound(const ModelConfig& cfg, const std::string& name) {
  const double C = cfg.n_embd, H = cfg.n_head, D = cfg.head_dim;
  auto factor_a = [&](int R) { return std::sqrt(6.0 / ((H + C) * R)); };
  auto factor_b = [&](int R) { return std::sqrt(6.0 / ((R + C) * D)); };
  if (name == "transformer.wte.weight") return 1.0 / std::sqrt(C);
  if (ends_with(name, "W_A_q.weight")) return factor_a(cfg.q_rank);
  if (ends_with(name, "W_A_k.weight")) return factor_a(cfg.rank_k());
  if (ends_with(name, "W_A_v.weight")) return factor_a(cfg.rank_v());
  if (ends_with(name, "W_B_q.weight")) return factor_b(cfg.q_rank);
  if (ends_with(name, "W_B_k.weight")) return factor_b(cfg.rank_k());
  if (ends_with(name, "W_B_v.weight")) return factor_b(cfg.rank_v());
  if (ends_with(name, "c_qkv.c_q.weight")) return std::sqrt(6.0 / (C + H * D));
  if (ends_with(name, "attn.c_q.weight") || ends_with(name, "attn.c_k.weight") || ends_with(name, "attn.c_v.weight"))
    return 1.0 / std::sqrt(C);
  if (ends_with(name, "c_proj.weight")) return 0.0;  // attn and mlp output projections start at zero
  if (ends_with(name, "c_fc1.weight") || ends_with(name, "c_fc2.weight")) return 1.0 / std::sqrt(C);
  throw std::logic_error("no initialization rule for " + name);
}

std::vector<float> init_params(const ModelConfig& cfg, const ParamLayout& layout, uint64_t seed) {
  std::vector<float> params(layout.total, 0.0f);
  std::mt19937_64 rng(seed);
  for (const ParamInfo& p : layout.params) {
    if (p.padding) continue;  // zero, and no draws: the random stream is the same with or without padding
    const double bound = init_bound(cfg, p.name);
    if (bound == 0.0) continue;
    for (size_t i = 0; i < p.size; i++) params[p.offset + i] = (float)uniform(rng, -bound, bound);
  }
  return params;
}

}  // namespace t6
