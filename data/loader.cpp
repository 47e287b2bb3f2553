#include "data/loader.h"

#include <fmt/format.h>
#include <glob.h>

#include <algorithm>
#include <filesystem>
#include <random>
#include <stdexcept>

namespace t6 {

std::vector<std::string> glob_sorted(const std::string& pattern) {
  glob_t g{};
  const int rc = glob(pattern.c_str(), 0, nullptr, &g);
  std::vector<std::string> matches;
  if (rc == 0) matches.assign(g.gl_pathv, g.gl_pathv + g.gl_pathc);
  globfree(&g);
  std::sort(matches.begin(), matches.end());
  return matches;
}

std::vector<std::string> expand_shards(const std::vector<std::string>& patterns, const std::string& key) {
  if (patterns.empty()) throw std::invalid_argument(fmt::format("{}: no shard files given", key));
  std::vector<std::string> files;
  for (const std::string& pattern : patterns) {
    if (pattern.find_first_of("*?[") == std::string::npos) {
      if (!std::filesystem::exists(pattern))
        throw std::invalid_argument(fmt::format("{}: shard file '{}' does not exist", key, pattern));
      if (std::filesystem::is_directory(pattern))
        throw std::invalid_argument(fmt::format("{}: '{}' is a directory; give its shard files, e.g. '{}/train_*.h5'",
                                                key, pattern, pattern));
      files.push_back(pattern);
      continue;
    }
    const std::vector<std::string> matches = glob_sorted(pattern);
    if (matches.empty()) throw std::invalid_argument(fmt::format("{}: pattern '{}' matches no file", key, pattern));
    files.insert(files.end(), matches.begin(), matches.end());
  }
  return files;
}

DataLoader::DataLoader(const std::vector<std::string>& files, int batch, int seq, bool shuffle, uint64_t seed,
                       int64_t vocab_size, const std::string& key, int rank, int world, int prefetch)
    : key_(key), B_(batch), T_(seq), rank_(rank), world_(world), prefetch_(prefetch), shuffle_(shuffle), seed_(seed),
      vocab_size_(vocab_size) {
  if (files.empty()) throw std::invalid_argument(fmt::format("{}: no shard files given", key));
  if (batch <= 0 || seq <= 0)
    throw std::invalid_argument(fmt::format("{}: micro-batches need positive sizes, got {}×{}", key, batch, seq));
  if (world < 1 || rank < 0 || rank >= world)
    throw std::invalid_argument(fmt::format("{}: rank {} of world size {} is not a valid rank", key, rank, world));
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
  sync_batch_ = {std::vector<int32_t>((size_t)B_ * T_), std::vector<int32_t>((size_t)B_ * T_)};
  start_prefetch();
}

DataLoader::~DataLoader() { stop_prefetch(); }

std::string DataLoader::fingerprint() const {
  std::string out;
  for (const ShardReader& s : shards_)
    out += fmt::format("{} {}\n", std::filesystem::path(s.path()).filename().string(), s.meta().num_tokens);
  return out;
}

void DataLoader::restore(const LoaderState& s) {
  stop_prefetch();
  position_ = s.position;
  if (s.seed != seed_) order_epoch_ = -1;
  seed_ = s.seed;
  start_prefetch();
}

// The window (in token units of B·T) at a global index; the permutation of an epoch is a pure
// function of (seed, epoch), so any process can reproduce it.
uint64_t DataLoader::window_at(uint64_t global_index) {
  const uint64_t i = global_index % windows_;
  if (!shuffle_) return i;
  const int64_t epoch = (int64_t)(global_index / windows_);
  if (epoch != order_epoch_) {
    order_.resize(windows_);
    for (uint64_t w = 0; w < windows_; w++) order_[w] = w;
    std::mt19937_64 rng(seed_ * 0x9E3779B97F4A7C15ull + (uint64_t)epoch);
    for (uint64_t w = windows_ - 1; w > 0; w--) {
      // Unbiased draw in [0, w] by rejection; std::uniform_int_distribution differs across libraries.
      const uint64_t bound = w + 1, limit = UINT64_MAX - UINT64_MAX % bound;
      uint64_t r;
      do r = rng(); while (r >= limit);
      std::swap(order_[w], order_[r % bound]);
    }
    order_epoch_ = epoch;
  }
  return order_[i];
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
      if ((uint32_t)out[i] >= (uint64_t)vocab_size_)
        throw std::runtime_error(fmt::format("{}: {} holds token id {} at position {}, not below vocab_size {}", key_,
                                             shard.path(), out[i], local + i, vocab_size_));
    }
    out += n;
    start += n;
    count -= n;
    s++;
  }
}

void DataLoader::read_window(uint64_t global_index, Batch& out) {
  const uint64_t n = (uint64_t)B_ * T_;
  read_range(window_at(global_index) * n, n + 1, window_.data());
  std::copy(window_.begin(), window_.begin() + n, out.inputs.begin());
  std::copy(window_.begin() + 1, window_.end(), out.targets.begin());
}

void DataLoader::next(int32_t* inputs, int32_t* targets) {
  if (prefetch_ == 0) {
    read_window(position_ + rank_, sync_batch_);
    std::copy(sync_batch_.inputs.begin(), sync_batch_.inputs.end(), inputs);
    std::copy(sync_batch_.targets.begin(), sync_batch_.targets.end(), targets);
  } else {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return !ready_.empty() || error_; });
    if (ready_.empty()) std::rethrow_exception(error_);
    Batch b = std::move(ready_.front());
    ready_.pop_front();
    lock.unlock();
    std::copy(b.inputs.begin(), b.inputs.end(), inputs);
    std::copy(b.targets.begin(), b.targets.end(), targets);
    lock.lock();
    spare_.push_back(std::move(b));
    lock.unlock();
    changed_.notify_all();
  }
  position_ += world_;
}

void DataLoader::start_prefetch() {
  if (prefetch_ == 0) return;
  stopping_ = false;
  error_ = nullptr;
  ready_.clear();
  worker_ = std::thread([this, from = position_ + rank_] { prefetch_loop(from); });
}

void DataLoader::stop_prefetch() {
  if (!worker_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  worker_.join();
}

void DataLoader::prefetch_loop(uint64_t from) {
  for (uint64_t g = from;; g += world_) {
    Batch b;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!spare_.empty()) {
        b = std::move(spare_.front());
        spare_.pop_front();
      }
    }
    if (b.inputs.empty()) b = {std::vector<int32_t>((size_t)B_ * T_), std::vector<int32_t>((size_t)B_ * T_)};
    try {
      read_window(g, b);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      error_ = std::current_exception();
      changed_.notify_all();
      return;
    }
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return stopping_ || ready_.size() < (size_t)prefetch_; });
    if (stopping_) return;
    ready_.push_back(std::move(b));
    changed_.notify_all();
  }
}

}  // namespace t6
