// Multiple-choice evaluation: HellaSwag lines to tokens, the tokenized file's checks, and the
// scoring against an independent computation of each completion's loss.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <random>

#include "data/mc_eval.h"
#include "model/t6.h"
#include "test_util.h"
#include "trainer/mc_eval.h"

namespace t6 {
namespace {

TEST(McEval, HellaswagLinesBecomeContextPlusEachEnding) {
  const std::string dir = test::temp_dir("mc_hellaswag");
  const std::string path = test::write_file(dir + "/h.jsonl",
                                      "{\"ctx\": \"Ab\", \"endings\": [\"c\", \"de\"], \"label\": 1}\n"
                                      "\n"
                                      "{\"ctx\": \"x\", \"endings\": [\"y\", \"z\", \"w\"], \"label\": \"0\"}\n");
  const auto tok = make_tokenizer("byte");
  const std::vector<McExample> ex = hellaswag_examples(path, *tok);
  ASSERT_EQ(ex.size(), 2u);
  EXPECT_EQ(ex[0].candidates[0], (std::vector<int32_t>{'A', 'b', ' ', 'c'}));
  EXPECT_EQ(ex[0].candidates[1], (std::vector<int32_t>{'A', 'b', ' ', 'd', 'e'}));
  EXPECT_EQ(ex[0].completion_start, (std::vector<int>{2, 2}));
  EXPECT_EQ(ex[0].label, 1);
  EXPECT_EQ(ex[1].candidates.size(), 3u);
  EXPECT_EQ(ex[1].label, 0);  // labels may be strings, as in HellaSwag's files
  // The tokenized file reads back the same.
  write_mc_file(dir + "/h.mc.jsonl", ex, "byte");
  const std::vector<McExample> back = read_mc_file(dir + "/h.mc.jsonl", 256);
  ASSERT_EQ(back.size(), 2u);
  for (int i = 0; i < 2; i++) {
    EXPECT_EQ(back[i].candidates, ex[i].candidates);
    EXPECT_EQ(back[i].completion_start, ex[i].completion_start);
    EXPECT_EQ(back[i].label, ex[i].label);
  }
}

TEST(McEval, BadFilesAreClearErrors) {
  const std::string dir = test::temp_dir("mc_errors");
  const auto tok = make_tokenizer("byte");
  auto hs = [&](const std::string& text) {
    return test::error_of([&] { hellaswag_examples(test::write_file(dir + "/b.jsonl", text), *tok); });
  };
  EXPECT_NE(hs("{\"ctx\": \"a\", \"endings\": [\"b\", \"c\"]}\n").find("b.jsonl:1: no field 'label'"), std::string::npos);
  EXPECT_NE(hs("{\"ctx\": \"a\", \"endings\": [\"b\", \"c\"], \"label\": 2}\n").find("label 2 is not the index"),
            std::string::npos);
  EXPECT_NE(hs("not json\n").find("b.jsonl:1: not JSON"), std::string::npos);
  EXPECT_NE(hs("{\"ctx\": \"a\", \"endings\": [\"b\", \"c\"], \"label\": \"1x\"}\n").find("b.jsonl:1: label '1x' is not an integer"),
            std::string::npos);
  auto mc = [&](const std::string& text, int vocab = 256) {
    return test::error_of([&] { read_mc_file(test::write_file(dir + "/m.jsonl", text), vocab); });
  };
  const std::string header = "{\"format\": \"t6-multiple-choice\", \"version\": 1}\n";
  EXPECT_NE(mc("{\"candidates\": [[1, 2]], \"completion_start\": [1], \"label\": 0}\n").find("not a multiple-choice file"),
            std::string::npos);
  EXPECT_NE(mc(header + "{\"candidates\": [[1, 2], [1, 3]], \"completion_start\": [2, 1], \"label\": 0}\n")
                .find("m.jsonl:2: candidate 0's completion starts at 2, outside 1 … 1"),
            std::string::npos);
  EXPECT_NE(mc(header + "{\"candidates\": [[1, 2], [1, 300]], \"completion_start\": [1, 1], \"label\": 1}\n")
                .find("token 300 is outside the model's vocabulary of 256"),
            std::string::npos);
  EXPECT_NE(mc(header).find("no examples"), std::string::npos);
  // Made with one tokenizer, read for a model of another: the ids would mean other text.
  write_mc_file(dir + "/byte.jsonl", {McExample{{{1, 2}, {1, 3}}, {1, 1}, 0}}, "byte");
  EXPECT_NE(test::error_of([&] { read_mc_file(dir + "/byte.jsonl", 50304, "gpt2"); })
                .find("made with the byte tokenizer, but the model reads gpt2 tokens"),
            std::string::npos);
  EXPECT_EQ(read_mc_file(dir + "/byte.jsonl", 256, "byte").size(), 1u);
}

// Each completion's summed loss, computed alone: one sequence per forward pass, log-softmax of
// the logits at each position before a completion token.
std::pair<double, double> completion_loss(const ModelConfig& c, const std::vector<double>& params,
                                          const std::vector<int32_t>& cand, int start) {
  const Context ctx;
  const int T = (int)cand.size() - 1;
  T6<double> model(c, ctx, 1, T);
  model.params.from_host(params.data(), params.size());
  model.refresh_weights();
  model.forward(cand.data(), nullptr);
  double sum = 0;
  for (int t = start - 1; t < T; t++) {
    const std::vector<double> logits = model.logits_at(t);
    double maxv = -INFINITY, z = 0;
    for (double l : logits) maxv = std::max(maxv, l);
    for (double l : logits) z += std::exp(l - maxv);
    sum += -(logits[cand[t + 1]] - maxv - std::log(z));
  }
  return {sum, T - start + 1};
}

// Labels set to the independent computation's lowest summed loss: acc must be exactly 1, and
// acc_norm the independent fraction, with batched, padded scoring.
TEST(McEval, ScoresMatchAnIndependentComputation) {
  ModelConfig c;
  c.n_layer = 2, c.n_embd = 16, c.n_head = 2, c.head_dim = 8, c.q_rank = 2, c.rank = 1;
  c.vocab_size = 20, c.block_size = 12;
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> u(-0.6, 0.6);
  std::vector<double> params(make_layout(c).total);
  for (double& p : params) p = u(rng);
  std::vector<McExample> examples(12);
  int right_norm = 0;
  for (McExample& ex : examples) {
    const int context = 1 + (int)(rng() % 4);
    std::vector<int32_t> ctx_tokens(context);
    for (int32_t& t : ctx_tokens) t = (int32_t)(rng() % c.vocab_size);
    double best = INFINITY, best_norm = INFINITY;
    int label = 0, label_norm = 0;
    for (int k = 0; k < 4; k++) {
      std::vector<int32_t> cand = ctx_tokens;
      const int len = 1 + (int)(rng() % 6);
      for (int i = 0; i < len; i++) cand.push_back((int32_t)(rng() % c.vocab_size));
      ex.candidates.push_back(cand);
      ex.completion_start.push_back(context);
      const auto [sum, count] = completion_loss(c, params, cand, context);
      if (sum < best) best = sum, label = k;
      if (sum / count < best_norm) best_norm = sum / count, label_norm = k;
    }
    ex.label = label;
    right_norm += label_norm == label;
  }
  const Context ctx;
  T6<double> model(c, ctx, 3, c.block_size);  // 3 rows a pass: candidates of several examples together
  model.params.from_host(params.data(), params.size());
  model.refresh_weights();
  const McScore s = score_multiple_choice(model, examples);
  EXPECT_EQ(s.examples, 12);
  EXPECT_DOUBLE_EQ(s.acc, 1.0);
  EXPECT_DOUBLE_EQ(s.acc_norm, right_norm / 12.0);
  EXPECT_LT(right_norm, 12);  // the two measures disagree somewhere, so the test tells them apart
}

// A candidate longer than the window keeps its last seq + 1 tokens: labels from the losses of
// those tails score 1, the opposite labels 0 (over 8 examples: luck passes 1 in 256).
TEST(McEval, LongCandidatesKeepTheirEnd) {
  ModelConfig c;
  c.n_layer = 1, c.n_embd = 16, c.n_head = 2, c.head_dim = 8, c.vocab_size = 20, c.block_size = 6;
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> u(-0.6, 0.6);
  std::vector<double> params(make_layout(c).total);
  for (double& p : params) p = u(rng);
  std::vector<McExample> examples(8);
  for (McExample& ex : examples) {
    double loss[2];
    for (int k = 0; k < 2; k++) {
      std::vector<int32_t> cand(10);
      for (int32_t& t : cand) t = (int32_t)(rng() % c.vocab_size);
      ex.candidates.push_back(cand);
      ex.completion_start.push_back(7);  // 3 completion tokens; the window is the last 7 tokens
      loss[k] = completion_loss(c, params, std::vector<int32_t>(cand.end() - 7, cand.end()), 4).first;
    }
    ex.label = loss[0] < loss[1] ? 0 : 1;
  }
  const Context ctx;
  T6<double> model(c, ctx, 2, c.block_size);
  model.params.from_host(params.data(), params.size());
  model.refresh_weights();
  EXPECT_DOUBLE_EQ(score_multiple_choice(model, examples).acc, 1.0);
  for (McExample& ex : examples) ex.label = 1 - ex.label;
  EXPECT_DOUBLE_EQ(score_multiple_choice(model, examples).acc, 0.0);
}

}  // namespace
}  // namespace t6
