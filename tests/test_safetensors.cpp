// Weights interop: round trip, the tied matrix under either name, and import errors that
// list every offending tensor.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <random>

#include "data/tokenizer.h"
#include "model/init.h"
#include "model/safetensors.h"
#include "test_util.h"
#include "trainer/tools.h"

namespace t6 {
namespace {

ModelConfig small_config() {
  ModelConfig c;
  c.n_layer = 1;
  c.n_embd = 8;
  c.n_head = 2;
  c.head_dim = 4;
  c.q_rank = 2;
  c.rank = 1;
  c.vocab_size = 10;
  return c;
}

std::vector<float> random_flat(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Random parameters of a model: its padding, which no file holds, zero as in training.
std::vector<float> random_params(const ParamLayout& layout, uint64_t seed) {
  std::vector<float> v = random_flat(layout.total, seed);
  for (const ParamInfo& p : layout.params)
    if (p.padding) std::fill(v.begin() + p.offset, v.begin() + p.offset + p.size, 0.0f);
  return v;
}

// A layout holding arbitrary (name, shape) entries, to write files that do not match a model.
ParamLayout custom_layout(const std::vector<std::pair<std::string, std::vector<int64_t>>>& entries) {
  ParamLayout l;
  for (const auto& [name, shape] : entries) {
    ParamInfo p{name, shape, l.total, (size_t)(shape[0] * shape[1])};
    l.total += p.size;
    l.params.push_back(p);
  }
  return l;
}

TEST(Safetensors, RoundTripIsExact) {
  const std::string dir = test::temp_dir("st_roundtrip");
  const ParamLayout layout = make_layout(small_config());
  const std::vector<float> flat = random_params(layout, 1);
  save_weights(dir + "/w.safetensors", layout, flat, {{"note", "test"}});
  EXPECT_EQ(load_weights(dir + "/w.safetensors", layout), flat);
  const auto tensors = read_safetensors(dir + "/w.safetensors");
  EXPECT_EQ(tensors.size(), test::without_padding(layout).params.size());
  EXPECT_EQ(tensors.at("transformer.h.0.mlp.c_proj.weight").shape, (std::vector<int64_t>{8, 21}));
  EXPECT_FALSE(std::filesystem::exists(dir + "/w.safetensors.tmp"));
}

TEST(Safetensors, TiedMatrixMayComeAsLmHead) {
  const std::string dir = test::temp_dir("st_lmhead");
  const ParamLayout layout = make_layout(small_config());
  const std::vector<float> flat = random_params(layout, 2), in_file = test::without_padding(layout, flat);

  // Only lm_head.weight: it becomes wte.
  auto entries = std::vector<std::pair<std::string, std::vector<int64_t>>>{};
  for (const ParamInfo& p : test::without_padding(layout).params)
    entries.push_back({p.name == "transformer.wte.weight" ? "lm_head.weight" : p.name, p.shape});
  save_weights(dir + "/head.safetensors", custom_layout(entries), in_file);
  EXPECT_EQ(load_weights(dir + "/head.safetensors", layout), flat);

  // Both names, equal: fine. Both names, different: an error naming both.
  entries.insert(entries.begin(), {"transformer.wte.weight", {10, 8}});
  std::vector<float> both(flat.begin(), flat.begin() + 80);
  both.insert(both.end(), in_file.begin(), in_file.end());
  save_weights(dir + "/both.safetensors", custom_layout(entries), both);
  EXPECT_EQ(load_weights(dir + "/both.safetensors", layout), flat);
  both[3] += 1.0f;
  save_weights(dir + "/differ.safetensors", custom_layout(entries), both);
  const std::string err = test::error_of([&] { load_weights(dir + "/differ.safetensors", layout); });
  EXPECT_NE(err.find("lm_head.weight"), std::string::npos) << err;
  EXPECT_NE(err.find("must be equal"), std::string::npos) << err;
}

TEST(Safetensors, ImportErrorListsEveryOffendingTensor) {
  const std::string dir = test::temp_dir("st_errors");
  const ParamLayout layout = make_layout(small_config());
  std::vector<std::pair<std::string, std::vector<int64_t>>> entries;
  for (const ParamInfo& p : test::without_padding(layout).params) {
    if (p.name == "transformer.h.0.mlp.c_fc2.weight") continue;                   // missing
    if (p.name == "transformer.h.0.mlp.c_fc1.weight") { entries.push_back({p.name, {20, 8}}); continue; }  // mis-shaped
    entries.push_back({p.name, p.shape});
  }
  entries.push_back({"transformer.h.0.attn.bias", {1, 4}});  // unexpected
  const ParamLayout bad = custom_layout(entries);
  save_weights(dir + "/bad.safetensors", bad, random_flat(bad.total, 3));
  const std::string err = test::error_of([&] { load_weights(dir + "/bad.safetensors", layout); });
  EXPECT_NE(err.find(dir + "/bad.safetensors"), std::string::npos) << err;
  EXPECT_NE(err.find("missing     transformer.h.0.mlp.c_fc2.weight (expected shape [21, 8])"), std::string::npos) << err;
  EXPECT_NE(err.find("wrong shape transformer.h.0.mlp.c_fc1.weight: file has [20, 8], model expects [21, 8]"),
            std::string::npos) << err;
  EXPECT_NE(err.find("unexpected  transformer.h.0.attn.bias (shape [1, 4])"), std::string::npos) << err;
}

TEST(Safetensors, RejectsFilesThatAreNotSafetensors) {
  const std::string dir = test::temp_dir("st_garbage");
  std::ofstream(dir + "/junk.safetensors") << "this is not a safetensors file at all";
  const std::string err = test::error_of([&] { read_safetensors(dir + "/junk.safetensors"); });
  EXPECT_NE(err.find("junk.safetensors: not a safetensors file"), std::string::npos) << err;
  EXPECT_NE(test::error_of([&] { read_safetensors(dir + "/absent.safetensors"); }).find("cannot open"), std::string::npos);
  // Cut copies and hostile headers: the file named, the problem said, no library exception text.
  auto with_header = [&](const std::string& name, const std::string& header, uint64_t claimed, size_t keep) {
    std::string bytes(8, '\0');
    std::memcpy(bytes.data(), &claimed, 8);
    bytes += header;
    std::ofstream(dir + "/" + name, std::ios::binary) << bytes.substr(0, keep);
    return test::error_of([&] { read_safetensors(dir + "/" + name); });
  };
  const std::string good = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::string e = with_header("cut.safetensors", good, good.size(), 8 + good.size() / 2);
  EXPECT_NE(e.find("cut.safetensors: truncated: its header claims"), std::string::npos) << e;
  e = with_header("array.safetensors", "[1, 2]", 6, 14);
  EXPECT_NE(e.find("array.safetensors: the safetensors header is not a JSON object"), std::string::npos) << e;
  const std::string no_shape = R"({"w":{"dtype":"F32","data_offsets":[0,8]}})";
  e = with_header("noshape.safetensors", no_shape, no_shape.size(), 8 + no_shape.size());
  EXPECT_NE(e.find("noshape.safetensors: tensor 'w': malformed header entry"), std::string::npos) << e;
  const std::string negative = R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})";
  e = with_header("negative.safetensors", negative, negative.size(), 8 + negative.size());
  EXPECT_NE(e.find("tensor 'w': malformed header entry"), std::string::npos) << e;
  e = with_header("badjson.safetensors", "{\"w\": ", 6, 14);
  EXPECT_NE(e.find("badjson.safetensors: the safetensors header (6 bytes) is not valid JSON"), std::string::npos) << e;
  EXPECT_EQ(e.find("json.exception"), std::string::npos) << e;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// t6-export's folder for Hugging Face: config.json with the fields transformers and lm-eval read,
// the model code, the weights; GPT-2's tokenizer files (the shipped vocabulary under Hugging
// Face's names) only for a GPT-2 model. (The loss of the exported model against t6-eval:
// tests/pytorch/roundtrip.sh.)
TEST(Export, WritesAFolderHuggingFaceLoads) {
  for (const bool gpt2 : {false, true}) {
    WeightsAndConfig w;
    w.config.model = small_config();
    w.config.model.vocab_size = gpt2 ? 50304 : 256;
    w.config.data.train = {"/nonexistent/train_*.h5"};  // not at hand: the vocabulary tells the tokenizer
    w.params = init_params(w.config.model, make_layout(w.config.model), 3);
    const std::string dir = test::temp_dir(gpt2 ? "export_gpt2" : "export_byte");
    const ExportResult r = export_weights(w, dir);
    EXPECT_EQ(r.tokenizer, gpt2 ? "gpt2" : "byte");
    const auto j = nlohmann::json::parse(slurp(dir + "/config.json"));
    EXPECT_EQ(j["model_type"], "t6");
    EXPECT_EQ(j["architectures"][0], "T6ForCausalLM");
    EXPECT_EQ(j["auto_map"]["AutoModelForCausalLM"], "modeling_t6.T6ForCausalLM");
    EXPECT_EQ(j["auto_map"]["AutoConfig"], "modeling_t6.T6Config");
    EXPECT_EQ(j["max_position_embeddings"], w.config.model.block_size);
    EXPECT_EQ(j["tie_word_embeddings"], true);
    EXPECT_EQ(j["q_rank"], 2);
    EXPECT_EQ(j["rank"], 1);
    EXPECT_EQ(slurp(dir + "/modeling_t6.py"), slurp(std::string(T6_SOURCE_DIR) + "/trainer/hf/modeling_t6.py"));
    EXPECT_EQ(load_weights(dir + "/model.safetensors", make_layout(w.config.model)), w.params);
    EXPECT_EQ(r.tokenizer_files, gpt2);
    EXPECT_EQ(std::filesystem::exists(dir + "/vocab.json"), gpt2);
    if (gpt2) {
      EXPECT_EQ(slurp(dir + "/vocab.json"), slurp(std::string(kDefaultVocabDir) + "/encoder.json"));
      EXPECT_EQ(slurp(dir + "/merges.txt"), slurp(std::string(kDefaultVocabDir) + "/vocab.bpe"));
      const auto tok = nlohmann::json::parse(slurp(dir + "/tokenizer_config.json"));
      EXPECT_EQ(tok["tokenizer_class"], "GPT2Tokenizer");
      EXPECT_EQ(tok["eos_token"], "<|endoftext|>");
      EXPECT_EQ(j["eos_token_id"], 50256);
    }
    std::filesystem::remove_all(dir);
  }
}

}  // namespace
}  // namespace t6
