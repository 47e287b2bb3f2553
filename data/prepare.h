// t6-prepare's logic: raw text (files, JSONL) or nanoGPT/llm.c token files → HDF5 shards.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace t6 {

struct PrepareOptions {
  std::string out_dir;
  std::string tokenizer = "gpt2";         // gpt2 or byte (data/tokenizer.h)
  std::string vocab_dir;                  // gpt2 vocabulary; empty = the shipped data/gpt2
  uint64_t shard_tokens = 100'000'000;    // tokens per shard file
  uint64_t val_tokens = 0;                // the first documents, until they hold this many, go to val
  std::string jsonl_field = "text";       // the document field of .jsonl inputs
  bool from_bin = false;                  // inputs are nanoGPT/llm.c .bin token files
  bool compress = false;                  // deflate-compressed shards
  std::vector<std::string> inputs;        // files, directories (recursive) or glob patterns
};

struct PrepareProgress {
  uint64_t bytes_done = 0, bytes_total = 0, documents = 0, tokens = 0;
  double seconds = 0;
};

struct PrepareSummary {
  uint64_t documents = 0, empty_documents = 0, tokens = 0, bytes = 0, train_tokens = 0, val_tokens = 0;
  int train_shards = 0, val_shards = 0;
  int skipped_hdf5 = 0;      // HDF5 files (shards, say) found in input directories and left out
  int stale_staging = 0;     // hidden staging directories of killed earlier runs, removed
  double seconds = 0;
};

// Files in input order; directories expand recursively and globs match in file-name order.
// HDF5 files are not text: inside a directory they are left out (counted in *skipped_hdf5, and
// so are staging directories), named explicitly they are an error.
std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs, int* skipped_hdf5 = nullptr);

// Writes DIR/train_000000.h5, … and DIR/val_000000.h5, … Shards are assembled in a hidden
// directory inside DIR and moved in only when all are complete, so a failed or interrupted
// run leaves nothing that looks like a dataset. `progress` is called every few megabytes.
PrepareSummary prepare(const PrepareOptions& opt, const std::function<void(const PrepareProgress&)>& progress = {});

}  // namespace t6
