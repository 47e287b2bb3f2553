// The model's hyperparameters (docs/model.md) and the derived sizes every other part reads.
#pragma once
#include <cstdint>
#include <string>

namespace t6 {

enum class Attention { tpa, tpa_kvonly, mha, gqa, mqa };

const char* attention_name(Attention a);
bool parse_attention(const std::string& s, Attention* out);

struct ModelConfig {
  Attention attention = Attention::tpa;
  int n_layer = 12;
  int n_embd = 768;
  int n_head = 34;
  int n_kv_head = 0;   // gqa only; 0 = not set
  int head_dim = 64;
  int q_rank = 6;
  int rank = 2;        // R_k = R_v unless k_rank / v_rank override it
  int k_rank = 0;      // 0 = use rank
  int v_rank = 0;      // 0 = use rank
  int vocab_size = 50304;
  int block_size = 1024;
  std::string init_from;  // safetensors file, empty = initialize from seed
  uint64_t seed = 1337;

  bool factored_q() const { return attention == Attention::tpa; }
  bool factored_kv() const { return attention == Attention::tpa || attention == Attention::tpa_kvonly; }
  int kv_heads() const;   // heads of k and v as the attention op sees them
  int rank_k() const { return k_rank > 0 ? k_rank : rank; }
  int rank_v() const { return v_rank > 0 ? v_rank : rank; }
  int mlp_hidden() const { return 8 * n_embd / 3; }

  // Throws std::invalid_argument naming the offending key ("model.n_head: ...").
  void validate() const;
};

}  // namespace t6
