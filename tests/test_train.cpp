// End-to-end training on the shipped sample: the loss falls, validation beats the data's
// unigram entropy, the outputs agree with each other, and a run is a pure function of its seeds.
#include <gtest/gtest.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "data/loader.h"
#include "data/shard.h"
#include "model/safetensors.h"
#include "model/t6.h"
#include "test_util.h"
#include "data/mc_eval.h"
#include "trainer/checkpoint.h"
#include "trainer/config.h"
#include "trainer/mc_eval.h"
#include "trainer/tensorboard.h"
#include "trainer/train.h"

namespace t6 {
namespace {

Config tiny_run(const std::string& out, std::vector<std::string> extra = {}) {
  return load_config(test::source_path("configs/demo.yaml"), test::tiny_overrides(out, std::move(extra)));
}

// Entropy (nats) of the token frequencies in the validation shards: the loss of the best
// model that ignores context.
double unigram_entropy(const Config& cfg) {
  std::vector<double> counts(cfg.model.vocab_size, 0.0);
  double total = 0;
  for (const std::string& f : expand_shards(cfg.data.val, "data.val")) {
    ShardReader r(f);
    std::vector<int32_t> tokens(r.meta().num_tokens);
    r.read(0, tokens.size(), tokens.data());
    for (int32_t t : tokens) counts[t]++;
    total += tokens.size();
  }
  double h = 0;
  for (double c : counts)
    if (c > 0) h -= c / total * std::log(c / total);
  return h;
}

TEST(Train, LossFallsAndValidationBeatsTheUnigramEntropy) {
  const std::string out = test::temp_dir("train_falls");
  const Config cfg = tiny_run(out);
  const TrainResult r = train(cfg);
  ASSERT_EQ(r.steps.size(), 60u);
  double last = 0;
  for (size_t i = 55; i < 60; i++) last += r.steps[i].loss / 5;
  EXPECT_LT(last, r.steps[0].loss - 2.0);  // from ~6 (uniform over 256 bytes is 5.5) to below 4
  const double entropy = unigram_entropy(cfg);
  EXPECT_NEAR(entropy, 3.10, 0.05);  // the Brown sample, byte-level
  EXPECT_LT(r.final_val_loss, entropy - 0.3);

  // metrics.jsonl: one object per step with the documented fields, and the evaluations.
  std::ifstream metrics(out + "/metrics.jsonl");
  std::string line;
  int steps = 0, evals = 0;
  while (std::getline(metrics, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("val_loss")) {
      evals++;
      continue;
    }
    EXPECT_EQ(j["step"], steps);
    EXPECT_DOUBLE_EQ(j["loss"].get<double>(), r.steps[steps].loss);
    for (const char* key : {"lr", "grad_norm", "tokens_per_sec"}) EXPECT_TRUE(j.contains(key)) << key;
    steps++;
  }
  EXPECT_EQ(steps, 60);
  EXPECT_EQ(evals, 2);  // after steps 29 and 59 (the end)

  // The saved weights reproduce the last validation loss, and the saved config the run.
  const Context ctx;
  T6<float> model(cfg.model, ctx, cfg.train.batch_size, cfg.model.block_size);
  model.params_from_host(load_weights(out + "/model.safetensors", model.layout));
  DataLoader val(expand_shards(cfg.data.val, "data.val"), cfg.train.batch_size, cfg.model.block_size, false, 0, 256,
                 "data.val");
  std::vector<int32_t> in(cfg.train.batch_size * cfg.model.block_size), tgt(in.size());
  double loss = 0;
  for (int i = 0; i < cfg.train.eval_iters; i++) {
    val.next(in.data(), tgt.data());
    loss += model.forward(in.data(), tgt.data()) / cfg.train.eval_iters;
  }
  EXPECT_NEAR(loss, r.final_val_loss, 1e-12);
  EXPECT_EQ(load_config(out + "/config.yaml").to_yaml(), cfg.to_yaml());
}

TEST(Train, SameSeedsSameRunDifferentSeedDifferentRun) {
  auto losses = [](const std::string& name, std::vector<std::string> extra) {
    extra.push_back("train.max_iters=4");
    extra.push_back("optim.warmup_iters=2");
    const TrainResult r = train(tiny_run(test::temp_dir(name), extra));
    std::vector<double> l;
    for (const auto& s : r.steps) l.push_back(s.loss);
    return l;
  };
  const auto a = losses("seed_a", {}), b = losses("seed_b", {});
  EXPECT_EQ(a, b);  // bitwise
  EXPECT_NE(losses("seed_c", {"data.seed=7"}), a);
  EXPECT_NE(losses("seed_d", {"model.seed=7"}), a);
}

TEST(Train, GradientAccumulationEqualsOneLargerBatch) {
  // 2 micro-batches of 4 sequences vs 1 of 8 over the same tokens: same loss and update.
  auto run = [](const std::string& name, int batch, int accum) {
    return train(tiny_run(test::temp_dir(name), {"train.batch_size=" + std::to_string(batch),
                                                  "train.gradient_accumulation_steps=" + std::to_string(accum),
                                                  "data.shuffle=false", "train.max_iters=3",
                                                  "optim.warmup_iters=1", "data.val=null"}));
  };
  const TrainResult one = run("accum_1", 8, 1), two = run("accum_2", 4, 2);
  for (int i = 0; i < 3; i++) {
    EXPECT_NEAR(two.steps[i].loss, one.steps[i].loss, 1e-5 * one.steps[i].loss) << "step " << i;
    EXPECT_NEAR(two.steps[i].grad_norm, one.steps[i].grad_norm, 1e-4 * one.steps[i].grad_norm) << "step " << i;
  }
}

TEST(Train, TrainingWithoutDataTrainSaysWhatIsMissing) {
  const std::string out = test::temp_dir("no_data_train");
  const std::string e = test::error_of([&] { train(tiny_run(out, {"data.train=[]", "train.max_iters=1"})); });
  EXPECT_NE(e.find("data.train: required for training: the training shards"), std::string::npos) << e;
}

TEST(Train, TooManyConsecutiveSkipsSaveTheLastGoodStateAndStop) {
  const std::string out = test::temp_dir("skips");
  setenv("T6_TEST_NAN_STEP", "5", 1);  // a NaN gradient at step 5
  const TrainResult r = train(tiny_run(out, {"train.max_consecutive_skips=1", "train.max_iters=20", "data.val=null"}));
  unsetenv("T6_TEST_NAN_STEP");
  EXPECT_TRUE(r.gave_up);
  EXPECT_EQ(r.skipped, 1);
  EXPECT_EQ(r.steps.size(), 5u);  // steps 0-4 ran; step 5 was skipped and the run stopped
  EXPECT_EQ(r.last_checkpoint, out + "/ckpt_5");  // the state after step 4, the last good one
  // Continuing redoes step 5 (now without the NaN) and goes on.
  const TrainResult resumed = train(tiny_run(out, {"train.max_consecutive_skips=1", "train.max_iters=12",
                                                   "data.val=null"}), "auto");
  EXPECT_EQ(resumed.steps.front().step, 5);
  EXPECT_EQ(resumed.skipped, 0);
}

TEST(Train, GradientNormOutliersAreSkippedByTheZScoreRule) {
  const std::string out = test::temp_dir("zscore");
  const double z = 0.5;
  // A learning rate so small that the norms stay put and merely fluctuate from batch to batch.
  const TrainResult r = train(tiny_run(out, {"train.skip_zscore_grad=0.5", "train.max_consecutive_skips=1000",
                                             "train.max_iters=80", "data.val=null", "optim.learning_rate=1e-7",
                                             "optim.min_lr=1e-8"}));
  EXPECT_GT(r.skipped, 0);
  // Replay the rule from metrics.jsonl: a step is skipped exactly when, with at least 20
  // accepted steps before it, its norm exceeds mean + z·std of the last 100 accepted ones.
  std::ifstream metrics(out + "/metrics.jsonl");
  std::string line;
  std::vector<double> accepted;
  int skipped = 0;
  while (std::getline(metrics, line)) {
    const auto j = nlohmann::json::parse(line);
    const double norm = j["grad_norm"];
    bool outlier = false;
    if (accepted.size() >= 20) {
      const size_t n = std::min<size_t>(100, accepted.size());
      double mean = 0, var = 0;
      for (size_t i = accepted.size() - n; i < accepted.size(); i++) mean += accepted[i] / n;
      for (size_t i = accepted.size() - n; i < accepted.size(); i++) var += (accepted[i] - mean) * (accepted[i] - mean) / n;
      outlier = norm > mean + z * std::sqrt(var);
    }
    EXPECT_EQ(j.contains("skipped"), outlier) << "step " << j["step"];
    if (outlier) skipped++;
    else accepted.push_back(norm);
  }
  EXPECT_EQ(skipped, r.skipped);
}

}  // namespace
}  // namespace t6

