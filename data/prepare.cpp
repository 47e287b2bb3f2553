#include "data/prepare.h"

#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "data/loader.h"
#include "data/shard.h"
#include "data/tokenizer.h"

namespace t6 {

namespace fs = std::filesystem;

// HDF5's signature: the first 8 bytes of every HDF5 file written without a user block.
bool is_hdf5(const std::string& path) {
  char head[8] = {};
  std::ifstream f(path, std::ios::binary);
  return f.read(head, 8) && std::memcmp(head, "\x89HDF\r\n\x1a\n", 8) == 0;
}

std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs, int* skipped_hdf5) {
  if (inputs.empty()) throw std::invalid_argument("no input files given");
  std::vector<std::string> files;
  int skipped = 0;
  for (const std::string& in : inputs) {
    if (fs::is_directory(in)) {
      std::vector<std::string> found;
      for (auto it = fs::recursive_directory_iterator(in); it != fs::recursive_directory_iterator(); ++it) {
        if (it->is_directory() && it->path().filename().string().rfind(".t6-prepare-", 0) == 0) {
          it.disable_recursion_pending();  // another run's (or a killed run's) staging shards
          skipped++;
          continue;
        }
        if (!it->is_regular_file()) continue;
        if (is_hdf5(it->path().string())) {  // shards, perhaps this tool's own earlier output
          skipped++;
          continue;
        }
        found.push_back(it->path().string());
      }
      std::sort(found.begin(), found.end());
      if (found.empty())
        throw std::invalid_argument(fmt::format("{}: directory holds no files{}", in,
                                                skipped ? " other than HDF5 files (shards are not text)" : ""));
      files.insert(files.end(), found.begin(), found.end());
    } else if (fs::exists(in)) {
      if (is_hdf5(in))
        throw std::invalid_argument(fmt::format("{}: is an HDF5 file (a shard?), not text; t6-prepare reads text, "
                                                "JSON Lines or --from-bin token files", in));
      files.push_back(in);
    } else if (in.find_first_of("*?[") != std::string::npos) {
      const std::vector<std::string> matches = glob_sorted(in);
      if (matches.empty()) throw std::invalid_argument(fmt::format("{}: pattern matches no file", in));
      files.insert(files.end(), matches.begin(), matches.end());
    } else {
      throw std::invalid_argument(fmt::format("{}: no such file or directory", in));
    }
  }
  if (skipped_hdf5) *skipped_hdf5 = skipped;
  return files;
}

namespace {

// Buffers the tokens of one split and writes a shard each time shard_tokens are collected.
struct ShardWriter {
  std::string dir, prefix;
  uint64_t shard_tokens;
  bool compress;
  ShardMeta meta;
  std::vector<uint32_t> buffer = {};
  int shards = 0;
  uint64_t tokens = 0;

  void add(const uint32_t* data, size_t n) {
    tokens += n;
    while (n > 0) {
      const size_t take = std::min<size_t>(n, shard_tokens - buffer.size());
      buffer.insert(buffer.end(), data, data + take);
      data += take;
      n -= take;
      if (buffer.size() == shard_tokens) flush();
    }
  }
  void flush() {
    if (buffer.empty()) return;
    write_shard(fmt::format("{}/{}_{:06d}.h5", dir, prefix, shards++), buffer, meta, compress);
    buffer.clear();
  }
};

std::ifstream open_input(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("{}: cannot read ({})", path, std::strerror(errno)));
  return in;
}

bool is_jsonl(const std::string& path) {
  const std::string ext = fs::path(path).extension().string();
  return ext == ".jsonl" || ext == ".ndjson";
}

// Documents read in order and tokenized in parallel, a batch of a few megabytes at a time.
struct Document {
  std::string text;
  std::vector<uint32_t> tokens;
};

class TextSource {
 public:
  TextSource(const std::vector<std::string>& files, const std::string& field) : files_(files), field_(field) {}

