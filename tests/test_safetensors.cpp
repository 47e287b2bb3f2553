// Weights interop: round trip, the tied matrix under either name, and import errors that
// list every offending tensor.
#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "model/safetensors.h"
#include "test_util.h"

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
  const std::vector<float> flat = random_flat(layout.total, 1);
  save_weights(dir + "/w.safetensors", layout, flat, {{"note", "test"}});
  EXPECT_EQ(load_weights(dir + "/w.safetensors", layout), flat);
  const auto tensors = read_safetensors(dir + "/w.safetensors");
  EXPECT_EQ(tensors.size(), layout.params.size());
  EXPECT_EQ(tensors.at("transformer.h.0.mlp.c_proj.weight").shape, (std::vector<int64_t>{8, 21}));
  EXPECT_FALSE(std::filesystem::exists(dir + "/w.safetensors.tmp"));
}

TEST(Safetensors, TiedMatrixMayComeAsLmHead) {
  const std::string dir = test::temp_dir("st_lmhead");
  const ParamLayout layout = make_layout(small_config());
  const std::vector<float> flat = random_flat(layout.total, 2);

  // Only lm_head.weight: it becomes wte.
  auto entries = std::vector<std::pair<std::string, std::vector<int64_t>>>{};
  for (const ParamInfo& p : layout.params)
    entries.push_back({p.name == "transformer.wte.weight" ? "lm_head.weight" : p.name, p.shape});
  save_weights(dir + "/head.safetensors", custom_layout(entries), flat);
  EXPECT_EQ(load_weights(dir + "/head.safetensors", layout), flat);

  // Both names, equal: fine. Both names, different: an error naming both.
  entries.insert(entries.begin(), {"transformer.wte.weight", {10, 8}});
  std::vector<float> both(flat.begin(), flat.begin() + 80);
  both.insert(both.end(), flat.begin(), flat.end());
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
  for (const ParamInfo& p : layout.params) {
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
}

}  // namespace
}  // namespace t6
