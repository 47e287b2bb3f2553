// The training loop of one process: micro-batches with accumulation, clipping, AdamW, the
// schedule, periodic validation, logs and metrics, checkpoints, the final weights and a sample.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "trainer/config.h"
#include "trainer/runtime.h"

namespace t6 {

struct StepRecord {
  int64_t step;
  double loss, lr, grad_norm, tokens_per_sec, ms;
};

struct TrainResult {
  std::vector<StepRecord> steps;   // the steps this process ran
  double final_val_loss = -1;      // −1 when there is no validation data
  double mc_acc = -1, mc_acc_norm = -1;  // the last multiple-choice evaluation's (train.eval_mc); −1: none
  bool interrupted = false;        // stopped by SIGINT/SIGTERM after saving a checkpoint
  bool gave_up = false;            // stopped after train.max_consecutive_skips skipped steps
  int64_t skipped = 0;             // updates skipped (non-finite or outlier loss / gradient norm)
  std::string last_checkpoint;
};

// Runs the experiment on this rank of `comm` (null: a single process); rank 0 writes
// out_dir/{config.yaml, metrics.jsonl, ckpt_<iter>/, latest, model.safetensors} and prints.
// resume: "" (start fresh), "auto" (the newest valid checkpoint in out_dir, or fresh when
// there is none) or a checkpoint directory.
// steps > 0: run that many steps on random tokens instead (no data, checkpoints or outputs)
// and print a table of the median step time, tokens/s, MFU and memory; with profile, also
// the device time of each op over the steps after the first two (CUDA only).
struct Benchmark {
  int64_t steps = 0;
  bool profile = false;
};

// The device is cfg.train.device; with CUDA, local rank r uses GPU r and ranks talk over NCCL.
TrainResult train(const Config& cfg, const std::string& resume = "", Communicator* comm = nullptr,
                  const Benchmark& benchmark = {});

// A duration for people: "45s", "12m05s", "3h07m", "2d04h".
std::string format_duration(double seconds);

// Dense bf16 peak of an H100 SXM, the denominator of MFU (docs/model.md).
constexpr double kPeakFlops = 989e12;

}  // namespace t6
