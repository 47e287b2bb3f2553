#include "data/loader.h"

#include <fmt/format.h>
#include <glob.h>

#include <algorithm>
#include <filesystem>
#include <random>
#include <stdexcept>

namespace t6 {

std::vector<std::string> expand_shards(const std::vector<std::string>& patterns, const std::string& key) {
  if (patterns.empty()) throw std::invalid_argument(fmt::format("{}: no shard files given", key));
  std::vector<std::string> files;
  for (const std::string& pattern : patterns) {
    if (pattern.find_first_of("*?[") == std::string::npos) {
      if (!std::filesystem::exists(pattern))
        throw std::invalid_argument(fmt::format("{}: shard file '{}' does not exist", key, pattern));
      files.push_back(pattern);
      continue;
    }
    glob_t g{};
    const int rc = glob(pattern.c_str(), 0, nullptr, &g);
    std::vector<std::string> matches(g.gl_pathv, g.gl_pathv + g.gl_pathc);
    globfree(&g);
    if (rc != 0 || matches.empty())
      throw std::invalid_argument(fmt::format("{}: pattern '{}' matches no file", key, pattern));
    std::sort(matches.begin(), matches.end());
    files.insert(files.end(), matches.begin(), matches.end());
  }
  return files;
}

DataLoader::DataLoader(const std::vector<std::string>& files, int batch, int seq, bool shuffle, uint64_t seed,
                       int64_t vocab_size, const std::string& key)
    : key_(key), B_(batch), T_(seq), shuffle_(shuffle), seed_(seed), vocab_size_(vocab_size) {
  if (files.empty()) throw std::invalid_argument(fmt::format("{}: no shard files given", key));
  for (const std::string& f : files) {
    shards_.emplace_back(f);
    const ShardMeta& m = shards_.back().meta();
    const ShardMeta& first = shards_.front().meta();
    if (m.vocab_size != first.vocab_size || m.tokenizer != first.tokenizer)
      throw std::invalid_argument(fmt::format(
          "{}: shards disagree: {} has vocab_size {} and tokenizer '{}', but {} has vocab_size {} and tokenizer '{}'",
          key, f, m.vocab_size, m.tokenizer, files.front(), first.vocab_size, first.tokenizer));
    if (m.vocab_size > vocab_size)
      throw std::invalid_argument(fmt::format("{}: {} was tokenized with vocab_size {}, larger than model.vocab_size {}",
                                              key, f, m.vocab_size, vocab_size));
    shard_start_.push_back(total_);
    total_ += m.num_tokens;
  }
  const uint64_t need = (uint64_t)B_ * T_ + 1;
  if (total_ < need)
    throw std::invalid_argument(fmt::format(
        "{}: the data has {} tokens, but one micro-batch of {}×{} needs {} (fewer rows or a shorter block_size?)", key,
        total_, B_, T_, need));
  windows_ = (total_ - 1) / ((uint64_t)B_ * T_);
  window_.resize(need);
  begin_epoch();
}

void DataLoader::reset() {
  epoch_ = 0;
  begin_epoch();
}

// The permutation is a pure function of (seed, epoch), so any run can reproduce it.
void DataLoader::begin_epoch() {
  position_ = 0;
  if (!shuffle_) return;
  order_.resize(windows_);
  for (uint64_t i = 0; i < windows_; i++) order_[i] = i;
  std::mt19937_64 rng(seed_ * 0x9E3779B97F4A7C15ull + (uint64_t)epoch_);
  for (uint64_t i = windows_ - 1; i > 0; i--) {
    // Unbiased draw in [0, i] by rejection; std::uniform_int_distribution differs across libraries.
    const uint64_t bound = i + 1, limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t r;
    do r = rng(); while (r >= limit);
    std::swap(order_[i], order_[r % bound]);
  }
}

void DataLoader::read_range(uint64_t start, uint64_t count, int32_t* out) {
  auto it = std::upper_bound(shard_start_.begin(), shard_start_.end(), start);
  size_t s = (size_t)(it - shard_start_.begin()) - 1;
  while (count > 0) {
    const ShardReader& shard = shards_[s];
    const uint64_t local = start - shard_start_[s];
    const uint64_t n = std::min(count, shard.meta().num_tokens - local);
    shard.read(local, n, out);
    for (uint64_t i = 0; i < n; i++) {
      if (out[i] < 0 || out[i] >= vocab_size_)
        throw std::runtime_error(fmt::format("{}: {} holds token id {} at position {}, not below vocab_size {}", key_,
                                             shard.path(), out[i], local + i, vocab_size_));
    }
    out += n;
    start += n;
    count -= n;
    s++;
  }
}

void DataLoader::next(int32_t* inputs, int32_t* targets) {
  if (position_ == windows_) {
    epoch_++;
    begin_epoch();
  }
  const uint64_t w = shuffle_ ? order_[position_] : position_;
  const uint64_t n = (uint64_t)B_ * T_;
  read_range(w * n, n + 1, window_.data());
  std::copy(window_.begin(), window_.begin() + n, inputs);
  std::copy(window_.begin() + 1, window_.end(), targets);
  position_++;
}

}  // namespace t6
