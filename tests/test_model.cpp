// The whole model: gradients against finite differences in double for every attention
// variant, parameter counts against docs/model.md, and the initial distributions.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>

#include <array>
#include <memory>
#include <random>

#include <fmt/format.h>

#include "model/init.h"
#include "model/random.h"
#include "model/t6.h"
#include "test_util.h"
#include "trainer/config.h"

namespace t6 {
namespace {

ModelConfig tiny(Attention attention) {
  ModelConfig c;
  c.attention = attention;
  c.n_layer = 2;
  c.n_embd = 16;
  c.n_head = 4;
  c.head_dim = 6;
  c.q_rank = 3;
  c.rank = 2;
  c.k_rank = 2;
  c.v_rank = 1;  // R_q ≠ R_k ≠ R_v
  c.n_kv_head = attention == Attention::gqa ? 2 : 0;
  c.vocab_size = 11;
  c.block_size = 5;
  return c;
}

// Moves tensor `second` to where `first` starts and `first` right after it (their offsets; the
// entries keep their order in params), as a layout that ordered them the other way would.
void swap_places(ParamLayout& layout, const std::string& first, const std::string& second) {
  ParamInfo* a = nullptr;
  ParamInfo* b = nullptr;
  for (ParamInfo& p : layout.params) {
    if (p.name == first) a = &p;
    if (p.name == second) b = &p;
  }
  ASSERT_TRUE(a && b) << first << ", " << second;
  b->offset = a->offset;
  a->offset = b->offset + b->size;
}

class ModelGradient : public ::testing::TestWithParam<Attention> {};

TEST_P(ModelGradient, MatchesFiniteDifferences) {
  const Context ctx;
  const ModelConfig cfg = tiny(GetParam());
  const int B = 2, T = 5;
  T6<double> model(cfg, ctx, B, T);
  // Random values everywhere (the spec's init zeroes c_proj, which would hide the attention
  // and MLP gradients upstream of it).
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<double> u(-0.5, 0.5);
  std::vector<double> params(model.layout.total);
  for (double& p : params) p = u(rng);
  model.params.from_host(params.data(), params.size());
  model.refresh_weights();  // params were written directly: the padded compute copies follow

  const std::vector<int32_t> tokens = {1, 4, 4, 0, 10, 7, 2, 9, 3, 3};
  const std::vector<int32_t> targets = {4, 4, 0, -1, 7, 2, 9, 3, 3, 5};  // one ignored position
  model.zero_grads();
  model.forward(tokens.data(), targets.data(), 1.0);
  model.backward();
  std::vector<double> grads(model.layout.total);
  model.grads.to_host(grads.data(), grads.size());

  const double h = 1e-5;
  for (const ParamInfo& p : model.layout.params) {
    std::vector<double> numeric(p.size), analytic(grads.begin() + p.offset, grads.begin() + p.offset + p.size);
    for (size_t i = 0; i < p.size; i++) {
      double& x = params[p.offset + i];
      const double saved = x;
      auto set = [&](double value) {
        x = value;
        model.params.from_host(&x, 1, p.offset + i);
        model.refresh_weights();
      };
      set(saved + h);
      const double up = model.forward(tokens.data(), targets.data());
      set(saved - h);
      const double down = model.forward(tokens.data(), targets.data());
      set(saved);
      numeric[i] = (up - down) / (2 * h);
    }
    EXPECT_LT(test::rel_error(analytic, numeric), 1e-6) << attention_name(cfg.attention) << " " << p.name;
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, ModelGradient,
                         ::testing::Values(Attention::tpa, Attention::tpa_kvonly, Attention::mha, Attention::gqa,
                                           Attention::mqa),
                         [](const auto& info) { return std::string(attention_name(info.param)); });

TEST(Model, ParameterCountsOfThePaperSizesEqualTheSpec) {
  const std::pair<const char*, size_t> table[] = {
      {"configs/t6-small-tpa.yaml", 124342272},
      {"configs/t6-medium-tpa.yaml", 353992704},
      {"configs/t6-large-tpa.yaml", 773698560},
      {"configs/t6-xl-tpa.yaml", 1555814400},
  };
  for (const auto& [file, count] : table) {
    const Config cfg = load_config(test::source_path(file));
    EXPECT_EQ(make_layout(cfg.model).parameter_count(), count) << file;
  }
}

TEST(Model, EveryPaperConfigLoadsWithItsHeadCount) {
  // docs/model.md's table: heads for tpa / tpa_kvonly / mha / gqa / mqa.
  const std::pair<const char*, std::array<int, 5>> heads[] = {
      {"small", {34, 22, 12, 22, 23}}, {"medium", {47, 29, 16, 30, 31}},
      {"large", {61, 37, 20, 38, 39}}, {"xl", {78, 47, 25, 48, 49}}};
  const char* variants[] = {"tpa", "tpa_kvonly", "mha", "gqa", "mqa"};
  for (const auto& [size, h] : heads)
    for (int v = 0; v < 5; v++) {
      const std::string file = fmt::format("configs/t6-{}-{}.yaml", size, variants[v]);
      const Config cfg = load_config(test::source_path(file));
      EXPECT_EQ(cfg.model.n_head, h[v]) << file;
      EXPECT_EQ(attention_name(cfg.model.attention), std::string(variants[v])) << file;
    }
}

TEST(Model, LayoutUsesTheReferenceNamesAndShapes) {
  ModelConfig c = tiny(Attention::tpa);
  const ParamLayout l = make_layout(c);
  EXPECT_EQ(l.params.front().name, "transformer.wte.weight");
  EXPECT_EQ(l.at("transformer.h.1.attn.c_qkv.W_A_q.weight").shape, (std::vector<int64_t>{4 * 3, 16}));
  EXPECT_EQ(l.at("transformer.h.1.attn.c_qkv.W_B_v.weight").shape, (std::vector<int64_t>{1 * 6, 16}));
  EXPECT_EQ(l.at("transformer.h.0.attn.c_proj.weight").shape, (std::vector<int64_t>{16, 4 * 6}));
  EXPECT_EQ(l.at("transformer.h.0.mlp.c_fc1.weight").shape, (std::vector<int64_t>{42, 16}));  // ⌊8·16/3⌋
  c = tiny(Attention::gqa);
  EXPECT_EQ(make_layout(c).at("transformer.h.0.attn.c_k.weight").shape, (std::vector<int64_t>{2 * 6, 16}));
  c = tiny(Attention::tpa_kvonly);
  EXPECT_NE(make_layout(c).find("transformer.h.0.attn.c_qkv.c_q.weight"), nullptr);
  EXPECT_EQ(make_layout(c).find("transformer.h.0.attn.c_qkv.W_A_q.weight"), nullptr);
}

TEST(Model, InitFollowsTheSpecDistributions) {
  ModelConfig c = tiny(Attention::tpa);
  c.n_embd = 96;
  c.vocab_size = 300;
  const ParamLayout l = make_layout(c);
  const std::vector<float> p = init_params(c, l, 7);
  auto check_uniform = [&](const std::string& name, double bound) {
    const ParamInfo& info = l.at(name);
    double sq = 0, maxabs = 0;
    for (size_t i = 0; i < info.size; i++) {
      const double x = p[info.offset + i];
      sq += x * x;
      maxabs = std::max(maxabs, std::abs(x));
    }
    EXPECT_LE(maxabs, bound) << name;
    if (bound > 0) {
      EXPECT_NEAR(std::sqrt(sq / info.size), bound / std::sqrt(3.0), 0.1 * bound) << name;  // U(±b) std
    }
  };
  const double C = 96, H = 4, D = 6;
  check_uniform("transformer.wte.weight", 1 / std::sqrt(C));
  check_uniform("transformer.h.0.attn.c_qkv.W_A_q.weight", std::sqrt(6 / ((H + C) * 3)));
  check_uniform("transformer.h.0.attn.c_qkv.W_B_k.weight", std::sqrt(6 / ((2 + C) * D)));
  check_uniform("transformer.h.0.attn.c_proj.weight", 0);
  check_uniform("transformer.h.1.mlp.c_proj.weight", 0);
  check_uniform("transformer.h.1.mlp.c_fc2.weight", 1 / std::sqrt(C));
  EXPECT_EQ(init_params(c, l, 7), p);   // a pure function of the seed
  EXPECT_NE(init_params(c, l, 8), p);
}

// A seed must give the same model with any standard library: the engine's output is fixed by the
// standard (its 10,000th value below is the one the standard names), the mapping to numbers is ours.
TEST(Random, DrawsAreFixedByTheSeedAlone) {
  std::mt19937_64 rng;  // default seed 5489
  rng.discard(9999);
  std::mt19937_64 copy = rng;
  EXPECT_EQ(copy(), 9981545732273789042ull);
  // 9981545732273789042 / 2^64 and that mapped to [-0.3, 0.3), computed by hand (Python floats)
  std::mt19937_64 a = rng, b = rng;
  EXPECT_EQ(uniform01(a), 0.5411006783847329);
  EXPECT_EQ(uniform(b, -0.3, 0.3), 0.024660407030839715);
#ifdef __GLIBCXX__
  // With libstdc++ the draws equal std::uniform_real_distribution's, so older seeds keep their models.
  std::mt19937_64 ours(42), std_lib(42);
  std::uniform_real_distribution<double> d(-0.25, 0.25);
  for (int i = 0; i < 1000; i++) ASSERT_EQ(uniform(ours, -0.25, 0.25), d(std_lib)) << "draw " << i;
#endif
}

TEST(Random, UniformBelowIsInRangeAndUnbiased) {
  std::mt19937_64 rng(3);
  const int n = 7, draws = 70000;
  std::array<int, n> count{};
  for (int i = 0; i < draws; i++) {
    const uint64_t r = uniform_below(rng, n);
    ASSERT_LT(r, (uint64_t)n);
    count[r]++;
  }
  double chi2 = 0;
  for (int c : count) chi2 += (c - draws / n) * (c - draws / n) / (double)(draws / n);
  EXPECT_LT(chi2, 22.5) << "chi-square with 6 degrees of freedom, p = 0.001";
  EXPECT_EQ(uniform_below(rng, 1), 0u);
  // Past half the range, plain modulo would give the low half twice the weight; rejection does not.
  const uint64_t big = (1ull << 63) + (1ull << 62);
  int low = 0;
  for (int i = 0; i < 20000; i++) low += uniform_below(rng, big) < big / 2;
  EXPECT_NEAR(low / 20000.0, 0.5, 0.02);
}

// The rounded-up products over the stacked q/k/v projections and c_fc1‖c_fc2 read padding that
// the layout owns: an entry right after each, where its rows are not a multiple of 8 (tiny: 60
// q/k/v rows and 2·42 c_fc rows, 4 more each), which is no parameter (not counted in N, so MFU
// is that of the model) and which init leaves zero without drawing numbers for it.
TEST(Model, PaddingFollowsTheStackedMatricesAndIsNoParameter) {
  const ModelConfig cfg = tiny(Attention::tpa);
  const ParamLayout layout = make_layout(cfg);
  auto end_of = [&](const std::string& name) { return layout.at(name).offset + layout.at(name).size; };
  for (int l = 0; l < cfg.n_layer; l++) {
    const ParamInfo& qkv = layout.at(layer_param(l, "attn.qkv_padding"));
    EXPECT_TRUE(qkv.padding);
    EXPECT_EQ(qkv.shape, (std::vector<int64_t>{64 - 60, 16}));
    EXPECT_EQ(qkv.offset, end_of(layer_param(l, "attn.c_qkv.W_B_v.weight")));  // the last of the stacked ones
    EXPECT_EQ(layout.at(layer_param(l, "attn.c_proj.weight")).offset, qkv.offset + qkv.size);
    const ParamInfo& fc = layout.at(layer_param(l, "mlp.fc_padding"));
    EXPECT_TRUE(fc.padding);
    EXPECT_EQ(fc.shape, (std::vector<int64_t>{88 - 84, 16}));
    EXPECT_EQ(fc.offset, end_of(layer_param(l, "mlp.c_fc2.weight")));
    EXPECT_EQ(layout.at(layer_param(l, "mlp.c_proj.weight")).offset, fc.offset + fc.size);
  }
  const size_t padding = 2 * 2 * (4 * 16);  // two layers, two entries, 4 rows of 16
  EXPECT_EQ(std::count_if(layout.params.begin(), layout.params.end(), [](const ParamInfo& p) { return p.padding; }), 4);
  EXPECT_EQ(layout.parameter_count(), layout.total - padding);
  EXPECT_EQ(layout.parameter_count(), test::without_padding(layout).total);
  EXPECT_EQ(flops_per_token(cfg), 6.0 * (double)layout.parameter_count() + 12.0 * 2 * 4 * 6 * 5);

  // Init: the padding zero, every tensor the numbers the layout without padding gets.
  const std::vector<float> init = init_params(cfg, layout, 7);
  EXPECT_EQ(test::without_padding(layout, init), init_params(cfg, test::without_padding(layout), 7));
  for (const ParamInfo& p : layout.params) {
    if (!p.padding) continue;
    EXPECT_EQ(std::vector<float>(init.begin() + p.offset, init.begin() + p.offset + p.size),
              std::vector<float>(p.size, 0.0f)) << p.name;
  }

  // T6-medium: 2·2730 c_fc rows, 4 of padding; 47·(6 + 2 + 2) + 64·(6 + 2 + 2) = 1110 q/k/v rows, 2.
  const ParamLayout medium = make_layout(load_config(test::source_path("configs/t6-medium-tpa.yaml")).model);
  EXPECT_EQ(medium.at(layer_param(23, "mlp.fc_padding")).shape, (std::vector<int64_t>{5464 - 5460, 1024}));
  EXPECT_EQ(medium.at(layer_param(23, "attn.qkv_padding")).shape, (std::vector<int64_t>{1112 - 1110, 1024}));
  // Widths that are multiples of 8 get none (mha: 3·4·6 = 72 q/k/v rows; C = 48: 2·128 c_fc rows).
  ModelConfig even = tiny(Attention::mha);
  even.n_embd = 48;
  const ParamLayout e = make_layout(even);
  EXPECT_EQ(e.parameter_count(), e.total);
  EXPECT_TRUE(std::none_of(e.params.begin(), e.params.end(), [](const ParamInfo& p) { return p.padding; }));
}

// The padding's gradient is zero (the rounded-up weight gradients drop their extra rows), so
// AdamW, weight decay included, keeps it at zero; and what it holds never reaches the loss.
TEST(Model, PaddingGetsNoGradientAndDoesNotChangeTheLoss) {
  const Context ctx;
  const ModelConfig cfg = tiny(Attention::tpa);
  const int B = 2, T = 5;
  T6<double> model(cfg, ctx, B, T);
  std::vector<float> p = init_params(cfg, model.layout, 3);
  std::mt19937_64 rng(9);
  std::uniform_real_distribution<float> u(-0.3f, 0.3f);
  for (const ParamInfo& info : model.layout.params)  // no zero c_proj, which would stop the gradients
    if (!info.padding)
      for (size_t i = 0; i < info.size; i++) p[info.offset + i] += u(rng);
  model.params_from_host(p);
  const std::vector<int32_t> tokens = {1, 4, 4, 0, 10, 7, 2, 9, 3, 3}, targets = {4, 4, 0, -1, 7, 2, 9, 3, 3, 5};
  model.zero_grads();
  const double loss = model.forward(tokens.data(), targets.data(), 1.0);
  model.backward();
  const std::vector<float> grads = model.grads_to_host();
  size_t checked = 0;
  for (const ParamInfo& info : model.layout.params) {
    if (!info.padding) continue;
    checked += info.size;
    EXPECT_EQ(std::vector<float>(grads.begin() + info.offset, grads.begin() + info.offset + info.size),
              std::vector<float>(info.size, 0.0f)) << info.name;
    for (size_t i = 0; i < info.size; i++) p[info.offset + i] = 1.0f;  // garbage for the second pass
  }
  EXPECT_EQ(checked, 2u * 2 * 4 * 16);
  model.params_from_host(p);
  EXPECT_EQ(model.forward(tokens.data(), targets.data()), loss);
}

// The model checks the padding that its products read: moved away from the end of its stacked
// matrix (here swapped with the tensor after it) or missing (a layout from before the padding
// entries), it is an error, not a product that reads another tensor.
TEST(Model, PaddingMustFollowItsStackedMatrix) {
  const ModelConfig cfg = tiny(Attention::tpa);
  ParamLayout layout = make_layout(cfg);
  EXPECT_NO_THROW(check_stacked_layout(cfg, layout));
  swap_places(layout, layer_param(1, "mlp.fc_padding"), layer_param(1, "mlp.c_proj.weight"));
  const std::string moved = test::error_of([&] { check_stacked_layout(cfg, layout); });
  EXPECT_NE(moved.find("transformer.h.1.mlp.fc_padding must be padding of 64 numbers right after the stacked matrix"),
            std::string::npos) << moved;
  const std::string missing = test::error_of([&] { check_stacked_layout(cfg, test::without_padding(make_layout(cfg))); });
  EXPECT_NE(missing.find("transformer.h.0.attn.qkv_padding must be padding"), std::string::npos) << missing;
}

}  // namespace
}  // namespace t6

namespace t6 {
namespace {

TEST(Model, RecomputationGivesTheSameLossAndGradients) {
  // Recomputing the norms and SwiGLU in backward repeats the forward's arithmetic exactly,
  // and keeps less: the loss and every gradient are bitwise those of the stored run.
  const Context ctx;
  const ModelConfig cfg = tiny(Attention::tpa);
  const int B = 2, T = 5;
  T6<double> stored(cfg, ctx, B, T), recomputed(cfg, ctx, B, T, /*recompute=*/true);
  const std::vector<float> params = init_params(cfg, stored.layout, 3);
  std::vector<float> p = params;
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<float> u(-0.3f, 0.3f);
  for (float& x : p) x += u(rng);  // no zero c_proj
  stored.params_from_host(p);
  recomputed.params_from_host(p);
  const std::vector<int32_t> tokens = {1, 4, 4, 0, 10, 7, 2, 9, 3, 3}, targets = {4, 4, 0, -1, 7, 2, 9, 3, 3, 5};
  for (T6<double>* m : {&stored, &recomputed}) m->zero_grads();
  EXPECT_EQ(stored.forward(tokens.data(), targets.data(), 1.0), recomputed.forward(tokens.data(), targets.data(), 1.0));
  stored.backward();
  recomputed.backward();
  EXPECT_EQ(stored.grads_to_host(), recomputed.grads_to_host());
  EXPECT_LT(recomputed.activation_bytes(), stored.activation_bytes());
}

// Building a model is linear in its layers (name lookups are O(1)): 20,000 tiny layers take
// well under a second; the quadratic lookup before took 15 s for 2,000.
TEST(Model, ThousandsOfLayersBuildInLinearTime) {
  const Context ctx;
  ModelConfig cfg = tiny(Attention::tpa);
  cfg.n_layer = 20000;
  const auto start = std::chrono::steady_clock::now();
  T6<float> model(cfg, ctx, 1, 2);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 10.0);
  ASSERT_NE(model.layout.find(layer_param(19999, "mlp.c_proj.weight")), nullptr);
  EXPECT_EQ(model.layout.find(layer_param(19999, "mlp.c_proj.weight"))->offset + model.layout.params.back().size,
            model.layout.total);  // found by name: the last tensor of the last layer
}

// Generation: a prompt through forward() into the cache, then one token at a time through
// decode(), gives the logits the full forward pass gives at every position (double precision),
// for every variant, with prompts of length 1 and block_size − 1, and several sequences at once.
class CachedGeneration : public ::testing::TestWithParam<Attention> {};

TEST_P(CachedGeneration, EqualsTheFullForwardAtEveryPosition) {
  const Context ctx;
  ModelConfig cfg = tiny(GetParam());
  cfg.block_size = 12;
  const int L = cfg.block_size;
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> u(-0.5, 0.5);
  std::vector<double> params(make_layout(cfg).total);
  for (double& p : params) p = u(rng);
  std::vector<int32_t> tokens(L);
  for (int32_t& t : tokens) t = (int32_t)(rng() % cfg.vocab_size);

  for (int prompt : {1, L - 1}) {
    // Three sequences: the prompt, then each its own tokens; each against a full forward pass
    // over its own sequence.
    std::vector<std::vector<int32_t>> seqs(3, tokens);
    for (int b = 1; b < 3; b++)
      for (int t = prompt; t < L; t++) seqs[b][t] = (int32_t)(rng() % cfg.vocab_size);
    std::vector<std::unique_ptr<T6<double>>> full;
    for (int b = 0; b < 3; b++) {
      full.push_back(std::make_unique<T6<double>>(cfg, ctx, 1, L));
      full[b]->params.from_host(params.data(), params.size());
      full[b]->refresh_weights();
      full[b]->forward(seqs[b].data(), nullptr);
    }
    T6<double> model(cfg, ctx, 1, prompt);
    model.params.from_host(params.data(), params.size());
    model.refresh_weights();
    model.forward(tokens.data(), nullptr);
    KvCache<double> cache = model.make_cache(3, L);
    model.store_prompt(cache);
    EXPECT_LT(test::rel_error(model.logits_at(prompt - 1), full[0]->logits_at(prompt - 1)), 1e-9) << "prompt " << prompt;
    for (int t = prompt; t < L; t++) {
      const int32_t next[3] = {seqs[0][t], seqs[1][t], seqs[2][t]};
      const std::vector<double> got = model.decode(next, cache);
      for (int b = 0; b < 3; b++) {
        const std::vector<double> row(got.begin() + b * cfg.vocab_size, got.begin() + (b + 1) * cfg.vocab_size);
        EXPECT_LT(test::rel_error(row, full[b]->logits_at(t)), 1e-9)
            << "prompt " << prompt << ", position " << t << ", sequence " << b;
      }
    }
    EXPECT_EQ(cache.len, L);
    EXPECT_THROW(model.decode(tokens.data(), cache), std::invalid_argument);  // full
  }
}

// A cache longer than block_size: RoPE's angles extend (no weight depends on the length), so a
// model of block_size 6 decoding to position 19 matches a model of block_size 20 reading it all.
TEST(CachedGeneration, PastBlockSizeMatchesALongerModel) {
  const Context ctx;
  ModelConfig shortc = tiny(Attention::tpa), longc = shortc;
  shortc.block_size = 6, longc.block_size = 20;
  std::mt19937_64 rng(8);
  std::uniform_real_distribution<double> u(-0.5, 0.5);
  std::vector<double> params(make_layout(shortc).total);
  ASSERT_EQ(params.size(), make_layout(longc).total);
  for (double& p : params) p = u(rng);
  std::vector<int32_t> tokens(20);
  for (int32_t& t : tokens) t = (int32_t)(rng() % shortc.vocab_size);
  T6<double> full(longc, ctx, 1, 20), model(shortc, ctx, 1, 4);
  for (T6<double>* m : {&full, &model}) {
    m->params.from_host(params.data(), params.size());
    m->refresh_weights();
  }
  full.forward(tokens.data(), nullptr);
  model.forward(tokens.data(), nullptr);
  KvCache<double> cache = model.make_cache(1, 20);
  model.store_prompt(cache);
  for (int t = 4; t < 20; t++)
    EXPECT_LT(test::rel_error(model.decode(&tokens[t], cache), full.logits_at(t)), 1e-9) << "position " << t;
}

INSTANTIATE_TEST_SUITE_P(Variants, CachedGeneration,
                         ::testing::Values(Attention::tpa, Attention::tpa_kvonly, Attention::mha, Attention::gqa,
                                           Attention::mqa),
                         [](const auto& info) { return std::string(attention_name(info.param)); });

// The model finds its stacked matrices by name and checks that they lie together: a tensor
// moved between the q/k/v projections is an error, not silently different products.
TEST(Model, StackedProjectionsAreFoundByNameAndMustBeContiguous) {
  const ModelConfig cfg = tiny(Attention::tpa);
  ParamLayout layout = make_layout(cfg);
  const QkvLayout L = qkv_layout(cfg, layout);
  const int H = cfg.n_head, D = cfg.head_dim;
  EXPECT_EQ(L.width, H * (3 + 2 + 1) + D * (3 + 2 + 1));  // A_q, A_k, A_v, B_q, B_k, B_v rows
  EXPECT_EQ(L.a[0], 0);
  EXPECT_EQ(L.b[0], H * (3 + 2 + 1));
  // Swap layer 0's W_B_v with its attn.c_proj (offsets and all): W_B_v is no longer beside the rest.
  swap_places(layout, layer_param(0, "attn.c_qkv.W_B_v.weight"), layer_param(0, "attn.c_proj.weight"));
  EXPECT_NE(test::error_of([&] { qkv_layout(cfg, layout); }).find("must lie next to each other"), std::string::npos);
  // And a layout with a zero pitch cannot reach the ops.
  QkvLayout bad = L;
  bad.pitch = 0;
  std::vector<double> x(1000);
  EXPECT_NE(test::error_of([&] {
              qkv_forward(Context{}, x.data(), x.data(), x.data(), x.data(), bad, 1, 1);
            }).find("row pitch 0 is below the width"),
            std::string::npos);
}

}  // namespace
}  // namespace t6
