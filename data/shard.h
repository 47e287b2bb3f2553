// The token shard format (data/README.md): an HDF5 file with a 1-D dataset `tokens` (uint16
// when the vocabulary fits, else uint32) and root attributes `vocab_size`, `tokenizer`,
// `eot_token`.
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "data/h5.h"

namespace t6 {

struct ShardMeta {
  uint64_t num_tokens = 0;
  int64_t vocab_size = 0;
  std::string tokenizer;
  int64_t eot_token = 0;
};

// An open shard; reads any token range with an HDF5 hyperslab (never the whole file).
class ShardReader {
 public:
  explicit ShardReader(const std::string& path);  // validates the format; errors name the file
  ~ShardReader();
  ShardReader(ShardReader&& o) noexcept;
  ShardReader(const ShardReader&) = delete;
  ShardReader& operator=(const ShardReader&) = delete;
  ShardReader& operator=(ShardReader&&) = delete;

  void read(uint64_t start, uint64_t count, int32_t* out) const;
  const ShardMeta& meta() const { return meta_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  ShardMeta meta_;
  hid_t file_ = -1, dataset_ = -1;
};

// Writes tokens (each < meta.vocab_size) to `path` through a temporary name and a rename, so
// an interrupted write never leaves a file that looks complete. `compress` stores the tokens
// in deflate-compressed chunks (smaller files, slower random reads; readers need no flag).
void write_shard(const std::string& path, const std::vector<uint32_t>& tokens, const ShardMeta& meta,
                 bool compress = false);

}  // namespace t6
