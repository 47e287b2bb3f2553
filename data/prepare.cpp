#include "data/prepare.h"

#include <fmt/format.h>
#include <glob.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include "data/shard.h"

namespace t6 {

namespace fs = std::filesystem;

std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs) {
  if (inputs.empty()) throw std::invalid_argument("no input files given");
  std::vector<std::string> files;
  for (const std::string& in : inputs) {
    if (fs::is_directory(in)) {
      std::vector<std::string> found;
      for (const auto& e : fs::recursive_directory_iterator(in))
        if (e.is_regular_file()) found.push_back(e.path().string());
      std::sort(found.begin(), found.end());
      if (found.empty()) throw std::invalid_argument(fmt::format("{}: directory holds no files", in));
      files.insert(files.end(), found.begin(), found.end());
    } else if (fs::exists(in)) {
      files.push_back(in);
    } else if (in.find_first_of("*?[") != std::string::npos) {
      glob_t g{};
      const int rc = glob(in.c_str(), 0, nullptr, &g);
      std::vector<std::string> matches(g.gl_pathv, g.gl_pathv + g.gl_pathc);
      globfree(&g);
      if (rc != 0 || matches.empty()) throw std::invalid_argument(fmt::format("{}: pattern matches no file", in));
      std::sort(matches.begin(), matches.end());
      files.insert(files.end(), matches.begin(), matches.end());
    } else {
      throw std::invalid_argument(fmt::format("{}: no such file or directory", in));
    }
  }
  return files;
}

namespace {

// Buffers tokens of one split and writes a shard each time shard_tokens are collected.
struct ShardWriter {
  std::string dir, prefix;
  uint64_t shard_tokens;
  bool compress;
  ShardMeta meta;
  std::vector<uint32_t> buffer;
  int shards = 0;
  uint64_t tokens = 0;

  void add(const std::vector<uint32_t>& doc) {
    for (uint32_t t : doc) {
      buffer.push_back(t);
      if (buffer.size() == shard_tokens) flush();
    }
    tokens += doc.size();
  }
  void flush() {
    if (buffer.empty()) return;
    write_shard(fmt::format("{}/{}_{:06d}.h5", dir, prefix, shards++), buffer, meta, compress);
    buffer.clear();
  }
};

}  // namespace

PrepareSummary prepare(const PrepareOptions& opt) {
  const auto start = std::chrono::steady_clock::now();
  if (opt.tokenizer != "byte")
    throw std::invalid_argument(fmt::format("--tokenizer {}: unknown tokenizer (available: byte)", opt.tokenizer));
  if (opt.shard_tokens == 0) throw std::invalid_argument("--shard-tokens must be positive");
  const std::vector<std::string> files = expand_inputs(opt.inputs);
  fs::create_directories(opt.out_dir);

  const ShardMeta meta{0, 256, "byte", 0};
  ShardWriter train{opt.out_dir, "train", opt.shard_tokens, opt.compress, meta, {}, 0, 0};
  ShardWriter val{opt.out_dir, "val", opt.shard_tokens, opt.compress, meta, {}, 0, 0};
  PrepareSummary summary;
  for (const std::string& path : files) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error(fmt::format("{}: cannot read", path));
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<uint32_t> doc(text.begin(), text.end());
    for (uint32_t& t : doc) t &= 0xff;  // char may be signed
    doc.push_back((uint32_t)meta.eot_token);
    (val.tokens < opt.val_tokens ? val : train).add(doc);
    summary.documents++;
    summary.bytes += text.size();
  }
  train.flush();
  val.flush();
  if (train.tokens == 0)
    throw std::invalid_argument(fmt::format("all {} tokens went to validation (--val-tokens {}): nothing to train on",
                                            val.tokens, opt.val_tokens));
  summary.tokens = train.tokens + val.tokens;
  summary.train_tokens = train.tokens;
  summary.val_tokens = val.tokens;
  summary.train_shards = train.shards;
  summary.val_shards = val.shards;
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

}  // namespace t6
