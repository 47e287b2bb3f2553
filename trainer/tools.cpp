#include "trainer/tools.h"

#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "data/h5.h"
#include "data/loader.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "model/safetensors.h"
#include "model/t6.h"
#include "trainer/checkpoint.h"

namespace t6 {

namespace fs = std::filesystem;

WeightsAndConfig load_weights_and_config(const std::string& source, const std::string& config_path) {
  WeightsAndConfig w;
  if (fs::is_directory(source)) {
    w.config = load_config_text(checkpoint_config(source), source + " (its stored config)");
    if (!config_path.empty()) w.config = load_config(config_path);
    w.params = load_checkpoint(source, make_layout(w.config.model)).params;
    return w;
  }
  if (!fs::exists(source)) throw std::invalid_argument(fmt::format("{}: no such checkpoint directory or weights file", source));
  if (!config_path.empty()) {
    w.config = load_config(config_path);
  } else {
    const auto meta = read_safetensors_metadata(source);
    const auto it = meta.find("t6_config");
    if (it == meta.end())
      throw std::invalid_argument(fmt::format(
          "{}: the file carries no T6 config in its metadata; pass the model's config with --config FILE.yaml", source));
    w.config = load_config_text(it->second, source + " (metadata)");
  }
  w.params = load_weights(source, make_layout(w.config.model));
  return w;
}

// The training data's tokenizer when its shards are at hand, else the one the vocabulary size
// points to (256 bytes; GPT-2's 50257, padded).
std::string tokenizer_for(const Config& cfg) {
  try {
    const auto shards = expand_shards(cfg.data.train, "data.train");
    if (!shards.empty()) return ShardReader(shards.front()).meta().tokenizer;
  } catch (const std::exception&) {
  }
  if (cfg.model.vocab_size <= 256) return "byte";
  if (cfg.model.vocab_size >= 50257) return "gpt2";
  throw std::invalid_argument(fmt::format(
      "cannot tell the tokenizer of a model with a vocabulary of {} (its training data is not at hand): pass "
      "--tokenizer byte or --tokenizer gpt2",
      cfg.model.vocab_size));
}

namespace {

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(fmt::format("{}: cannot read it (part of the source tree t6-export was built from)", path));
  return std::string(std::istreambuf_iterator<char>(f), {});
}

}  // namespace

ExportResult export_weights(const WeightsAndConfig& w, const std::string& out_dir) {
  const ModelConfig& m = w.config.model;
  fs::create_directories(out_dir);
  save_weights(out_dir + "/model.safetensors", make_layout(m), w.params,
               {{"format", "pt"}, {"t6_config", w.config.to_yaml()}});
  nlohmann::json j = {{"model_type", "t6"},
                      {"architectures", {"T6ForCausalLM"}},
                      {"auto_map", {{"AutoConfig", "modeling_t6.T6Config"},
                                    {"AutoModelForCausalLM", "modeling_t6.T6ForCausalLM"}}},
                      {"attention", attention_name(m.attention)},
                      {"vocab_size", m.vocab_size},
                      {"n_layer", m.n_layer},
                      {"n_head", m.n_head},
                      {"head_dim", m.head_dim},
                      {"n_embd", m.n_embd},
                      {"block_size", m.block_size},
                      {"max_position_embeddings", m.block_size},
                      {"tie_word_embeddings", true},
                      {"torch_dtype", "float32"}};
  if (m.factored_q()) j["q_rank"] = m.q_rank;
  if (m.factored_kv()) {
    j["rank"] = m.rank;
    if (m.rank_k() != m.rank || m.rank_v() != m.rank) {
      j["k_rank"] = m.rank_k();
      j["v_rank"] = m.rank_v();
    }
  }
  if (m.attention == Attention::gqa || m.attention == Attention::mqa) j["n_kv_head"] = m.kv_heads();

  ExportResult r;
  try {
    r.tokenizer = tokenizer_for(w.config);
  } catch (const std::invalid_argument&) {
    r.tokenizer = fmt::format("unknown (a vocabulary of {}, and the training data not at hand)", m.vocab_size);
  }
  if (r.tokenizer == "gpt2") {  // GPT-2's files under Hugging Face's names, and its tokenizer class
    const int eot = 50256;
    j["bos_token_id"] = eot, j["eos_token_id"] = eot;
    write_file_atomically(out_dir + "/vocab.json", read_text(std::string(kDefaultVocabDir) + "/encoder.json"));
    write_file_atomically(out_dir + "/merges.txt", read_text(std::string(kDefaultVocabDir) + "/vocab.bpe"));
    const nlohmann::json tok = {{"tokenizer_class", "GPT2Tokenizer"}, {"model_max_length", m.block_size},
                                {"bos_token", "<|endoftext|>"},      {"eos_token", "<|endoftext|>"},
                                {"unk_token", "<|endoftext|>"},      {"add_prefix_space", false},
                                // t6-prepare reads "<|endoftext|>" inside a text as text (data/README.md);
                                // Hugging Face would make it the special token: split it too, so the
                                // model is given the tokens it was trained on.
                                {"split_special_tokens", true}};
    write_file_atomically(out_dir + "/tokenizer_config.json", tok.dump(2) + "\n");
    const nlohmann::json special = {
        {"bos_token", "<|endoftext|>"}, {"eos_token", "<|endoftext|>"}, {"unk_token", "<|endoftext|>"}};
    write_file_atomically(out_dir + "/special_tokens_map.json", special.dump(2) + "\n");
    r.tokenizer_files = true;
  }
  write_file_atomically(out_dir + "/modeling_t6.py", read_text(std::string(T6_HF_DIR) + "/modeling_t6.py"));
  write_file_atomically(out_dir + "/config.json", j.dump(2) + "\n");
  return r;
}

