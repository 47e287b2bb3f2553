// Data parallelism under mpirun (ctest runs this binary with -np 2 and -np 3): W ranks equal
// one rank with the same global batch, ZeRO-1 equals plain data parallelism, a checkpoint
// resumes on another number of ranks, and a NaN on one rank skips the step on all of them.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>

#include "data/mc_eval.h"
#include "model/layout.h"
#include "model/safetensors.h"
#include "model/t6.h"
#include "mpi_util.h"
#include "test_util.h"
#include "trainer/checkpoint.h"
#include "trainer/config.h"
#include "trainer/mc_eval.h"
#include "trainer/runtime.h"
#include "trainer/train.h"

namespace t6 {
namespace {

using namespace test;  // communicator, shared_dir, world_rank, world_size (mpi_util.h)

// A tiny model on the sample; `accum` micro-batches of 2 sequences per rank and step.
Config tiny(const std::string& out, int accum, std::vector<std::string> extra = {}) {
  extra.insert(extra.begin(), {"train.batch_size=2", "train.gradient_accumulation_steps=" + std::to_string(accum),
                               "optim.lr_decay_iters=20", "optim.warmup_iters=2", "train.eval_interval=0",
                               "checkpoint.interval=0", "train.consistency_interval=1", "data.val=null",
                               "model.block_size=32"});
  return load_config(test::source_path("configs/demo.yaml"), test::tiny_overrides(out, extra));
}

// Runs f on world ranks 0 … n − 1 with a communicator of their own (the other ranks skip it).
void on_first_ranks(int n, const std::function<void(Communicator*)>& f) {
  MPI_Comm sub;
  MPI_Comm_split(MPI_COMM_WORLD, world_rank() < n ? 0 : 1, world_rank(), &sub);
  if (world_rank() < n) {
    auto comm = communicator(sub);
    f(comm.get());
  }
  MPI_Comm_free(&sub);
}

std::vector<float> weights(const std::string& out_dir) { return test::flat_weights(out_dir + "/model.safetensors"); }

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); i++) m = std::max(m, (double)std::abs(a[i] - b[i]));
  return m;
}

void expect_same_run(const TrainResult& got, const TrainResult& want, const std::string& got_dir,
                     const std::string& want_dir) {
  ASSERT_EQ(got.steps.size(), want.steps.size());
  for (size_t i = 0; i < want.steps.size(); i++) {
    EXPECT_NEAR(got.steps[i].loss, want.steps[i].loss, 1e-5 * std::abs(want.steps[i].loss)) << "step " << i;
    EXPECT_NEAR(got.steps[i].grad_norm, want.steps[i].grad_norm, 1e-4 * want.steps[i].grad_norm) << "step " << i;
  }
  // AdamW divides by √v, so a weight whose gradient is near zero turns rounding differences
  // (another summation order across ranks) into steps of up to ~lr·1e-3; the losses above are
  // the tight check of the arithmetic.
  EXPECT_LT(max_abs_diff(weights(got_dir), weights(want_dir)), 3e-5);
}

// A rank given another config (here: another max_iters, which would hang the last step's
// collectives; another model size would overrun their buffers) is refused before training, the
// differing rank naming the key.
TEST(DataParallel, RanksGivenDifferentConfigsAreRefused) {
  const int W = world_size(), last = W - 1;
  const std::string out = shared_dir("config_differs");
  auto world = communicator(MPI_COMM_WORLD);
  const std::string e = test::error_of([&] {
    train(tiny(out, 1, {world_rank() == last ? "train.max_iters=7" : "train.max_iters=6"}), "", world.get());
  });
  if (world_rank() == last)
    EXPECT_NE(e.find("train.max_iters: 6 → 7"), std::string::npos) << e;
  else
    EXPECT_NE(e.find("another rank was given a different config than rank 0"), std::string::npos) << e;
  EXPECT_FALSE(std::filesystem::exists(out + "/ckpt_6"));
  world->barrier();
}

TEST(DataParallel, RanksMatchOneRankWithTheSameGlobalBatch) {
  const int W = world_size();
  const std::string out = shared_dir("dp"), ref = shared_dir("dp_ref");  // (both fresh: pids repeat)
  auto world = communicator(MPI_COMM_WORLD);
  const TrainResult parallel = train(tiny(out, 2, {"train.max_iters=10"}), "", world.get());
  if (world_rank() == 0) {
    auto self = communicator(MPI_COMM_SELF);
    const TrainResult single = train(tiny(ref, 2 * W, {"train.max_iters=10"}), "", self.get());
    expect_same_run(parallel, single, out, ref);
  }
  world->barrier();
}

