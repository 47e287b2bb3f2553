// The training loop of one process: micro-batches with accumulation, clipping, AdamW, the
// schedule, periodic validation, logs and metrics, the final weights and a sample.
#pragma once
#include <cstdint>
#include <vector>

#include "trainer/config.h"

namespace t6 {

struct StepRecord {
  int64_t step;
  double loss, lr, grad_norm, tokens_per_sec, ms;
};

struct TrainResult {
  std::vector<StepRecord> steps;
  double final_val_loss = -1;  // −1 when there is no validation data
};

// Runs the whole experiment; writes out_dir/{config.yaml, metrics.jsonl, model.safetensors}.
TrainResult train(const Config& cfg);

}  // namespace t6
