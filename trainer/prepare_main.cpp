// t6-prepare: raw text files → HDF5 token shards (data/README.md).
#include <fmt/format.h>

#include <cstring>
#include <exception>
#include <string>

#include "data/prepare.h"

static const char* kUsage =
    "usage: t6-prepare --out DIR [--tokenizer byte] [--shard-tokens N] [--val-tokens N] [--compress] INPUT...\n"
    "  INPUT         text files (one document each), directories (recursive) or glob patterns\n"
    "  --out DIR     where train_000000.h5, ... and val_000000.h5, ... are written\n"
    "  --tokenizer   byte (one token per byte, vocabulary 256, end-of-text 0); default byte\n"
    "  --shard-tokens N   tokens per shard file (default 100000000)\n"
    "  --val-tokens N     the first documents, until they hold N tokens, become validation\n"
    "                     shards; 0 (default) writes none\n"
    "  --compress         deflate-compressed shards: smaller, slower to read (for shipped samples)\n";

static uint64_t parse_count(const char* flag, const char* value) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(value, &end, 10);
  if (errno || !end || *end || value[0] == '-')
    throw std::invalid_argument(fmt::format("{} {}: expected a non-negative integer", flag, value));
  return v;
}

int main(int argc, char** argv) {
  try {
    t6::PrepareOptions opt;
    for (int i = 1; i < argc; i++) {
      std::string a = argv[i];
      auto value = [&]() -> const char* {
        if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
        return argv[++i];
      };
      if (a == "-h" || a == "--help") { fmt::print("{}", kUsage); return 0; }
      else if (a == "--out") opt.out_dir = value();
      else if (a == "--tokenizer") opt.tokenizer = value();
      else if (a == "--shard-tokens") opt.shard_tokens = parse_count("--shard-tokens", value());
      else if (a == "--val-tokens") opt.val_tokens = parse_count("--val-tokens", value());
      else if (a == "--compress") opt.compress = true;
      else if (a.rfind("--", 0) == 0) throw std::invalid_argument("unknown option " + a);
      else opt.inputs.push_back(a);
    }
    if (opt.out_dir.empty()) throw std::invalid_argument("--out DIR is required");
    const t6::PrepareSummary s = t6::prepare(opt);
    fmt::print("t6-prepare: {} documents, {} tokens ({:.2f} bytes/token) → {} train shard(s) ({} tokens), "
               "{} val shard(s) ({} tokens) in {}, {:.1f} s\n",
               s.documents, s.tokens, s.tokens ? (double)s.bytes / s.tokens : 0.0, s.train_shards, s.train_tokens,
               s.val_shards, s.val_tokens, opt.out_dir, s.seconds);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "t6-prepare: error: {}\n{}", e.what(), kUsage);
    return 1;
  }
}
