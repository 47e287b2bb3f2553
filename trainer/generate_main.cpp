// t6-generate: continue a prompt with a trained model, streaming the text as it is produced.
#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <cmath>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "kernels/context.h"
#include "model/init.h"
#include "model/layout.h"
#include "model/random.h"
#include "trainer/args.h"
#include "trainer/config.h"
#include "trainer/generate.h"
#include "trainer/tools.h"

static const char* kUsage =
    "usage: t6-generate --weights CKPT_DIR|FILE.safetensors (--prompt TEXT | --prompt-file FILE) [options]\n"
    "       t6-generate (--weights W | --config FILE.yaml) --benchmark P [options]\n"
    "  --weights         a checkpoint directory or a safetensors file written by t6-train / t6-export\n"
    "  --config FILE     the model's config, for a weights file that does not carry one\n"
    "  --prompt TEXT     the text to continue; --prompt-file FILE reads it from a file\n"
    "  --max-new-tokens N  tokens to add (default 200)\n"
    "  --temperature T   0 is greedy (default 0.8)\n"
    "  --top-k K         sample among the K most likely tokens (default 0: all)\n"
    "  --top-p P         sample among the fewest most likely tokens reaching probability P (default 1)\n"
    "  --seed S          random seed; sequence b uses S + b (default 1337)\n"
    "  --batch N         sequences generated together from the prompt (default 1)\n"
    "  --max-context N   positions the key/value cache holds (default: prompt + new tokens, at most\n"
    "                    model.block_size; more extends RoPE past the trained length); past it the\n"
    "                    last block_size tokens are recomputed for every token\n"
    "  --tokenizer NAME  byte or gpt2 (default: the training data's, else by vocabulary size)\n"
    "  --device D        auto (the GPU if there is one), cpu (fp32) or cuda (bf16; GPU 0)\n"
    "  --benchmark P     time a random prompt of P tokens and max-new-tokens decode steps instead, after\n"
    "                    a warm-up run of 3 steps (the cache holds P + max-new-tokens positions unless\n"
    "                    --max-context says less);\n"
    "                    without --weights the config's model is initialised from model.seed. Prints\n"
    "                    a table row: prefill and decode tokens/s, the cache beside dense keys/values\n";

