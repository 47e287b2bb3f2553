// t6-eval: the loss and perplexity of weights on a token set, every window once, in order.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <string>
#include <vector>

#include "model/t6.h"
#include "trainer/args.h"
#include "trainer/mc_eval.h"
#include "trainer/tools.h"

static const char* kUsage =
    "usage: t6-eval --weights CKPT_DIR|FILE.safetensors (--data GLOB [--data GLOB ...] | --mc FILE)\n"
    "               [--batch B] [--config FILE.yaml] [--device cpu|cuda|auto]\n"
    "  --weights  a checkpoint directory or a safetensors file written by t6-train / t6-export\n"
    "  --data     token shards (data/README.md); every window of block_size tokens is read once\n"
    "  --mc       a multiple-choice file (t6-prepare --eval): accuracy by summed and by mean\n"
    "             completion loss (a trend signal; lm-eval's figures differ)\n"
    "  --batch    sequences per forward pass (default 8)\n"
    "  --config   the model's config, for a weights file that does not carry one\n"
    "  --device   cpu (default: the fp32 reference, the numbers the PyTorch checks compare), cuda\n"
    "             (GPU 0, bf16: faster, within bf16's accuracy) or auto (cuda when a GPU is visible,\n"
    "             as t6-train's train.device: auto)\n";

template <class Model>
static t6::McScore score_with(const t6::Context& ctx, const t6::WeightsAndConfig& w,
                              const std::vector<t6::McExample>& ex, int batch, int T) {
  Model model(w.config.model, ctx, batch, T);
  model.params_from_host(w.params);
  return t6::score_multiple_choice(model, ex);
}

static t6::McScore score(const t6::Context& ctx, const t6::WeightsAndConfig& w, const std::vector<t6::McExample>& ex,
                         int batch, int T) {
  if (ctx.device == t6::Device::cpu) return score_with<t6::T6<float>>(ctx, w, ex, batch, T);
#ifdef T6_WITH_CUDA
  return score_with<t6::T6<t6::bf16, float>>(ctx, w, ex, batch, T);
#else
  throw std::invalid_argument("--device cuda: this build has no CUDA backend");
#endif
}

int main(int argc, char** argv) {
  try {
    std::string weights, config, mc, device = "cpu";
    std::vector<std::string> data;
    int batch = 8;
    t6::Args args(argc, argv);
    while (args.next()) {
      if (args.help()) { fmt::print("{}", kUsage); return 0; }
      else if (args.is("--weights")) weights = args.value();
      else if (args.is("--data")) data.push_back(args.value());
      else if (args.is("--config")) config = args.value();
      else if (args.is("--mc")) mc = args.value();
      else if (args.is("--batch")) batch = (int)args.integer(1, 1 << 20);
      else if (args.is("--device")) device = args.value();
      else args.unknown();
    }
    if (weights.empty() || (data.empty() && mc.empty()))
      throw std::invalid_argument("--weights and --data (or --mc) are required");
    const t6::Context ctx = t6::device_from_flag(device) == t6::Device::cuda ? t6::make_cuda_context(0) : t6::Context{};
    const t6::WeightsAndConfig w = t6::load_weights_and_config(weights, config);
    if (!mc.empty()) {
      std::string tokenizer;  // the model's, when it can be told
      try {
        tokenizer = t6::tokenizer_for(w.config);
      } catch (const std::exception&) {
      }
      const std::vector<t6::McExample> ex = t6::read_mc_file(mc, w.config.model.vocab_size, tokenizer);
      // Windows as long as the longest candidate needs (at most block_size): less padding.
      int longest = 2;
      for (const auto& e : ex)
        for (const auto& c : e.candidates) longest = std::max(longest, (int)c.size());
      const int T = std::min(w.config.model.block_size, longest - 1);
      const t6::McScore s = score(ctx, w, ex, batch, T);
      fmt::print("multiple choice: acc {:.4f} | acc_norm {:.4f} | {} examples\n", s.acc, s.acc_norm, s.examples);
      if (data.empty()) return 0;
    }
    const t6::EvalResult r = t6::evaluate_data(w, data, batch, ctx);
    fmt::print("loss {:.6f} | perplexity {:.4f} | {} windows of {}×{} = {} tokens\n", r.loss, std::exp(r.loss),
               r.windows, batch, w.config.model.block_size, r.tokens);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "t6-eval: error: {}\n{}", e.what(), kUsage);
    return 1;
  }
}
