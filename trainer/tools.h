// What t6-export and t6-eval do, as functions the tests can call.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "kernels/context.h"
#include <vector>

#include "trainer/config.h"

namespace t6 {

struct WeightsAndConfig {
  Config config;
  std::vector<float> params;  // layout order
};

// From a checkpoint directory (its stored config) or a safetensors file (the config in its
// metadata, as t6-train writes it, or else the YAML file `config_path`).
WeightsAndConfig load_weights_and_config(const std::string& source, const std::string& config_path = "");

// Writes a folder Hugging Face transformers loads (AutoModelForCausalLM with
// trust_remote_code): DIR/model.safetensors, DIR/config.json (every T6 field, model_type t6,
// auto_map) and DIR/modeling_t6.py (trainer/hf/); for GPT-2 data also the tokenizer's files
// (vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json). The byte tokenizer
// has no Hugging Face counterpart: then no tokenizer files.
struct ExportResult {
  std::string tokenizer;        // byte or gpt2
  bool tokenizer_files = false;
};
ExportResult export_weights(const WeightsAndConfig& w, const std::string& out_dir);

// The tokenizer of the model's training data when its shards are at hand, else the one its
// vocabulary size points to (256: byte; GPT-2's 50257, padded: gpt2); throws when neither tells.
std::string tokenizer_for(const Config& cfg);

class DataLoader;

// Mean of the per-batch mean losses over the loader's next `windows` micro-batches (Model is
// a T6 on either backend).
template <class Model>
// stop, if given, is asked before each micro-batch: true ends the evaluation early, and the
// result is NaN (a partial mean would not be comparable along a run).
double mean_loss(Model& model, DataLoader& data, uint64_t windows, const std::function<bool()>& stop = {});

struct EvalResult {
  double loss = 0;      // mean over windows of the mean token loss
  uint64_t windows = 0, tokens = 0;
};

// Every window of the data once, in order, batch × block_size tokens at a time.
// On ctx's device: the fp32 CPU reference, or bf16 on a GPU.
EvalResult evaluate_data(const WeightsAndConfig& w, const std::vector<std::string>& data, int batch,
                         const Context& ctx = Context{});

// A tool's --device value: auto (a GPU when one is visible, as train.device: auto), cpu or cuda
// (an error when no GPU is visible).
Device device_from_flag(const std::string& value);

}  // namespace t6
