// t6-bench-data: throughput of the data pipeline on this machine.
//  1. t6-prepare with the gpt2 tokenizer, in MB of text per second, on the shipped English
//     sample (data/sample, decoded back to its text);
//  2. the loader, in tokens per second delivered to one rank, with prefetching, reading
//     micro-batches from a large synthetic shard, in order and shuffled, for 1 and 8 ranks.
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "data/loader.h"
#include "data/prepare.h"
#include "trainer/args.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

static double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

static const char* kUsage =
    "usage: t6-bench-data [--tokens N] [--batch B] [--seq T] [--seconds S] [--dir DIR]\n"
    "  --tokens N    size of the synthetic shard for the loader benchmark (default 200000000)\n"
    "  --batch B --seq T   micro-batch shape (default 24 × 1024, T6-small's)\n"
    "  --seconds S   how long each loader measurement runs (default 3)\n"
    "  --dir DIR     scratch directory (default: a new one under /tmp, removed at the end)\n";

int main(int argc, char** argv) {
  uint64_t tokens = 200'000'000;
  int B = 24, T = 1024;
  double seconds = 3;
  std::string dir;
  try {
    t6::Args args(argc, argv);
    while (args.next()) {
      if (args.help()) { fmt::print("{}", kUsage); return 0; }
      else if (args.is("--tokens")) tokens = args.integer(1, 1LL << 40);
      else if (args.is("--batch")) B = (int)args.integer(1, 1 << 16);
      else if (args.is("--seq")) T = (int)args.integer(1, 1 << 24);
      else if (args.is("--seconds")) seconds = args.real(0.01, 3600);
      else if (args.is("--dir")) dir = args.value();
      else args.unknown();
    }
    const bool own_dir = dir.empty();
    if (own_dir) dir = fmt::format("/tmp/t6-bench-data-{}", getpid());
    fs::create_directories(dir);
    fmt::print("machine: {} hardware threads\n", std::thread::hardware_concurrency());

    // 1. Tokenization: the sample's documents as text files, prepared with gpt2.
    const std::vector<std::string> sample = t6::expand_shards({std::string(T6_SOURCE_DIR) + "/data/sample/*.h5"}, "sample");
    fs::create_directories(dir + "/text");
    int docs = 0;
    std::string doc;
    for (const std::string& f : sample) {
      t6::ShardReader r(f);
      std::vector<int32_t> bytes(r.meta().num_tokens);
      r.read(0, bytes.size(), bytes.data());
      for (int32_t b : bytes) {
        if (b != 0) { doc += (char)b; continue; }
        std::ofstream(fmt::format("{}/text/{:04d}.txt", dir, docs++)) << doc;
        doc.clear();
      }
    }
    t6::PrepareOptions opt;
    opt.out_dir = dir + "/gpt2";
    opt.inputs = {dir + "/text"};
    const auto s = t6::prepare(opt);
    fmt::print("t6-prepare, gpt2 tokenizer: {} documents, {:.1f} MB of text → {} tokens in {:.2f} s: {:.2f} MB/s\n",
               s.documents, s.bytes / 1e6, s.tokens, s.seconds, s.bytes / 1e6 / s.seconds);

    // 2. Loader: one big shard of random GPT-2 ids.
    const std::string shard = dir + "/big.h5";
    {
      std::vector<uint32_t> ids(tokens);
      std::mt19937 rng(1);
      for (uint32_t& t : ids) t = rng() % 50257;
      t6::write_shard(shard, ids, t6::ShardMeta{0, 50257, "gpt2", 50256});
    }
    fmt::print("loader: {} tokens in one shard, micro-batch {}×{}, prefetch 4, {:.0f} s per measurement\n", tokens, B, T,
               seconds);
    fmt::print("| order | ranks | tokens/s per rank |\n|---|---|---|\n");
    std::vector<int32_t> in((size_t)B * T), tgt(in.size());
    for (bool shuffle : {false, true}) {
      for (int world : {1, 8}) {
        t6::DataLoader loader({shard}, B, T, shuffle, 1, 50304, "bench", 0, world, 4);
        loader.next(in.data(), tgt.data());  // let the prefetcher start
        const auto start = Clock::now();
        uint64_t batches = 0;
        while (seconds_since(start) < seconds) {
          loader.next(in.data(), tgt.data());
          batches++;
        }
        fmt::print("| {} | {} | {:.1f} M |\n", shuffle ? "shuffled" : "in order", world,
                   batches * (double)B * T / seconds_since(start) / 1e6);
      }
    }
    if (own_dir) fs::remove_all(dir);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "t6-bench-data: error: {}\n{}", e.what(), kUsage);
    return 1;
  }
}
