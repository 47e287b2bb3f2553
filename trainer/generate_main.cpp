// t6-generate: continue a prompt with a trained model, streaming the text as it is produced.
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "kernels/context.h"
#include "trainer/args.h"
#include "trainer/generate.h"
#include "trainer/tools.h"

static const char* kUsage =
    "usage: t6-generate --weights CKPT_DIR|FILE.safetensors (--prompt TEXT | --prompt-file FILE) [options]\n"
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
    "  --device D        auto, cpu or cuda (generation runs on the CPU so far: auto picks it)\n";

namespace {

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string weights, config, prompt_text, tokenizer_name, device = "auto";
    bool have_prompt = false;
    long max_context = 0;
    t6::GenerateOptions o;
    t6::Args args(argc, argv);
    while (args.next()) {
      if (args.help()) { fmt::print("{}", kUsage); return 0; }
      else if (args.is("--weights")) weights = args.value();
      else if (args.is("--config")) config = args.value();
      else if (args.is("--prompt")) prompt_text = args.value(), have_prompt = true;
      else if (args.is("--prompt-file")) {
        const std::string path = args.value();
        std::ifstream f(path, std::ios::binary);
        if (!f) throw std::invalid_argument(fmt::format("--prompt-file {}: cannot read it", path));
        std::stringstream ss;
        ss << f.rdbuf();
        prompt_text = ss.str(), have_prompt = true;
      }
      else if (args.is("--max-new-tokens")) o.max_new_tokens = (int)args.integer(0, 1 << 24);
      else if (args.is("--temperature")) o.temperature = args.real();
      else if (args.is("--top-k")) o.top_k = (int)args.integer(0, 1 << 24);
      else if (args.is("--top-p")) o.top_p = args.real();
      else if (args.is("--seed")) o.seed = (uint64_t)args.integer(0, 1LL << 62);
      else if (args.is("--batch")) o.batch = (int)args.integer(1, 1 << 16);
      else if (args.is("--max-context")) max_context = args.integer(1, 1 << 24);
      else if (args.is("--tokenizer")) tokenizer_name = args.value();
      else if (args.is("--device")) device = args.value();
      else args.unknown();
    }
    if (weights.empty() || !have_prompt) throw std::invalid_argument("--weights and --prompt (or --prompt-file) are required");
    if (device != "auto" && device != "cpu" && device != "cuda")
      throw std::invalid_argument(fmt::format("--device '{}' is not one of auto, cpu, cuda", device));
    if (device == "cuda")
      throw std::invalid_argument("--device cuda: generation runs on the CPU so far (the GPU's key/value cache and "
                                  "decode kernels are not built yet); use --device cpu");

    const t6::WeightsAndConfig w = t6::load_weights_and_config(weights, config);
    const t6::ModelConfig& m = w.config.model;
    const auto tokenizer = t6::make_tokenizer(tokenizer_name.empty() ? t6::tokenizer_for(w.config) : tokenizer_name);
    std::vector<uint32_t> ids;
    tokenizer->encode(prompt_text, ids);
    const std::vector<int32_t> prompt(ids.begin(), ids.end());
    if (prompt.empty()) throw std::invalid_argument("the prompt is empty: give some text to continue");
    o.known_vocab = tokenizer->vocab_size();
    o.context = max_context > 0 ? (int)max_context
                                : std::min<int>(m.block_size, (int)prompt.size() + std::max(o.max_new_tokens, 1));

    // Batch 1 streams, the prompt first (once generation has accepted it); a batch prints each
    // sequence when all are done.
    bool started = false;
    auto echo = [&](const std::string& s) {
      std::fwrite(s.data(), 1, s.size(), stdout);
      std::fflush(stdout);
    };
    auto stream = [&](int b, int32_t token) {
      if (o.batch > 1) return;
      if (!started) echo(prompt_text), started = true;
      echo(tokenizer->decode({(uint32_t)token}));
    };
    t6::GenerateStats st;
    const auto out = t6::generate(m, w.params, prompt, o, stream, &st);
    if (o.batch == 1 && !started) echo(prompt_text);
    if (o.batch > 1)
      for (int b = 0; b < o.batch; b++) {
        const std::string s = tokenizer->decode(std::vector<uint32_t>(out[b].begin(), out[b].end()));
        fmt::print("{}\n--- sequence {} (seed {}) ---\n{}{}", b == 0 ? "" : "\n", b, o.seed + b, prompt_text, s);
      }
    std::fputs("\n", stdout);
    std::fflush(stdout);

    fmt::print(stderr, "\nt6-generate: prefill {} tokens in {:.1f} ms ({:.0f} tokens/s)", st.prompt_tokens,
               st.prefill_seconds * 1e3, st.prompt_tokens / std::max(st.prefill_seconds, 1e-9));
    if (st.decode_passes > 0)
      fmt::print(stderr, "; decode {} passes × {} sequence(s) in {:.3f} s ({:.0f} tokens/s)", st.decode_passes, o.batch,
                 st.decode_seconds, (double)st.decode_passes * o.batch / st.decode_seconds);
    if (st.window_passes > 0)
      fmt::print(stderr, "; past the context, {} tokens × {} recomputed from the last {} in {:.3f} s ({:.0f} tokens/s)",
                 st.window_passes, o.batch, m.block_size, st.window_seconds,
                 (double)st.window_passes * o.batch / st.window_seconds);
    fmt::print(stderr, "; CPU\n");
    fmt::print(stderr,
               "t6-generate: key/value cache {:.2f} MB: {} numbers per token and layer ({}; dense keys and values "
               "would take {}), {} positions × {} sequence(s) × {} layers\n",
               st.cache_bytes / 1e6, st.cache_numbers_per_token, t6::attention_name(m.attention),
               2 * m.n_head * m.head_dim, o.context, o.batch, m.n_layer);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "t6-generate: error: {}\n{}", e.what(), kUsage);
    return 1;
  }
}