template <class Model>
double mean_loss(Model& model, DataLoader& data, uint64_t windows, const std::function<bool()>& stop) {
  const size_t n = (size_t)model.batch() * model.seq();
  std::vector<int32_t> inputs(n), targets(n);
  double total = 0;
  for (uint64_t i = 0; i < windows; i++) {
    if (stop && stop()) return std::nan("");
    data.next(inputs.data(), targets.data());
    total += model.forward(inputs.data(), targets.data());
  }
  return total / windows;
}

template double mean_loss(T6<float>&, DataLoader&, uint64_t, const std::function<bool()>&);
#ifdef T6_WITH_CUDA
template double mean_loss(T6<bf16, float>&, DataLoader&, uint64_t, const std::function<bool()>&);
#endif

namespace {

template <class Model>
EvalResult evaluate_with(const WeightsAndConfig& w, const std::vector<std::string>& data, int batch,
                         const Context& ctx) {
  const ModelConfig& m = w.config.model;
  DataLoader loader(expand_shards(data, "--data"), batch, m.block_size, false, 0, m.vocab_size, "--data");
  Model model(m, ctx, batch, m.block_size);
  model.params_from_host(w.params);
  EvalResult r;
  r.windows = loader.windows_per_epoch();
  r.tokens = r.windows * batch * m.block_size;
  r.loss = mean_loss(model, loader, r.windows);
  return r;
}

}  // namespace

EvalResult evaluate_data(const WeightsAndConfig& w, const std::vector<std::string>& data, int batch,
                         const Context& ctx) {
  if (ctx.device == Device::cpu) return evaluate_with<T6<float>>(w, data, batch, ctx);
#ifdef T6_WITH_CUDA
  return evaluate_with<T6<bf16, float>>(w, data, batch, ctx);
#else
  throw std::invalid_argument("evaluation on the GPU: this build has no CUDA backend");
#endif
}

Device device_from_flag(const std::string& value) {
  if (value != "auto" && value != "cpu" && value != "cuda")
    throw std::invalid_argument(fmt::format("--device '{}' is not one of auto, cpu, cuda", value));
  const int gpus = value == "cpu" ? 0 : cuda_device_count();
  if (value == "cuda" && gpus == 0)
    throw std::invalid_argument("--device cuda: no GPU is visible (or this build has no CUDA backend); use --device cpu");
  return gpus > 0 ? Device::cuda : Device::cpu;
}

}  // namespace t6
