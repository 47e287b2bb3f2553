#include "model/config.h"

#include <fmt/format.h>

#include <stdexcept>

namespace t6 {

const char* attention_name(Attention a) {
  switch (a) {
    case Attention::tpa: return "tpa";
    case Attention::tpa_kvonly: return "tpa_kvonly";
    case Attention::mha: return "mha";
    case Attention::gqa: return "gqa";
    case Attention::mqa: return "mqa";
  }
  return "?";
}

bool parse_attention(const std::string& s, Attention* out) {
  for (Attention a : {Attention::tpa, Attention::tpa_kvonly, Attention::mha, Attention::gqa, Attention::mqa}) {
    if (s == attention_name(a)) { *out = a; return true; }
  }
  return false;
}

int ModelConfig::kv_heads() const {
  switch (attention) {
    case Attention::gqa: return n_kv_head;
    case Attention::mqa: return 1;
    default: return n_head;  // TPA forms one k and v per query head
  }
}

void ModelConfig::validate() const {
  auto positive = [](const char* key, long v) {
    if (v <= 0) throw std::invalid_argument(fmt::format("model.{}: must be a positive integer, got {}", key, v));
  };
  positive("n_layer", n_layer);
  positive("n_embd", n_embd);
  positive("n_head", n_head);
  positive("head_dim", head_dim);
  positive("vocab_size", vocab_size);
  positive("block_size", block_size);
  // Far beyond any model this trainer can hold, and below where the int sizes derived from
  // them (8·n_embd/3, H·D, rows of factors) would overflow; the layout is built per layer before
  // memory is planned, so a typo's billion layers must stop here.
  auto at_most = [](const char* key, long v, long limit) {
    if (v > limit)
      throw std::invalid_argument(fmt::format("model.{}: {} is beyond what this trainer supports (at most {})", key, v,
                                              limit));
  };
  at_most("n_layer", n_layer, 100000);
  at_most("n_embd", n_embd, 1 << 20);
  at_most("n_head", n_head, 1 << 14);
  at_most("head_dim", head_dim, 1 << 12);
  at_most("block_size", block_size, 1 << 24);
  at_most("vocab_size", vocab_size, 1 << 28);
  for (auto [key, r] : {std::pair{"q_rank", q_rank}, {"rank", rank}, {"k_rank", k_rank}, {"v_rank", v_rank}})
    at_most(key, r, 1 << 10);
  if (head_dim % 2 != 0)
    throw std::invalid_argument(fmt::format("model.head_dim: RoPE rotates pairs, so it must be even, got {}", head_dim));
  if (factored_q()) positive("q_rank", q_rank);
  if (factored_kv()) {
    positive("rank", rank);
    if (k_rank < 0) positive("k_rank", k_rank);
    if (v_rank < 0) positive("v_rank", v_rank);
  }
  if (attention == Attention::gqa) {
    if (n_kv_head <= 0)
      throw std::invalid_argument("model.n_kv_head: attention gqa needs the number of KV heads (e.g. 2)");
    if (n_head % n_kv_head != 0)
      throw std::invalid_argument(fmt::format(
          "model.n_kv_head: {} does not divide model.n_head = {}; each KV head serves n_head/n_kv_head query heads",
          n_kv_head, n_head));
  } else if (attention == Attention::mqa && n_kv_head != 0 && n_kv_head != 1) {
    throw std::invalid_argument(fmt::format("model.n_kv_head: attention mqa has exactly 1 KV head, got {}", n_kv_head));
  }
}

}  // namespace t6