// A setting that changes how gradients travel between ranks, not what they sum to: the run
// with it equals plain data parallelism.
void expect_plain_run_with(const std::string& name, const std::string& setting) {
  const std::string plain = shared_dir(name + "_plain"), changed = shared_dir(name);
  auto world = communicator(MPI_COMM_WORLD);
  const TrainResult a = train(tiny(plain, 2, {"train.max_iters=10"}), "", world.get());
  const TrainResult b = train(tiny(changed, 2, {"train.max_iters=10", setting}), "", world.get());
  if (world_rank() == 0) expect_same_run(b, a, changed, plain);
  world->barrier();
}

TEST(DataParallel, OverlappedReduceMatchesOneReduceAfterBackward) {
  // Per-layer all-reduces started during backward sum the same numbers as one at the end.
  expect_plain_run_with("reduce_overlapped", "train.overlap_grad_reduce=true");
}

TEST(DataParallel, ZeroOneMatchesPlainDataParallelism) { expect_plain_run_with("zero", "optim.zero=1"); }

TEST(DataParallel, CheckpointOfTwoRanksResumesOnOneAndOnThreeWithAndWithoutZero) {
  // 6 sequences per step: 3 micro-batches on 2 ranks, 2 on 3 ranks, 6 on 1.
  const int W = world_size();
  const std::string straight = shared_dir("resume_ref"), two = shared_dir("resume_two");
  auto world = communicator(MPI_COMM_WORLD);
  TrainResult reference;
  if (world_rank() == 0) {
    auto self = communicator(MPI_COMM_SELF);
    reference = train(tiny(straight, 6, {"train.max_iters=8"}), "", self.get());
  }
  // Ranks 0 and 1 train 4 steps with ZeRO-1 (so the saved moments are gathered shards) and
  // checkpoint; any others wait.
  on_first_ranks(2, [&](Communicator* comm) { train(tiny(two, 3, {"train.max_iters=4", "optim.zero=1"}), "", comm); });
  world->barrier();

  auto check = [&](const TrainResult& r, const std::string& what) {
    if (world_rank() != 0) return;
    ASSERT_EQ(r.steps.size(), 4u) << what;
    for (int i = 0; i < 4; i++)
      EXPECT_NEAR(r.steps[i].loss, reference.steps[4 + i].loss, 1e-5 * reference.steps[4 + i].loss) << what << " step " << 4 + i;
  };
  if (W == 3) {  // all three ranks continue the 2-rank checkpoint
    const std::string three = shared_dir("resume_three");
    check(train(tiny(three, 2, {"train.max_iters=8", "optim.zero=1"}), two + "/ckpt_4", world.get()), "3 ranks");
    if (world_rank() == 0) {
      EXPECT_LT(max_abs_diff(weights(three), weights(straight)), 1e-5);
    }
  }
  if (world_rank() == 0) {  // and one process continues it too
    auto self = communicator(MPI_COMM_SELF);
    const std::string one = test::temp_dir("resume_one");
    testing::internal::CaptureStdout();
    const TrainResult resumed = train(tiny(one, 6, {"train.max_iters=8"}), two + "/ckpt_4", self.get());
    const std::string log = testing::internal::GetCapturedStdout();
    check(resumed, "1 rank");
    EXPECT_NE(log.find("resume: the checkpoint was written by 2 rank(s); this run has 1"), std::string::npos) << log;
    EXPECT_LT(max_abs_diff(weights(one), weights(straight)), 1e-5);
  }
  world->barrier();
}

