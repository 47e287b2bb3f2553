// Data parallelism between GPUs under mpirun -np 2 (label gpu; skipped unless every rank has
// a GPU of its own): 2 GPUs equal 1 GPU with the same global batch within bf16 tolerance,
// with and without ZeRO-1, through NCCL.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <cstring>

#include "mpi_util.h"
#include "test_util.h"
#include "trainer/config.h"
#include "trainer/runtime.h"
#include "trainer/train.h"

namespace t6 {
namespace {

using namespace test;  // communicator, shared_dir, world_rank, world_size (mpi_util.h)

// Every rank must agree, or one would wait in a collective the others skipped.
bool every_rank_has_a_gpu() {
  auto world = communicator(MPI_COMM_WORLD);
  int local = world->local_rank(), ok = local < cuda_device_count(), all = 0;
  MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return all && world_size() > 1;
}

#define REQUIRE_GPUS() \
  if (!every_rank_has_a_gpu()) GTEST_SKIP() << "needs mpirun -np W on a machine with W GPUs, W > 1"

// A small model on the sample; `accum` micro-batches of 4 sequences per rank and step (the
// loader's windows depend on the micro-batch size, so the global batch grows by accumulation).
Config small_run(const std::string& out, int accum, std::vector<std::string> extra = {}) {
  std::vector<std::string> o = {"train.out_dir=" + out, "train.device=cuda", "model.n_layer=2", "model.n_embd=128",
                                "model.n_head=4", "model.head_dim=32", "model.block_size=128",
                                "train.batch_size=4", "train.gradient_accumulation_steps=" + std::to_string(accum),
                                "train.max_iters=20",
                                "train.eval_interval=0", "optim.warmup_iters=4", "data.val=null",
                                "checkpoint.interval=0", "train.consistency_interval=5", "sample.max_new_tokens=0"};
  o.insert(o.end(), extra.begin(), extra.end());
  return load_config(test::source_path("configs/demo.yaml"), o);
}

void expect_same_run(const TrainResult& got, const TrainResult& want) {
  ASSERT_EQ(got.steps.size(), want.steps.size());
  for (size_t i = 0; i < want.steps.size(); i++) {
    EXPECT_NEAR(got.steps[i].loss, want.steps[i].loss, 1e-2 * want.steps[i].loss) << "step " << i;
    EXPECT_NEAR(got.steps[i].grad_norm, want.steps[i].grad_norm, 5e-2 * want.steps[i].grad_norm) << "step " << i;
  }
}

TEST(GpuDataParallel, RanksMatchOneGpuWithTheSameGlobalBatch) {
  REQUIRE_GPUS();
  const int W = world_size();
  const std::string out = shared_dir("gpu_dp"), ref = shared_dir("gpu_dp_ref");  // (both fresh: pids repeat)
  auto world = communicator(MPI_COMM_WORLD);
  const TrainResult parallel = train(small_run(out, 1), "", world.get());
  if (world_rank() == 0) {
    auto self = communicator(MPI_COMM_SELF);
    expect_same_run(parallel, train(small_run(ref, W), "", self.get()));
    EXPECT_LT(parallel.steps.back().loss, 0.8 * parallel.steps.front().loss);  // and it learns
  }
  world->barrier();
}

// A setting that changes how gradients travel between GPUs, not what they sum to: the run
// with it equals plain data parallelism.
void expect_plain_run_with(const std::string& name, const std::string& setting) {
  const std::string plain = shared_dir(name + "_plain"), changed = shared_dir(name);
  auto world = communicator(MPI_COMM_WORLD);
  const TrainResult a = train(small_run(plain, 2), "", world.get());
  const TrainResult b = train(small_run(changed, 2, {setting}), "", world.get());
  if (world_rank() == 0) expect_same_run(b, a);
  world->barrier();
}

TEST(GpuDataParallel, OverlappedReduceMatchesOneReduceAfterBackward) {
  REQUIRE_GPUS();
  expect_plain_run_with("gpu_reduce_overlapped", "train.overlap_grad_reduce=true");
}

TEST(GpuDataParallel, ZeroOneMatchesPlainDataParallelism) {
  REQUIRE_GPUS();
  expect_plain_run_with("gpu_zero", "optim.zero=1");
}

}  // namespace
}  // namespace t6

int main(int argc, char** argv) { return t6::test::mpi_test_main(argc, argv); }
