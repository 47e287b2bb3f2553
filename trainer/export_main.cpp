// t6-export: a checkpoint (or weights file) → model.safetensors + config.json for PyTorch and
// Hugging Face tooling.
#include <fmt/format.h>

#include <exception>
#include <filesystem>
#include <string>

#include "model/layout.h"
#include "trainer/args.h"
#include "trainer/tools.h"

static const char* kUsage =
    "usage: t6-export CKPT_DIR|WEIGHTS.safetensors --out DIR [--config FILE.yaml]\n"
    "  writes a folder that Hugging Face transformers loads with\n"
    "  AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True): DIR/model.safetensors\n"
    "  (fp32, the reference parameter names), DIR/config.json (every T6 field), DIR/modeling_t6.py,\n"
    "  and for GPT-2 data the tokenizer's files (AutoTokenizer.from_pretrained(DIR))\n"
    "  --config   the model's config, for a weights file that does not carry one\n";

int main(int argc, char** argv) {
  try {
    std::string source, out, config;
    t6::Args args(argc, argv);
    while (args.next()) {
      if (args.help()) { fmt::print("{}", kUsage); return 0; }
      else if (args.is("--out")) out = args.value();
      else if (args.is("--config")) config = args.value();
      else if (args.positional() && source.empty()) source = args.arg();
      else if (args.positional()) throw std::invalid_argument("more than one source given: " + args.arg());
      else args.unknown();
    }
    if (source.empty() || out.empty()) throw std::invalid_argument("a source and --out DIR are required");
    const t6::WeightsAndConfig w = t6::load_weights_and_config(source, config);
    const t6::ExportResult r = t6::export_weights(w, out);
    fmt::print("t6-export: {} parameters of T6 {} → {} (model.safetensors, config.json, modeling_t6.py{})\n",
               t6::make_layout(w.config.model).parameter_count(), t6::attention_name(w.config.model.attention),
               (std::filesystem::path(out) / "").string(),
               r.tokenizer_files ? ", GPT-2 tokenizer files" : "");
    if (!r.tokenizer_files)
      fmt::print("t6-export: note: the model reads {} tokens, which have no Hugging Face tokenizer: the folder loads "
                 "with AutoModelForCausalLM, but AutoTokenizer will not load it (feed token ids, or use "
                 "t6-generate)\n", r.tokenizer);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "t6-export: error: {}\n{}", e.what(), kUsage);
    return 1;
  }
}
