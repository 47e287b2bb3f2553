// t6-prepare: raw text or token files → HDF5 token shards (data/README.md).
#include <fmt/format.h>
#include <unistd.h>

#include <cstdint>
#include <exception>
#include <filesystem>
#include <string>

#include "data/mc_eval.h"
#include "data/prepare.h"
#include "data/tokenizer.h"
#include "trainer/args.h"

static const char* kUsage =
    "usage: t6-prepare --out DIR [--tokenizer gpt2|byte] [--shard-tokens N] [--val-tokens N]\n"
    "                  [--jsonl-field NAME] [--from-bin] [--compress] [--vocab-dir DIR] INPUT...\n"
    "       t6-prepare --eval hellaswag FILE.jsonl --out DIR [--tokenizer gpt2|byte]\n"
    "  --eval hellaswag   a multiple-choice set in HellaSwag's JSON Lines (ctx, endings, label)\n"
    "                 → DIR/<name>.mc.jsonl, for train.eval_mc and t6-eval --mc\n"
    "  INPUT          text files (one document each), .jsonl files (one document per line),\n"
    "                 directories (recursive) or glob patterns; with --from-bin, token files\n"
    "  --out DIR      where train_000000.h5, ... and val_000000.h5, ... are written\n"
    "  --tokenizer    gpt2 (GPT-2 BPE, vocabulary 50257, end-of-text 50256; default) or byte\n"
    "                 (one token per byte, vocabulary 256, end-of-text 0)\n"
    "  --shard-tokens N   tokens per shard file (default 100000000)\n"
    "  --val-tokens N     the first documents, until they hold N tokens, become validation\n"
    "                     shards; 0 (default) writes none\n"
    "  --jsonl-field NAME the field of each JSONL line that holds the text (default text)\n"
    "  --from-bin         inputs are nanoGPT/llm.c token files (.bin: 256-int32 header with magic\n"
    "                     20240520, or headerless uint16), already tokenized with --tokenizer\n"
    "  --compress         deflate-compressed shards: smaller, slower to read (for shipped samples)\n"
    "  --vocab-dir DIR    encoder.json and vocab.bpe for gpt2 (default: the shipped data/gpt2)\n";

static std::string human_bytes(double b) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (b >= 1000 && u < 4) { b /= 1000; u++; }
  return fmt::format("{:.1f} {}", b, units[u]);
}

// A bar redrawn in place on a terminal; a plain line every 10 s otherwise (logs, CI).
static void show_progress(const t6::PrepareProgress& p) {
  static const bool tty = isatty(STDERR_FILENO);
  static double last = -1;
  if (p.seconds - last < (tty ? 0.2 : 10.0)) return;
  last = p.seconds;
  const double frac = p.bytes_total ? std::min(1.0, (double)p.bytes_done / p.bytes_total) : 0.0;
  const double rate = p.seconds > 0 ? p.bytes_done / p.seconds : 0.0;
  const double eta = rate > 0 ? (p.bytes_total - p.bytes_done) / rate : 0.0;
  const std::string stats = fmt::format("{:5.1f}% {} of {}, {}/s, {} tokens, ETA {:.0f} s", 100 * frac,
                                        human_bytes(p.bytes_done), human_bytes(p.bytes_total), human_bytes(rate),
                                        p.tokens, eta);
  if (tty) {
    const int width = 30, filled = (int)(frac * width);
    fmt::print(stderr, "\r[{}{}] {}   ", std::string(filled, '#'), std::string(width - filled, '-'), stats);
  } else {
    fmt::print(stderr, "t6-prepare: {}\n", stats);
  }
}

int main(int argc, char** argv) {
  try {
    t6::PrepareOptions opt;
    std::string eval_kind;
    t6::Args args(argc, argv);
    while (args.next()) {
      if (args.help()) { fmt::print("{}", kUsage); return 0; }
      else if (args.is("--out")) opt.out_dir = args.value();
      else if (args.is("--tokenizer")) opt.tokenizer = args.value();
      else if (args.is("--vocab-dir")) opt.vocab_dir = args.value();
      else if (args.is("--shard-tokens")) opt.shard_tokens = args.integer(0, INT64_MAX);
      else if (args.is("--val-tokens")) opt.val_tokens = args.integer(0, INT64_MAX);
      else if (args.is("--jsonl-field")) opt.jsonl_field = args.value();
      else if (args.is("--from-bin")) opt.from_bin = true;
      else if (args.is("--compress")) opt.compress = true;
      else if (args.is("--eval")) eval_kind = args.value();
      else if (args.positional()) opt.inputs.push_back(args.arg());
      else args.unknown();
    }
    if (opt.out_dir.empty()) throw std::invalid_argument("--out DIR is required");
    if (!eval_kind.empty()) {
      if (eval_kind != "hellaswag")
        throw std::invalid_argument(fmt::format("--eval {}: the multiple-choice formats read are: hellaswag", eval_kind));
      if (opt.inputs.size() != 1) throw std::invalid_argument("--eval hellaswag takes one FILE.jsonl");
      const auto tokenizer =
          t6::make_tokenizer(opt.tokenizer, opt.vocab_dir.empty() ? t6::kDefaultVocabDir : opt.vocab_dir);
      const std::vector<t6::McExample> ex = t6::hellaswag_examples(opt.inputs[0], *tokenizer);
      std::filesystem::create_directories(opt.out_dir);
      const std::string out =
          (std::filesystem::path(opt.out_dir) / (std::filesystem::path(opt.inputs[0]).stem().string() + ".mc.jsonl"))
              .string();
      t6::write_mc_file(out, ex, opt.tokenizer);
      size_t candidates = 0;
      for (const auto& e : ex) candidates += e.candidates.size();
      fmt::print("t6-prepare: {} examples ({} candidates, tokenizer {}) → {}\n", ex.size(), candidates, opt.tokenizer,
                 out);
      return 0;
    }
    const t6::PrepareSummary s = t6::prepare(opt, show_progress);
    if (isatty(STDERR_FILENO)) fmt::print(stderr, "\n");
    fmt::print("t6-prepare: {} documents{}, {} of text, {} tokens ({:.2f} bytes/token) → {} train shard(s) "
               "({} tokens), {} val shard(s) ({} tokens) in {}; {:.1f} s, {}/s\n",
               s.documents, s.empty_documents ? fmt::format(" ({} empty ones skipped)", s.empty_documents) : "",
               human_bytes(s.bytes), s.tokens, s.tokens ? (double)s.bytes / s.tokens : 0.0, s.train_shards,
               s.train_tokens, s.val_shards, s.val_tokens, opt.out_dir, s.seconds,
               human_bytes(s.seconds > 0 ? s.bytes / s.seconds : 0));
    if (s.skipped_hdf5 > 0)
      fmt::print("t6-prepare: left out {} HDF5 file(s) or staging directories found in the input directories "
                 "(shards are not text)\n", s.skipped_hdf5);
    if (s.stale_staging > 0)
      fmt::print("t6-prepare: removed {} staging director{} of killed earlier runs from {}\n", s.stale_staging,
                 s.stale_staging == 1 ? "y" : "ies", opt.out_dir);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "\nt6-prepare: error: {}\n(t6-prepare --help shows the options)\n", e.what());
    return 1;
  }
}
