// Multiple-choice evaluation sets (HellaSwag-style): each example is a context and several
// completions, one of them right. Stored tokenized, as JSON Lines (data/README.md,
// "Multiple-choice files"): one example per line,
//   {"candidates": [[tokens of context + completion 0], …], "completion_start": [n0, …], "label": k}
// where completion i starts at token completion_start[i] of candidate i. A model scores a
// completion by the loss of its tokens only (trainer/mc_eval.h).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/tokenizer.h"

namespace t6 {

struct McExample {
  std::vector<std::vector<int32_t>> candidates;
  std::vector<int> completion_start;  // per candidate, ≥ 1 and < its length
  int label = 0;
};

// HellaSwag's JSON Lines (fields ctx, endings, label; as in its released files): context =
// encode(ctx), completion i = encode(" " + endings[i]). Errors name the file and line.
std::vector<McExample> hellaswag_examples(const std::string& jsonl_path, const Tokenizer& tokenizer);

// The tokenized file: written whole, atomically; read back with every field checked against
// vocab_size (0: no check). Errors name the file and line.
// With tokenizer non-empty, the file must have been made with that tokenizer (its ids would
// mean other text otherwise).
void write_mc_file(const std::string& path, const std::vector<McExample>& examples, const std::string& tokenizer);
std::vector<McExample> read_mc_file(const std::string& path, int vocab_size = 0, const std::string& tokenizer = "");

}  // namespace t6
