// Generation (trainer/generate.h): the cached path against recomputing every position, the
// sampling rules, and the errors a user can cause.
#include <gtest/gtest.h>

#include <random>

#include "model/t6.h"
#include "test_util.h"
#include "trainer/generate.h"

namespace t6 {
namespace {

ModelConfig small_model(Attention attention) {
  ModelConfig c;
  c.attention = attention;
  c.n_layer = 2, c.n_embd = 32, c.n_head = 4, c.head_dim = 8, c.q_rank = 3, c.rank = 2;
  c.n_kv_head = attention == Attention::gqa ? 2 : 0;
  c.vocab_size = 40, c.block_size = 16;
  return c;
}

// Random weights everywhere (the spec's zero c_proj would make attention irrelevant).
std::vector<float> random_weights(const ModelConfig& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-0.4f, 0.4f);
  std::vector<float> p(make_layout(c).total);
  for (float& x : p) x = u(rng);
  return p;
}

// What the end-of-run sample did before the cache: every token from a forward pass over the
// last block_size tokens, padded after them; the same sampling.
std::vector<int32_t> uncached(const ModelConfig& c, const std::vector<float>& params, std::vector<int32_t> seq,
                              const GenerateOptions& o) {
  const Context ctx;
  const int T = c.block_size;
  T6<float> model(c, ctx, 1, T);
  model.params_from_host(params);
  std::mt19937_64 rng(o.seed);
  std::vector<int32_t> out, window(T);
  for (int i = 0; i < o.max_new_tokens; i++) {
    const int len = std::min<int>((int)seq.size(), T);
    std::fill(window.begin(), window.end(), 0);
    std::copy(seq.end() - len, seq.end(), window.begin());
    model.forward(window.data(), nullptr);
    const std::vector<double> logits = model.logits_at(len - 1);
    const int32_t next = sample_token(logits.data(), c.vocab_size, o, rng);
    seq.push_back(next);
    out.push_back(next);
  }
  return out;
}

class Generation : public ::testing::TestWithParam<Attention> {};

// Greedy and sampled, longer than block_size (the cache fills, then the window slides).
TEST_P(Generation, CachedEqualsRecomputingEveryPosition) {
  const ModelConfig c = small_model(GetParam());
  const std::vector<float> params = random_weights(c, 3);
  const std::vector<int32_t> prompt = {5, 17, 3};
  for (double temperature : {0.0, 0.9}) {
    GenerateOptions o;
    o.max_new_tokens = 24;
    o.temperature = temperature;
    o.top_k = 8;
    GenerateStats st;
    const std::vector<int32_t> got = generate(c, params, prompt, o, {}, &st)[0];
    EXPECT_EQ(got, uncached(c, params, prompt, o)) << "temperature " << temperature;
    EXPECT_EQ(st.new_tokens, 24);
    // The first token from the prefill; positions 3 … 15 fill the cache (13 decode passes), the
    // other 10 tokens come from the sliding window.
    EXPECT_EQ(st.decode_passes, c.block_size - 3);
    EXPECT_EQ(st.window_passes, 24 - 1 - (c.block_size - 3));
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, Generation,
                         ::testing::Values(Attention::tpa, Attention::tpa_kvonly, Attention::mha, Attention::gqa,
                                           Attention::mqa),
                         [](const auto& info) { return std::string(attention_name(info.param)); });

TEST(Generation, SequencesOfABatchDrawFromTheirOwnSeeds) {
  const ModelConfig c = small_model(Attention::tpa);
  const std::vector<float> params = random_weights(c, 4);
  GenerateOptions o;
  o.max_new_tokens = 10;
  o.batch = 3;
  o.seed = 100;
  const auto batch = generate(c, params, {1, 2}, o);
  ASSERT_EQ(batch.size(), 3u);
  for (int b = 0; b < 3; b++) {
    GenerateOptions one = o;
    one.batch = 1;
    one.seed = o.seed + b;
    EXPECT_EQ(batch[b], generate(c, params, {1, 2}, one)[0]) << "sequence " << b;
  }
  EXPECT_NE(batch[0], batch[1]);
}

TEST(Generation, CacheHoldsTpaFactors) {
  GenerateOptions o;
  o.max_new_tokens = 1;
  GenerateStats tpa, mha;
  generate(small_model(Attention::tpa), random_weights(small_model(Attention::tpa), 1), {1}, o, {}, &tpa);
  generate(small_model(Attention::mha), random_weights(small_model(Attention::mha), 1), {1}, o, {}, &mha);
  EXPECT_EQ(tpa.cache_numbers_per_token, (4 + 8) * 2 * 2);  // (H + D)·(R_k + R_v)
  EXPECT_EQ(mha.cache_numbers_per_token, 2 * 4 * 8);        // 2·H·D
  EXPECT_EQ(tpa.cache_bytes, 2u * 16 * tpa.cache_numbers_per_token * sizeof(float));  // layers × context × …
}

TEST(Sampling, GreedyTopKAndTopP) {
  const std::vector<double> logits = {0.5, 3.0, 2.9, -1.0, 2.95};
  std::mt19937_64 rng(1);
  GenerateOptions o;
  o.temperature = 0;
  EXPECT_EQ(sample_token(logits.data(), 5, o, rng), 1);  // the first of the largest
  o.temperature = 1;
  o.top_k = 1;  // the largest only
  for (int i = 0; i < 20; i++) EXPECT_EQ(sample_token(logits.data(), 5, o, rng), 1);
  o.top_k = 0;
  // Probabilities ≈ 0.030, 0.369, 0.334, 0.003, 0.351 (ids 0 … 4): 0.3 is reached by id 1 alone;
  // 0.5 by ids 1 and 4 (never 2, the third largest).
  o.top_p = 0.3;
  for (int i = 0; i < 20; i++) EXPECT_EQ(sample_token(logits.data(), 5, o, rng), 1);
  o.top_p = 0.5;
  int seen[5] = {};
  for (int i = 0; i < 400; i++) seen[sample_token(logits.data(), 5, o, rng)]++;
  EXPECT_EQ(seen[0] + seen[2] + seen[3], 0);
  EXPECT_GT(seen[1], 100);
  EXPECT_GT(seen[4], 100);
  o.top_p = 1;  // everything; 3.0 vs 0.5: e^2.5 ≈ 12 times as likely
  int all[5] = {};
  for (int i = 0; i < 4000; i++) all[sample_token(logits.data(), 5, o, rng)]++;
  EXPECT_NEAR((double)all[1] / all[0], std::exp(2.5), 4.0);
  // Only the first n ids are candidates (the tokenizer's, below a padded vocabulary): the most
  // likely id lies past n here, and neither greedy nor sampling may pick it.
  const std::vector<double> padded = {1.0, 0.5, 9.0};
  o.temperature = 0;
  EXPECT_EQ(sample_token(padded.data(), 2, o, rng), 0);
  o.temperature = 1;
  for (int i = 0; i < 200; i++) EXPECT_LT(sample_token(padded.data(), 2, o, rng), 2);
}

TEST(Generation, BadInputIsAClearError) {
  const ModelConfig c = small_model(Attention::tpa);
  const std::vector<float> params = random_weights(c, 2);
  GenerateOptions o;
  auto error = [&](const std::vector<int32_t>& prompt, const GenerateOptions& opts) {
    return test::error_of([&] { generate(c, params, prompt, opts); });
  };
  EXPECT_NE(error({}, o).find("the prompt is empty"), std::string::npos);
  EXPECT_NE(error(std::vector<int32_t>(17, 1), o).find("the prompt has 17 tokens; the model reads at most "
                                                       "model.block_size = 16"),
            std::string::npos);
  EXPECT_NE(error({1, 40}, o).find("prompt token 40 is outside the model's vocabulary of 40"), std::string::npos);
  GenerateOptions small = o;
  small.context = 4;
  EXPECT_NE(error({1, 2, 3, 4, 5}, small).find("more than the context of 4"), std::string::npos);
  GenerateOptions bad = o;
  bad.top_p = 0;
  EXPECT_NE(error({1}, bad).find("top-p 0: expected (0, 1]"), std::string::npos);
  bad = o;
  bad.temperature = -1;
  EXPECT_NE(error({1}, bad).find("temperature -1"), std::string::npos);
  bad = o;
  bad.batch = 0;
  EXPECT_NE(error({1}, bad).find("batch 0"), std::string::npos);
}

// A context longer than block_size: RoPE extends, and the cache keeps every position.
TEST(Generation, ContextBeyondBlockSizeStaysCached) {
  const ModelConfig c = small_model(Attention::tpa);
  GenerateOptions o;
  o.max_new_tokens = 30;
  o.context = 40;
  GenerateStats st;
  generate(c, random_weights(c, 6), {1, 2, 3}, o, {}, &st);
  EXPECT_EQ(st.decode_passes, 29);  // every new token's successor came from the cache
  EXPECT_EQ(st.window_passes, 0);
}

}  // namespace
}  // namespace t6
