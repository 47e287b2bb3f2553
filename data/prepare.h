// t6-prepare's logic: documents (text files) → token shards.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace t6 {

struct PrepareOptions {
  std::string out_dir;
  std::string tokenizer = "byte";         // byte: one token per byte, vocab 256, end-of-text 0
  uint64_t shard_tokens = 100'000'000;    // tokens per shard file
  uint64_t val_tokens = 0;                // the first documents, until they hold this many, go to val
  bool compress = false;                  // deflate-compressed shards
  std::vector<std::string> inputs;        // files, directories (recursive) or glob patterns
};

struct PrepareSummary {
  uint64_t documents = 0, tokens = 0, bytes = 0, train_tokens = 0, val_tokens = 0;
  int train_shards = 0, val_shards = 0;
  double seconds = 0;
};

// Files in input order; directories expand recursively and globs match in file-name order.
std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs);

PrepareSummary prepare(const PrepareOptions& opt);

}  // namespace t6