  // Fills `batch` with up to ~8 MB of the next documents; false when the inputs are exhausted.
  bool next_batch(std::vector<Document>& batch, uint64_t& bytes_read) {
    batch.clear();
    size_t bytes = 0;
    while (bytes < (8u << 20) && file_ < files_.size()) {
      const std::string& path = files_[file_];
      if (!is_jsonl(path)) {
        std::ifstream in = open_input(path);
        std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        if (in.bad()) throw std::runtime_error(fmt::format("{}: read error", path));
        bytes += text.size();
        bytes_read += text.size();
        batch.push_back({std::move(text), {}});
        file_++;
        continue;
      }
      if (!jsonl_.is_open()) {
        jsonl_ = open_input(path);
        line_ = 0;
      }
      std::string line;
      while (bytes < (8u << 20) && std::getline(jsonl_, line)) {
        line_++;
        bytes_read += line.size() + 1;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank lines separate nothing
        nlohmann::json j;
        try {
          j = nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception&) {
          throw std::runtime_error(fmt::format("{}:{}: not a JSON object: {:.60}", path, line_, line));
        }
        if (!j.is_object() || !j.contains(field_))
          throw std::runtime_error(fmt::format("{}:{}: no field '{}' (choose another with --jsonl-field)", path,
                                               line_, field_));
        if (!j[field_].is_string())
          throw std::runtime_error(fmt::format("{}:{}: field '{}' is not a string", path, line_, field_));
        std::string text = j[field_].get<std::string>();
        bytes += text.size();
        batch.push_back({std::move(text), {}});
      }
      if (jsonl_.bad()) throw std::runtime_error(fmt::format("{}: read error", path));
      if (jsonl_.eof()) {
        jsonl_.close();
        file_++;
      }
    }
    return !batch.empty() || file_ < files_.size();
  }

 private:
  std::vector<std::string> files_;
  std::string field_;
  size_t file_ = 0;
  std::ifstream jsonl_;
  uint64_t line_ = 0;
};

// nanoGPT / llm.c token files: a 256-int32 header (magic 20240520, version 1 = uint16 or
// 2 = uint32 tokens, token count) then the tokens; or headerless raw uint16.
void read_bin(const std::string& path, int64_t vocab_size, const std::function<void(const uint32_t*, size_t)>& sink,
              uint64_t& bytes_read) {
  std::ifstream in = open_input(path);
  const uint64_t size = fs::file_size(path);
  int32_t header[256] = {0};
  uint64_t offset = 0, count = 0;
  int width = 2;
  if (size >= sizeof(header) && in.read(reinterpret_cast<char*>(header), sizeof(header)) && header[0] == 20240520) {
    if (header[1] != 1 && header[1] != 2)
      throw std::runtime_error(fmt::format("{}: llm.c header version {} (expected 1: uint16 or 2: uint32)", path, header[1]));
    width = header[1] == 1 ? 2 : 4;
    offset = sizeof(header);
    count = (uint32_t)header[2];
    if (size != offset + count * width)
      throw std::runtime_error(fmt::format("{}: the header says {} tokens ({} bytes), the file holds {} bytes after it "
                                           "(truncated?)", path, count, count * width, size - offset));
  } else {
    if (size % 2 != 0)
      throw std::runtime_error(fmt::format("{}: no llm.c header and an odd size ({} bytes); expected raw uint16 tokens",
                                           path, size));
    count = size / 2;
  }
  in.clear();
  in.seekg(offset);
  std::vector<char> raw;
  std::vector<uint32_t> tokens;
  for (uint64_t done = 0; done < count;) {
    const uint64_t n = std::min<uint64_t>(count - done, 1 << 24);
    raw.resize(n * width);
    if (!in.read(raw.data(), raw.size())) throw std::runtime_error(fmt::format("{}: read error", path));
    tokens.resize(n);
    for (uint64_t i = 0; i < n; i++) {
      uint32_t t;
      if (width == 2) { uint16_t s; std::memcpy(&s, &raw[i * 2], 2); t = s; }
      else std::memcpy(&t, &raw[i * 4], 4);
      if (t >= (uint64_t)vocab_size)
        throw std::runtime_error(fmt::format("{}: token {} at position {} is not below vocab_size {} (wrong --tokenizer?)",
                                             path, t, done + i, vocab_size));
      tokens[i] = t;
    }
    sink(tokens.data(), n);
    done += n;
    bytes_read += raw.size();
  }
}

bool has_shards(const std::string& dir) {
  if (!fs::is_directory(dir)) return false;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if ((name.rfind("train_", 0) == 0 || name.rfind("val_", 0) == 0) && e.path().extension() == ".h5") return true;
  }
  return false;
}

}  // namespace