// The sharded format (trainer/checkpoint.h): three ranks with ZeRO-1 each write their slice;
// one rank, two ranks without ZeRO and four ranks with it continue from those slices, each
// tracking the run that never stopped. Runs under mpirun -np 4 (ctest mpi_np4_sharded).
TEST(ShardedCheckpoint, ThreeRanksResumeOnOneTwoAndFour) {
  if (world_size() != 4) GTEST_SKIP() << "needs 4 ranks (ctest runs it with -np 4)";
  // 24 sequences per step: 3 ranks × 2 × accumulation 4; the reference 1 × 2 × 12.
  const std::string straight = shared_dir("sharded_ref"), three = shared_dir("sharded_three");
  auto world = communicator(MPI_COMM_WORLD);
  TrainResult reference;
  if (world_rank() == 0) {
    auto self = communicator(MPI_COMM_SELF);
    reference = train(tiny(straight, 12, {"train.max_iters=8", "train.consistency_interval=0"}), "", self.get());
  }
  on_first_ranks(3, [&](Communicator* comm) {
    train(tiny(three, 4, {"train.max_iters=4", "optim.zero=1"}), "", comm);
  });
  world->barrier();
  if (world_rank() == 0) {  // three slices, and no rank held more than its own
    const std::string ckpt = three + "/ckpt_4";
    for (int r = 0; r < 3; r++) EXPECT_TRUE(std::filesystem::exists(ckpt + "/shard_0000" + std::to_string(r) + ".bin"));
    EXPECT_TRUE(std::filesystem::exists(ckpt + "/manifest.json"));
  }
  world->barrier();
  auto check = [&](const TrainResult& r, const std::string& out, const std::string& what) {
    if (world_rank() != 0) return;
    ASSERT_EQ(r.steps.size(), 4u) << what;
    for (int i = 0; i < 4; i++)
      EXPECT_NEAR(r.steps[i].loss, reference.steps[4 + i].loss, 1e-5 * reference.steps[4 + i].loss)
          << what << " step " << 4 + i;
    EXPECT_LT(max_abs_diff(weights(out), weights(straight)), 3e-5) << what;
  };
  const std::string from = three + "/ckpt_4";
  {  // four ranks, ZeRO-1: 24 = 4 × 2 × 3
    const std::string four = shared_dir("sharded_four");
    check(train(tiny(four, 3, {"train.max_iters=8", "optim.zero=1"}), from, world.get()), four, "4 ranks");
  }
  const std::string two = shared_dir("sharded_two");  // (a collective of all ranks)
  on_first_ranks(2, [&](Communicator* comm) {  // two ranks, no ZeRO: 24 = 2 × 2 × 6
    check(train(tiny(two, 6, {"train.max_iters=8"}), from, comm), two, "2 ranks");
  });
  if (world_rank() == 0) {  // one rank: 24 = 1 × 2 × 12
    auto self = communicator(MPI_COMM_SELF);
    const std::string one = test::temp_dir("sharded_one");
    check(train(tiny(one, 12, {"train.max_iters=8"}), from, self.get()), one, "1 rank");
  }
  world->barrier();
}

TEST(Stability, NanOnOneRankSkipsTheStepOnEveryRank) {
  const int W = world_size();
  const std::string out = shared_dir("nan"), ref = shared_dir("nan_ref");
  auto world = communicator(MPI_COMM_WORLD);
  setenv("T6_TEST_NAN_STEP", "3", 1);
  setenv("T6_TEST_FAULT_RANK", std::to_string(W - 1).c_str(), 1);  // the last rank's gradients
  // consistency_interval=1 checks after every step that all ranks hold the same parameters.
  const TrainResult parallel = train(tiny(out, 1, {"train.max_iters=6"}), "", world.get());
  EXPECT_EQ(parallel.skipped, 1);
  EXPECT_FALSE(std::isfinite(parallel.steps[3].loss) && std::isfinite(parallel.steps[3].grad_norm));
  if (world_rank() == 0) {
    // The same run on one process, whose only rank gets the NaN at step 3.
    setenv("T6_TEST_FAULT_RANK", "0", 1);
    auto self = communicator(MPI_COMM_SELF);
    const TrainResult single = train(tiny(ref, W, {"train.max_iters=6"}), "", self.get());
    EXPECT_EQ(single.skipped, 1);
    EXPECT_LT(max_abs_diff(weights(out), weights(ref)), 1e-5);
    for (int i : {0, 1, 2, 4, 5}) EXPECT_NEAR(parallel.steps[i].loss, single.steps[i].loss, 1e-5 * single.steps[i].loss);
  }
  unsetenv("T6_TEST_NAN_STEP");
  unsetenv("T6_TEST_FAULT_RANK");
  world->barrier();
}

// Multiple choice across ranks: each rank scores a share of the examples and the counts are
// summed; the result equals one process scoring them all (same weights on every rank).
TEST(DataParallel, MultipleChoiceAcrossRanksEqualsOneProcess) {
  ModelConfig c;
  c.n_layer = 1, c.n_embd = 32, c.n_head = 2, c.head_dim = 16, c.vocab_size = 256, c.block_size = 48;
  std::vector<float> params(make_layout(c).total);
  std::mt19937_64 rng(12);  // the same on every rank
  std::uniform_real_distribution<float> u(-0.3f, 0.3f);
  for (float& p : params) p = u(rng);
  const auto tok = make_tokenizer("byte");
  const std::vector<McExample> ex = hellaswag_examples(test::source_path("data/sample/mc_example.jsonl"), *tok);
  const Context ctx;
  T6<float> model(c, ctx, 4, c.block_size);
  model.params_from_host(params);
  auto world = communicator(MPI_COMM_WORLD);
  const McScore together = score_multiple_choice(model, ex, world.get()), alone = score_multiple_choice(model, ex);
  EXPECT_EQ(together.examples, 10);
  EXPECT_EQ(together.acc, alone.acc);
  EXPECT_EQ(together.acc_norm, alone.acc_norm);
}

}  // namespace
}  // namespace t6

int main(int argc, char** argv) { return t6::test::mpi_test_main(argc, argv); }
