// Micro-batches of (inputs, targets) from a sequence of token shards, read as one
// concatenated stream. Window i of an epoch is the run of B·T+1 tokens starting at token
// w·B·T, where w = i (shuffle: false) or the i-th entry of a seeded permutation of all
// windows (shuffle: true); inputs are the first B·T tokens, targets the last B·T, as B rows
// of T. After the last window the stream wraps to a new epoch.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/shard.h"

namespace t6 {

// Expands each entry (a path or a glob pattern; a glob's matches in file-name order) into
// files. `key` names the config key in errors, e.g. "data.train".
std::vector<std::string> expand_shards(const std::vector<std::string>& patterns, const std::string& key);

class DataLoader {
 public:
  // vocab_size: the model's; every token must be below it. Errors name `key` and the file.
  DataLoader(const std::vector<std::string>& files, int batch, int seq, bool shuffle, uint64_t seed,
             int64_t vocab_size, const std::string& key);

  // Fills B·T inputs and targets (host arrays) with the next window and advances.
  void next(int32_t* inputs, int32_t* targets);
  void reset();  // back to window 0 of epoch 0

  uint64_t windows_per_epoch() const { return windows_; }
  uint64_t total_tokens() const { return total_; }
  int64_t epoch() const { return epoch_; }
  uint64_t position() const { return position_; }  // windows consumed in this epoch
  const ShardMeta& meta() const { return shards_.front().meta(); }

 private:
  void read_range(uint64_t start, uint64_t count, int32_t* out);
  void begin_epoch();

  std::vector<ShardReader> shards_;
  std::vector<uint64_t> shard_start_;  // first token of each shard in the concatenated stream
  std::string key_;
  int B_, T_;
  bool shuffle_;
  uint64_t seed_;
  int64_t vocab_size_;
  uint64_t total_ = 0, windows_ = 0;
  int64_t epoch_ = 0;
  uint64_t position_ = 0;
  std::vector<uint64_t> order_;  // window order of this epoch when shuffling
  std::vector<int32_t> window_;
};

}  // namespace t6