namespace {

struct Request {
  std::string weights, config, prompt_text, tokenizer_name, device = "auto";
  bool have_prompt = false;
  long max_context = 0;
  int benchmark_prompt = 0;  // > 0: --benchmark
  t6::GenerateOptions o;
};

Request parse(int argc, char** argv) {
  Request r;
  auto read_prompt_file = [](const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::invalid_argument(fmt::format("--prompt-file {}: cannot read it", path));
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  };
  t6::Args args(argc, argv);
  while (args.next()) {
    if (args.help()) { fmt::print("{}", kUsage); std::exit(0); }
    else if (args.is("--weights")) r.weights = args.value();
    else if (args.is("--config")) r.config = args.value();
    else if (args.is("--prompt") || args.is("--prompt-file")) {
      if (r.have_prompt) throw std::invalid_argument("give the prompt once: --prompt TEXT or --prompt-file FILE");
      r.prompt_text = args.is("--prompt") ? args.value() : read_prompt_file(args.value());
      r.have_prompt = true;
    }
    else if (args.is("--max-new-tokens")) r.o.max_new_tokens = (int)args.integer(0, 1 << 24);
    else if (args.is("--temperature")) r.o.temperature = args.real();
    else if (args.is("--top-k")) r.o.top_k = (int)args.integer(0, 1 << 24);
    else if (args.is("--top-p")) r.o.top_p = args.real();
    else if (args.is("--seed")) r.o.seed = (uint64_t)args.integer(0, 1LL << 62);
    else if (args.is("--batch")) r.o.batch = (int)args.integer(1, 1 << 16);
    else if (args.is("--max-context")) r.max_context = args.integer(1, 1 << 24);
    else if (args.is("--tokenizer")) r.tokenizer_name = args.value();
    else if (args.is("--device")) r.device = args.value();
    else if (args.is("--benchmark")) r.benchmark_prompt = (int)args.integer(1, 1 << 24);
    else args.unknown();
  }
  if (r.benchmark_prompt > 0) {
    if (r.weights.empty() && r.config.empty()) throw std::invalid_argument("--benchmark needs --weights or --config");
    if (r.have_prompt) throw std::invalid_argument("--benchmark makes its own random prompt; leave out --prompt");
  } else if (r.weights.empty() || !r.have_prompt) {
    throw std::invalid_argument("--weights and --prompt (or --prompt-file) are required");
  }
  // (generate() checks these too, by their option names; here they are the flags the user gave)
  if (!(r.o.temperature >= 0) || !std::isfinite(r.o.temperature))
    throw std::invalid_argument(fmt::format("--temperature {}: expected 0 (greedy) or more", r.o.temperature));
  if (!(r.o.top_p > 0 && r.o.top_p <= 1))
    throw std::invalid_argument(fmt::format("--top-p {}: expected a probability in (0, 1]", r.o.top_p));
  r.o.device = t6::device_from_flag(r.device);
  return r;
}

// The cache holds prompt + new tokens (at most block_size) unless --max-context says otherwise.
int context_for(const Request& r, const t6::ModelConfig& m, size_t prompt_tokens) {
  if (r.max_context > 0) return (int)r.max_context;
  return (int)std::min<size_t>(m.block_size, prompt_tokens + std::max(r.o.max_new_tokens, 1));
}

std::string device_name(const t6::GenerateStats& st) {
  return st.gpu.empty() ? fmt::format("CPU, {} threads", omp_get_max_threads()) : st.gpu;
}

double per_second(double count, double seconds) { return count / std::max(seconds, 1e-9); }

// Continue the prompt: batch 1 streams, the prompt first (once generation has accepted it); a
// batch prints each sequence when all are done. Timings and the cache go to stderr.
void generate_text(const Request& r) {
  const t6::WeightsAndConfig w = t6::load_weights_and_config(r.weights, r.config);
  const t6::ModelConfig& m = w.config.model;
  const auto tokenizer = t6::make_tokenizer(r.tokenizer_name.empty() ? t6::tokenizer_for(w.config) : r.tokenizer_name);
  const std::vector<int32_t> prompt = t6::token_ids(*tokenizer, r.prompt_text);
  if (prompt.empty()) throw std::invalid_argument("the prompt is empty: give some text to continue");
  t6::GenerateOptions o = r.o;
  o.known_vocab = tokenizer->vocab_size();
  o.context = context_for(r, m, prompt.size());

  bool started = false;
  auto echo = [&](const std::string& s) {
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
  };
  auto stream = [&](int, int32_t token) {
    if (o.batch > 1) return;
    if (!started) echo(r.prompt_text), started = true;
    echo(tokenizer->decode({(uint32_t)token}));
  };
  t6::GenerateStats st;
  const auto out = t6::generate(m, w.params, prompt, o, stream, &st);
  if (o.batch == 1 && !started) echo(r.prompt_text);
  if (o.batch > 1)
    for (int b = 0; b < o.batch; b++) {
      const std::string s = tokenizer->decode(std::vector<uint32_t>(out[b].begin(), out[b].end()));
      fmt::print("{}\n--- sequence {} (seed {}) ---\n{}{}", b == 0 ? "" : "\n", b, o.seed + b, r.prompt_text, s);
    }
  std::fputs("\n", stdout);
  std::fflush(stdout);

  fmt::print(stderr, "\nt6-generate: prefill {} tokens in {:.1f} ms ({:.0f} tokens/s)", st.prompt_tokens,
             st.prefill_seconds * 1e3, per_second(st.prompt_tokens, st.prefill_seconds));
  if (st.decode_passes > 0)
    fmt::print(stderr, "; decode {} passes × {} sequence(s) in {:.3f} s ({:.0f} tokens/s)", st.decode_passes, o.batch,
               st.decode_seconds, per_second((double)st.decode_passes * o.batch, st.decode_seconds));
  if (st.window_passes > 0)
    fmt::print(stderr, "; past the context, {} tokens × {} recomputed from the last {} in {:.3f} s ({:.0f} tokens/s)",
               st.window_passes, o.batch, m.block_size, st.window_seconds,
               per_second((double)st.window_passes * o.batch, st.window_seconds));
  fmt::print(stderr, "; {}\n", device_name(st));
  fmt::print(stderr,
             "t6-generate: key/value cache {:.2f} MB: {} numbers per token and layer ({}; dense keys and values "
             "would take {}), {} positions × {} sequence(s) × {} layers\n",
             st.cache_bytes / 1e6, st.cache_numbers_per_token, t6::attention_name(m.attention),
             2 * m.n_head * m.head_dim, o.context, o.batch, m.n_layer);
}

// --benchmark: a random prompt (the seed's) through the same path as generate_text, timed; one
// markdown table row under its header.
void benchmark(const Request& r) {
  t6::WeightsAndConfig w;
  if (!r.weights.empty()) {
    w = t6::load_weights_and_config(r.weights, r.config);
  } else {
    w.config = t6::load_config(r.config);
    w.params = t6::init_params(w.config.model, t6::make_layout(w.config.model), w.config.model.seed);
  }
  const t6::ModelConfig& m = w.config.model;
  if (r.benchmark_prompt > m.block_size)
    throw std::invalid_argument(fmt::format("--benchmark {}: the random prompt is longer than the model's block_size "
                                            "({}), which the prompt's forward pass reads at once",
                                            r.benchmark_prompt, m.block_size));
  std::mt19937_64 rng(r.o.seed);
  std::vector<int32_t> prompt(r.benchmark_prompt);
  for (int32_t& t : prompt) t = (int32_t)t6::uniform_below(rng, m.vocab_size);
  t6::GenerateOptions o = r.o;
  // Room for every new token, past block_size if need be (RoPE extends), so that every decode
  // step is timed on the cache and none on the sliding window's recomputation.
  o.context = r.max_context > 0 ? (int)r.max_context : r.benchmark_prompt + std::max(o.max_new_tokens, 1);
  // One short run first on the same context (the GPU's kernels load and its matmul plans are
  // chosen on first use), then the timed one.
  const t6::Context ctx = o.device == t6::Device::cuda ? t6::make_cuda_context(0) : t6::Context{};
  t6::GenerateOptions warmup = o;
  warmup.max_new_tokens = std::min(o.max_new_tokens, 3);
  t6::generate(ctx, m, w.params, prompt, warmup);
  t6::GenerateStats st;
  t6::generate(ctx, m, w.params, prompt, o, {}, &st);
  if (st.window_passes > 0)
    fmt::print(stderr, "t6-generate: note: {} of the decode steps went past --max-context {} and were recomputed "
               "without the cache (not in the decode column)\n", st.window_passes, o.context);
  const std::string decode = st.decode_passes > 0
                                 ? fmt::format("{:.1f}", per_second((double)st.decode_passes * o.batch, st.decode_seconds))
                                 : "–";
  fmt::print("| model | attention | batch | prompt | new | context | prefill tokens/s | decode tokens/s | cache MB | "
             "cache numbers per token·layer | dense 2·H·D | device |\n");
  fmt::print("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  fmt::print("| {} | {} | {} | {} | {} | {} | {:.0f} | {} | {:.2f} | {} | {} | {} |\n",
             r.weights.empty() ? r.config : r.weights, t6::attention_name(m.attention), o.batch, st.prompt_tokens,
             st.new_tokens, o.context, per_second(st.prompt_tokens, st.prefill_seconds), decode,
             st.cache_bytes / 1e6, st.cache_numbers_per_token, 2 * m.n_head * m.head_dim, device_name(st));
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Request r = parse(argc, argv);
    if (r.benchmark_prompt > 0) benchmark(r);
    else generate_text(r);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "t6-generate: error: {}\n{}", e.what(), kUsage);
    return 1;
  }
}
