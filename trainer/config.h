// Experiment configs: a YAML file with sections model, data, train, optim, sample
// (configs/README.md documents every key and its default), plus --set overrides.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "optim/adamw.h"
#include "optim/schedule.h"

namespace t6 {

struct DataConfig {
  std::vector<std::string> train, val;  // paths or glob patterns
  bool shuffle = true;
  uint64_t seed = 1337;
};

// Where the model runs: auto = the GPU when this build has CUDA and the machine a device.
enum class DeviceChoice { auto_, cpu, cuda };
bool parse_device(const std::string& s, DeviceChoice* out);
const char* device_name(DeviceChoice d);

struct TrainConfig {
  DeviceChoice device = DeviceChoice::auto_;
  bool recompute = false;  // GPU memory: recompute norms and SwiGLU in backward instead of keeping them
  // All-reduce each layer's gradients during the last micro-batch's backward (overlapping it)
  // instead of all of them once after it. Off by default: on one node over NVLink the single
  // all-reduce measured faster (docs: README, "Several GPUs"); across nodes, try it on.
  bool overlap_grad_reduce = false;
  // GPU reductions in a fixed order (attention's dQ sums; cuBLASLt's first-choice algorithms
  // instead of the fastest timed at start-up), so a run repeats bitwise for a world size.
  bool deterministic = true;
  int batch_size = 8;
  int gradient_accumulation_steps = 1;
  int64_t max_iters = 1000;
  int64_t eval_interval = 100;  // 0: only at the end
  int eval_iters = 20;
  // A multiple-choice file (t6-prepare --eval) scored at each evaluation: mc_acc, mc_acc_norm
  // in metrics.jsonl (trainer/mc_eval.h); empty: none.
  std::string eval_mc;
  std::string tensorboard;  // a directory for TensorBoard event files (trainer/tensorboard.h); empty: none
  int64_t log_interval = 10;
  std::string out_dir;          // default: out/<config file name without .yaml>
  int64_t consistency_interval = 100;  // compare a parameter checksum across ranks this often; 0 = never
  double collective_timeout_s = 600;   // a rank waiting this long in one MPI collective ends the job; 0 = never
  double skip_zscore_loss = 0;         // skip a step whose loss is this many std devs above the recent mean; 0 = off
  double skip_zscore_grad = 0;         // the same for the gradient norm
  int max_consecutive_skips = 10;      // then save the last good state and stop
};

struct OptimConfig {
  LrSchedule schedule;  // learning_rate, min_lr, schedule, warmup_iters, lr_decay_iters, wsd_decay_fraction
  AdamWConfig adamw;    // beta1, beta2, eps, weight_decay
  double grad_clip = 1.0;  // 0: no clipping
  int zero = 0;            // 1: ZeRO-1, optimizer state sharded across ranks
};

struct CheckpointConfig {
  int64_t interval = 1000;  // save every this many steps; 0 = only at the end and on SIGINT/SIGTERM
  int keep = 3;             // keep the newest this many checkpoints; 0 = all
};

struct SampleConfig {
  std::string prompt = "\n";
  int max_new_tokens = 0;  // 0: no sample at the end
  double temperature = 0.8;
  int top_k = 0;           // 0: the whole vocabulary
  uint64_t seed = 1337;
};

struct Config {
  ModelConfig model;
  DataConfig data;
  TrainConfig train;
  OptimConfig optim;
  CheckpointConfig checkpoint;
  SampleConfig sample;
  std::string path;  // the file it came from

  std::string to_yaml() const;  // the effective config, every key
};

// Reads `path`, applies overrides ("section.key=value", value in YAML syntax) and validates.
// Relative paths in the file are relative to the file's directory; in overrides, to the
// current directory. Throws std::invalid_argument naming the file and key on any problem.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// The same from YAML text (an effective config stored in a checkpoint); `where` names it in errors.
Config load_config_text(const std::string& yaml, const std::string& where);

// Every key whose value differs, as "section.key: <in a> → <in b>".
std::vector<std::string> config_differences(const Config& a, const Config& b);

}  // namespace t6