namespace t6 {
namespace {

// Mismatches that used to pass until the end of training (or never): validation shards of
// another tokenizer, and a tokenizer the end-of-run sample cannot make; both refused at start.
TEST(Train, DataMismatchesAreRefusedBeforeTraining) {
  const std::string dir = test::temp_dir("train_mismatch");
  std::vector<uint32_t> tokens(5000);
  for (size_t i = 0; i < tokens.size(); i++) tokens[i] = (uint32_t)(i * 7 % 200);
  write_shard(dir + "/custom.h5", tokens, ShardMeta{0, 256, "custom", 0});
  std::string e = test::error_of([&] { train(tiny_run(dir + "/a", {"data.val=" + dir + "/custom.h5"})); });
  EXPECT_NE(e.find("data.val was tokenized differently from data.train: tokenizer 'custom'"), std::string::npos) << e;
  // 5,000 tokens hold 9 micro-batches of 8×64: 10 accumulation steps would read one twice.
  e = test::error_of([&] {
    train(tiny_run(dir + "/c", {"data.train=" + dir + "/custom.h5", "data.val=null",
                                "train.gradient_accumulation_steps=10"}));
  });
  EXPECT_NE(e.find("data.train: 9 micro-batches of 8×64 tokens per epoch, fewer than one optimizer step reads (10 "
                   "accumulation × 1 rank(s))"), std::string::npos) << e;
  e = test::error_of([&] {
    train(tiny_run(dir + "/b", {"data.train=" + dir + "/custom.h5", "data.val=null", "sample.max_new_tokens=5"}));
  });
  EXPECT_NE(e.find("custom"), std::string::npos) << e;
  EXPECT_FALSE(std::filesystem::exists(dir + "/b/metrics.jsonl")) << "it trained before failing";
}

// model.init_from takes a checkpoint directory as t6-eval does: a run of 0 steps from one
// saves exactly the checkpoint's weights. A data.train that is a directory says so.
TEST(Train, InitFromACheckpointDirectoryAndDataDirectories) {
  const std::string dir = test::temp_dir("train_init_from");
  train(tiny_run(dir + "/first", {"train.max_iters=6", "train.eval_interval=0", "data.val=null"}));
  ASSERT_TRUE(std::filesystem::is_directory(dir + "/first/ckpt_6"));
  train(tiny_run(dir + "/second", {"train.max_iters=0", "data.val=null", "model.init_from=" + dir + "/first/ckpt_6"}));
  EXPECT_EQ(test::flat_weights(dir + "/second/model.safetensors"), test::flat_weights(dir + "/first/model.safetensors"));
  const std::string e = test::error_of([&] { train(tiny_run(dir + "/third", {"data.train=" + dir + "/first"})); });
  EXPECT_NE(e.find("data.train: '" + dir + "/first' is a directory; give its shard files"), std::string::npos) << e;
}

// Two runs on one out_dir would overwrite each other's checkpoints and metrics: the second is
// refused, naming the holder; once the first ends (its lock goes with it) a run starts there.
TEST(Train, ASecondRunOnTheSameOutDirIsRefused) {
  const std::string dir = test::temp_dir("train_lock");
  {
    const OutDirLock first(dir);
    const std::string e = test::error_of([&] { train(tiny_run(dir, {"train.max_iters=2", "data.val=null"})); });
    EXPECT_NE(e.find(dir + " is in use by another run (pid " + std::to_string(getpid()) + " on "), std::string::npos)
        << e;
    EXPECT_FALSE(std::filesystem::exists(dir + "/metrics.jsonl"));
  }
  const TrainResult r = train(tiny_run(dir, {"train.max_iters=2", "data.val=null"}));
  EXPECT_EQ(r.steps.size(), 2u);
}

// An accepted step whose update wrecks the weights (a learning rate of 1e30: the loss of that
// step was fine) stops the run and is never written as a good state.
TEST(Train, AnUpdateThatWrecksTheWeightsIsNeverSaved) {
  const std::string out = test::temp_dir("train_absurd");
  testing::internal::CaptureStdout();
  const TrainResult r = train(tiny_run(out, {"optim.learning_rate=1e30", "optim.warmup_iters=0",
                                              "train.max_iters=10", "data.val=null"}));
  const std::string log = testing::internal::GetCapturedStdout();
  EXPECT_TRUE(r.gave_up);
  EXPECT_EQ(r.steps.size(), 0u);  // the step that broke them is not recorded as a good one
  EXPECT_NE(log.find("stopping: step 0's update took the parameters' norm"), std::string::npos) << log;
  EXPECT_TRUE(list_checkpoints(out).empty());
  EXPECT_FALSE(std::filesystem::exists(out + "/model.safetensors"));
}

// A stop signal during an evaluation (a scheduler's time limit) cuts it short, unrecorded, and
// the run saves at once and stops; a signal before one skips it.
TEST(Train, ASignalDuringEvaluationCutsItShortAndSaves) {
  const std::string out = test::temp_dir("train_signal_eval");
  setenv("T6_TEST_SIGTERM_IN_EVAL", "9", 1);  // raised at the evaluation after step 9
  testing::internal::CaptureStdout();
  const TrainResult r = train(tiny_run(out, {"train.max_iters=40", "train.eval_interval=10", "train.eval_iters=8"}));
  const std::string log = testing::internal::GetCapturedStdout();
  unsetenv("T6_TEST_SIGTERM_IN_EVAL");
  EXPECT_TRUE(r.interrupted);
  EXPECT_EQ(r.steps.size(), 10u);
  EXPECT_NE(log.find("step      9/40 | evaluation cut short by a stop signal: not recorded"), std::string::npos) << log;
  EXPECT_EQ(log.find("val loss"), std::string::npos) << log;
  EXPECT_EQ(r.last_checkpoint, (std::filesystem::path(out) / "ckpt_10").string());
}

// A run far larger than the machine says so with the numbers before touching the memory (the
// zero-fill of an overcommitted allocation would otherwise bring the OOM killer, without a word).
TEST(Train, ARunThatCannotFitSaysSoWithTheNumbers) {
  const std::string e = test::error_of([&] {
    train(tiny_run(test::temp_dir("train_oom"), {"model.n_embd=65536", "model.n_layer=64", "data.val=null"}));
  });
  EXPECT_NE(e.find("cannot allocate"), std::string::npos) << e;
  EXPECT_NE(e.find("GB available"), std::string::npos) << e;
  EXPECT_NE(e.find("The run does not fit"), std::string::npos) << e;
  EXPECT_NE(e.find("Lower train.batch_size"), std::string::npos) << e;
}

// A resume whose data.train shards differ from the checkpoint's (one added here) warns, shard
// by shard; the same shards say nothing.
TEST(Train, ResumingOnOtherDataWarnsShardByShard) {
  const std::string dir = test::temp_dir("train_data_changed");
  const std::string shard = test::source_path("data/sample/train_000000.h5");
  std::filesystem::copy_file(shard, dir + "/extra_000000.h5");
  train(tiny_run(dir + "/run", {"train.max_iters=4", "train.eval_interval=0", "data.val=null"}));
  testing::internal::CaptureStdout();
  train(tiny_run(dir + "/run", {"train.max_iters=6", "train.eval_interval=0", "data.val=null"}), "auto");
  std::string log = testing::internal::GetCapturedStdout();
  EXPECT_EQ(log.find("WARNING: data.train"), std::string::npos) << log;
  testing::internal::CaptureStdout();
  train(tiny_run(dir + "/run", {"train.max_iters=8", "train.eval_interval=0", "data.val=null",
                                "data.train=[" + test::source_path("data/sample/train_*.h5") + ", " + dir +
                                    "/extra_000000.h5]"}),
        "auto");
  log = testing::internal::GetCapturedStdout();
  EXPECT_NE(log.find("WARNING: data.train is not the data the checkpoint was trained on"), std::string::npos) << log;
  EXPECT_NE(log.find("  + extra_000000.h5 "), std::string::npos) << log;
}

TEST(Train, BenchmarkRunsOnRandomTokensAndWritesNothing) {
  // No data is read (the shard paths may not even exist), no output is written, and the loss
  // is that of random tokens: near ln(vocab) for a fresh model.
  const std::string out = test::temp_dir("benchmark") + "/out";
  Config cfg = tiny_run(out);
  cfg.data.train = {"/nonexistent/train_*.h5"};
  const TrainResult r = train(cfg, "", nullptr, Benchmark{4, false});
  ASSERT_EQ(r.steps.size(), 4u);
  for (const StepRecord& s : r.steps) {
    EXPECT_GT(s.tokens_per_sec, 0);
    EXPECT_NEAR(s.loss, std::log(256.0), 0.5);  // the demo's byte vocabulary
  }
  EXPECT_FALSE(std::filesystem::exists(out));
}

TEST(Train, DurationsForTheLog) {
  EXPECT_EQ(format_duration(0), "0s");
  EXPECT_EQ(format_duration(44.6), "45s");
  EXPECT_EQ(format_duration(725), "12m05s");
  EXPECT_EQ(format_duration(3 * 3600 + 7 * 60 + 20), "3h07m");
  EXPECT_EQ(format_duration(2 * 86400 + 4 * 3600 + 59), "2d04h");
}

// train.eval_mc: the multiple-choice score after each evaluation (metrics.jsonl: mc_acc,
// mc_acc_norm) equals scoring the run's final weights on their own, with another batch shape.
// The plumbing: the scores the run logs are the scorer's on the weights it saved (the scorer
// itself is checked against an independent computation in test_mc_eval.cpp).
TEST(Train, MultipleChoiceDuringTrainingEqualsScoringTheSavedWeights) {
  const std::string out = test::temp_dir("train_mc");
  const auto tok = make_tokenizer("byte");
  const std::vector<McExample> ex = hellaswag_examples(test::source_path("data/sample/mc_example.jsonl"), *tok);
  write_mc_file(out + "/mc.jsonl", ex, "byte");
  const Config cfg = tiny_run(out, {"train.eval_mc=" + out + "/mc.jsonl"});
  const TrainResult r = train(cfg);
  ASSERT_GE(r.mc_acc, 0.0);
  std::ifstream metrics(out + "/metrics.jsonl");
  std::string line;
  int scored = 0;
  double last_acc = -1, last_norm = -1;
  while (std::getline(metrics, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("mc_acc")) scored++, last_acc = j["mc_acc"], last_norm = j["mc_acc_norm"];
  }
  EXPECT_EQ(scored, 2);  // eval_interval 30 of 60 steps: steps 29 and 59
  EXPECT_EQ(last_acc, r.mc_acc);
  EXPECT_EQ(last_norm, r.mc_acc_norm);
  const Context ctx;
  T6<float> model(cfg.model, ctx, 3, cfg.model.block_size);
  model.params_from_host(load_weights(out + "/model.safetensors", make_layout(cfg.model)));  // layout order
  const McScore s = score_multiple_choice(model, ex);
  EXPECT_EQ(s.acc, r.mc_acc);
  EXPECT_EQ(s.acc_norm, r.mc_acc_norm);
}

// The layout's padding (docs/model.md; q_rank 3 makes 140 q/k/v rows, n_embd 64 makes 2·170
// c_fc rows) stays zero through training with weight decay, moments included, and is not in the
// exported weights, whose tensors are the checkpoint's numbers exactly.
TEST(Train, PaddingStaysZeroAndIsNotExported) {
  const std::string out = test::temp_dir("train_padding");
  const Config cfg = tiny_run(out, {"train.max_iters=4", "checkpoint.interval=4", "model.q_rank=3"});
  ASSERT_GT(cfg.optim.adamw.weight_decay, 0.0);
  train(cfg);
  const ParamLayout layout = make_layout(cfg.model);
  const TrainingState s = load_checkpoint(out + "/ckpt_4", layout);
  int entries = 0;
  for (const ParamInfo& p : layout.params) {
    if (!p.padding) continue;
    entries++;
    for (const std::vector<float>* a : {&s.params, &s.adam_m, &s.adam_v})
      EXPECT_EQ(std::vector<float>(a->begin() + p.offset, a->begin() + p.offset + p.size),
                std::vector<float>(p.size, 0.0f)) << p.name;
  }
  EXPECT_EQ(entries, 2 * cfg.model.n_layer);
  const auto exported = read_safetensors(out + "/model.safetensors");
  EXPECT_EQ(exported.size(), test::without_padding(layout).params.size());
  for (const ParamInfo& p : layout.params) {
    if (p.padding) {
      EXPECT_EQ(exported.count(p.name), 0u) << p.name;
      continue;
    }
    ASSERT_EQ(exported.count(p.name), 1u) << p.name;
    EXPECT_EQ(exported.at(p.name).shape, p.shape) << p.name;
    EXPECT_EQ(exported.at(p.name).data, std::vector<float>(s.params.begin() + p.offset, s.params.begin() + p.offset + p.size))
        << p.name;
  }
}

TEST(Train, TensorBoardChecksumIsCrc32c) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);  // CRC-32C's published check value
  EXPECT_EQ(crc32c("", 0), 0u);
}

}  // namespace
}  // namespace t6
