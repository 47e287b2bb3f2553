// Micro-batches of (inputs, targets) from a sequence of token shards, read as one
// concatenated stream (data/README.md).
//
// The global order: epoch e visits all W = ⌊(N−1)/(B·T)⌋ windows, window w being the B·T+1
// tokens from token w·B·T, either in order (shuffle: false) or in a permutation that is a pure
// function of (seed, e); epochs follow each other without end. Global index g is window
// g mod W of epoch ⌊g/W⌋. With `world` ranks, rank r reads indices r, r+world, r+2·world, …,
// so the ranks together read exactly the single-process stream, each window once per epoch.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "data/shard.h"

namespace t6 {

// The files a glob pattern matches, in file-name order (empty when none).
std::vector<std::string> glob_sorted(const std::string& pattern);

// Expands each entry (a path or a glob pattern; a glob's matches in file-name order) into
// files. `key` names the config key in errors, e.g. "data.train".
std::vector<std::string> expand_shards(const std::vector<std::string>& patterns, const std::string& key);

// Where a stream stands: continuing from it gives the rest of the same stream, on any number
// of ranks. position counts global indices consumed by all ranks together.
struct LoaderState {
  uint64_t position = 0;
  uint64_t seed = 0;
};

class DataLoader {
 public:
  // vocab_size: the model's; every token must be below it. Errors name `key` and the file.
  // prefetch > 0 reads that many batches ahead on a background thread.
  DataLoader(const std::vector<std::string>& files, int batch, int seq, bool shuffle, uint64_t seed,
             int64_t vocab_size, const std::string& key, int rank = 0, int world = 1, int prefetch = 0);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // Fills B·T inputs and targets (host arrays) with this rank's next window.
  void next(int32_t* inputs, int32_t* targets);

  LoaderState state() const { return {position_, seed_}; }
  void restore(const LoaderState& s);  // continue from s (its seed replaces the current one)
  void reset() { restore({0, seed_}); }

  uint64_t windows_per_epoch() const { return windows_; }
  uint64_t total_tokens() const { return total_; }
  int64_t epoch() const { return (int64_t)(position_ / windows_); }
  const ShardMeta& meta() const { return shards_.front().meta(); }
  // The data's identity, one line per shard in stream order: "file-name tokens". A checkpoint
  // keeps it, so a resume can tell when the shards behind the stream changed.
  std::string fingerprint() const;

 private:
  struct Batch {
    std::vector<int32_t> inputs, targets;
  };
  void read_window(uint64_t global_index, Batch& out);
  void read_range(uint64_t start, uint64_t count, int32_t* out);
  uint64_t window_at(uint64_t global_index);
  void start_prefetch();
  void stop_prefetch();
  void prefetch_loop(uint64_t from);

  std::vector<ShardReader> shards_;
  std::vector<uint64_t> shard_start_;  // first token of each shard in the concatenated stream
  std::string key_;
  int B_, T_, rank_, world_, prefetch_;
  bool shuffle_;
  uint64_t seed_;
  int64_t vocab_size_;
  uint64_t total_ = 0, windows_ = 0;
  uint64_t position_ = 0;              // global indices consumed before this rank's next read
  int64_t order_epoch_ = -1;           // the epoch whose permutation `order_` holds
  std::vector<uint64_t> order_;
  std::vector<int32_t> window_;
  Batch sync_batch_;

  // Prefetching: the background thread fills `ready_` in stream order.
  std::thread worker_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Batch> ready_, spare_;   // filled batches in order; emptied ones to refill
  std::exception_ptr error_;
  bool stopping_ = false;
};

}  // namespace t6