PrepareSummary prepare(const PrepareOptions& opt, const std::function<void(const PrepareProgress&)>& progress) {
  const auto start = std::chrono::steady_clock::now();
  if (opt.shard_tokens == 0) throw std::invalid_argument("--shard-tokens must be positive");
  if (opt.out_dir.empty()) throw std::invalid_argument("--out DIR is required");
  const auto tokenizer = make_tokenizer(opt.tokenizer, opt.vocab_dir.empty() ? kDefaultVocabDir : opt.vocab_dir);
  PrepareSummary summary;
  const std::vector<std::string> files = expand_inputs(opt.inputs, &summary.skipped_hdf5);
  if (has_shards(opt.out_dir))
    throw std::invalid_argument(fmt::format(
        "{}: already holds train_*.h5 / val_*.h5 shards; remove them or choose another --out", opt.out_dir));

  PrepareProgress prog;
  for (const std::string& f : files) prog.bytes_total += fs::file_size(f);
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };

  // Shards are assembled out of sight and moved in at the end. Staging directories of runs
  // that were killed (their process is gone) are removed first.
  fs::create_directories(opt.out_dir);
  // (Named with the host: a process of another machine sharing --out cannot be asked here.)
  char host_name[256] = {};
  gethostname(host_name, sizeof(host_name) - 1);
  const std::string mine = fmt::format(".t6-prepare-{}-", host_name);
  for (const auto& e : fs::directory_iterator(opt.out_dir)) {
    const std::string name = e.path().filename().string();
    if (!e.is_directory() || name.rfind(mine, 0) != 0) continue;
    const long pid = std::atol(name.c_str() + mine.size());
    if (pid > 0 && ::kill((pid_t)pid, 0) != 0 && errno == ESRCH) {
      std::error_code ignored;
      fs::remove_all(e.path(), ignored);
      summary.stale_staging++;
    }
  }
  const fs::path staging = fs::path(opt.out_dir) / fmt::format("{}{}", mine, getpid());
  fs::create_directories(staging);
  const ShardMeta meta{0, tokenizer->vocab_size(), tokenizer->name(), tokenizer->eot_token()};
  ShardWriter train{staging.string(), "train", opt.shard_tokens, opt.compress, meta};
  ShardWriter val{staging.string(), "val", opt.shard_tokens, opt.compress, meta};
  try {
    if (opt.from_bin) {
      // Without document boundaries in hand, validation takes the first val_tokens tokens,
      // extended to the next end-of-text so that it ends on a whole document.
      bool val_done = opt.val_tokens == 0;
      for (const std::string& path : files) {
        read_bin(path, meta.vocab_size, [&](const uint32_t* t, size_t n) {
          size_t i = 0;
          for (; !val_done && i < n; i++) {
            val.add(t + i, 1);
            val_done = val.tokens >= opt.val_tokens && t[i] == (uint32_t)meta.eot_token;
          }
          train.add(t + i, n - i);
          for (size_t k = 0; k < n; k++) summary.documents += t[k] == (uint32_t)meta.eot_token;
          if (progress) { prog.tokens = train.tokens + val.tokens; prog.seconds = elapsed(); progress(prog); }
        }, prog.bytes_done);
      }
      summary.bytes = prog.bytes_done;
      if (train.tokens + val.tokens == 0)
        throw std::invalid_argument(fmt::format("empty input: the {} token file(s) hold no tokens", files.size()));
    } else {
      TextSource source(files, opt.jsonl_field);
      std::vector<Document> batch;
      while (source.next_batch(batch, prog.bytes_done)) {
#pragma omp parallel for schedule(dynamic, 1)
        for (size_t d = 0; d < batch.size(); d++) {
          tokenizer->encode(batch[d].text, batch[d].tokens);
          batch[d].tokens.push_back((uint32_t)meta.eot_token);
        }
        for (Document& doc : batch) {
          summary.bytes += doc.text.size();
          if (doc.text.empty()) { summary.empty_documents++; continue; }
          summary.documents++;
          (val.tokens < opt.val_tokens ? val : train).add(doc.tokens.data(), doc.tokens.size());
        }
        if (progress) {
          prog.documents = summary.documents;
          prog.tokens = train.tokens + val.tokens;
          prog.seconds = elapsed();
          progress(prog);
        }
      }
      if (summary.documents == 0)
        throw std::invalid_argument(fmt::format("empty input: the {} input file(s) hold no documents", files.size()));
    }
    train.flush();
    val.flush();
    if (train.tokens == 0)
      throw std::invalid_argument(fmt::format(
          "all {} tokens went to validation (--val-tokens {}): nothing is left to train on", val.tokens, opt.val_tokens));
    for (const auto& e : fs::directory_iterator(staging)) fs::rename(e.path(), fs::path(opt.out_dir) / e.path().filename());
    fs::remove(staging);
    sync_path(opt.out_dir);  // the shards' new names survive a crash
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(staging, ignored);
    throw;
  }
  summary.tokens = train.tokens + val.tokens;
  summary.train_tokens = train.tokens;
  summary.val_tokens = val.tokens;
  summary.train_shards = train.shards;
  summary.val_shards = val.shards;
  summary.seconds = elapsed();
  return summary;
}

}  // namespace t6
