#include "trainer/train.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <numeric>
#include <nlohmann/json.hpp>
#include <omp.h>
#include <unistd.h>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "data/h5.h"
#include "data/loader.h"
#include "data/tokenizer.h"
#include "model/init.h"
#include "model/random.h"
#include "model/safetensors.h"
#include "model/t6.h"
#include "optim/adamw.h"
#include "trainer/checkpoint.h"
#include "trainer/mc_eval.h"
#include "trainer/tensorboard.h"
#include "trainer/sample.h"
#include "trainer/tools.h"
#include "kernels/ops.h"
#include "trainer/nccl.h"

namespace t6 {

namespace fs = std::filesystem;

namespace {

// SIGINT/SIGTERM (and SIGUSR1: what launch/train.sh forwards through mpirun, which passes it on
// without ending the job) ask the loop to stop after the current step; the same one again stops
// at once.
std::atomic<int> stop_signal{0};

void on_stop_signal(int sig) {
  // The same signal a second time stops at once. Another one is the same request on another
  // path (a scheduler signals every process while launch/train.sh forwards SIGUSR1): ignored.
  const int first = stop_signal.exchange(sig);
  if (first == sig) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  }
  if (first != 0) stop_signal = first;
}

struct StopSignals {
  struct sigaction old_int {}, old_term {}, old_usr1 {};
  StopSignals() {
    stop_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    sigaction(SIGUSR1, &sa, &old_usr1);
  }
  ~StopSignals() {
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
    sigaction(SIGUSR1, &old_usr1, nullptr);
  }
};

// Mean loss over the first eval_iters windows of the validation data (all of them if fewer):
// the same tokens at every evaluation, so the numbers are comparable along a run.
// A stop signal that arrives meanwhile ends it early (NaN), so that a long evaluation does not
// hold up the checkpoint a scheduler is waiting for.
template <class Model>
double evaluate(Model& model, DataLoader& val, int eval_iters) {
  val.reset();
  return mean_loss(model, val, std::min<uint64_t>(eval_iters, val.windows_per_epoch()),
                   [] { return stop_signal != 0; });
}

// The checkpoint to resume from and its state, or nothing (a fresh start). A checkpoint that
// does not verify is skipped by "auto" with a warning; one of another model is an error.
bool find_resume_state(const Config& cfg, const std::string& resume, const ParamLayout& layout,
                       TrainingState& state, std::string& chosen) {
  std::vector<std::string> candidates;
  if (resume == "auto") {
    candidates = list_checkpoints(cfg.train.out_dir);
    if (candidates.empty()) {
      fmt::print("resume: no checkpoint in {}; starting from the beginning\n", cfg.train.out_dir);
      return false;
    }
  } else {
    candidates = {fs::path(resume).filename() == "state.h5" || fs::path(resume).filename() == "manifest.json"
                      ? fs::path(resume).parent_path().string()
                      : resume};
  }
  for (const std::string& dir : candidates) {
    Config saved;
    try {
      saved = load_config_text(checkpoint_config(dir), dir + " (its stored config)");
    } catch (const std::exception& e) {
      if (resume != "auto") throw;
      fmt::print(stderr, "resume: warning: skipping {}: {}\n", dir, e.what());
      continue;
    }
    // The model must be the same; so must what defines the data stream's windows and order,
    // or the saved position would point at other data.
    std::vector<std::string> model_changes, stream_changes, other_changes;
    for (const std::string& d : config_differences(saved, cfg)) {
      auto is = [&](const char* key) { return d.rfind(key, 0) == 0; };
      if (is("model.init_from:") || is("model.seed:")) continue;
      if (is("model.")) model_changes.push_back(d);
      else if (is("train.batch_size:") || is("data.shuffle:") || is("data.seed:")) stream_changes.push_back(d);
      else other_changes.push_back(d);
    }
    if (!model_changes.empty())
      throw std::invalid_argument(fmt::format(
          "{} holds another model than the config describes (checkpoint → config):\n  {}\n"
          "Resume with the checkpoint's model settings, or start a new out_dir.",
          dir, fmt::join(model_changes, "\n  ")));
    if (!stream_changes.empty())
      throw std::invalid_argument(fmt::format(
          "{} cannot continue its data stream with these changes (checkpoint → config):\n  {}\n"
          "Keep them as they were (gradient_accumulation_steps and the number of ranks may change).",
          dir, fmt::join(stream_changes, "\n  ")));
    try {
      state = load_checkpoint(dir, layout);
    } catch (const std::exception& e) {
      if (resume != "auto") throw;
      fmt::print(stderr, "resume: warning: skipping {}: {}\n", dir, e.what());
      continue;
    }
    for (const std::string& d : other_changes) fmt::print("resume: changed since the checkpoint: {}\n", d);
    chosen = dir;
    return true;
  }
  throw std::runtime_error(fmt::format("resume: none of the {} checkpoints in {} is readable (see the warnings above)",
                                       candidates.size(), cfg.train.out_dir));
}

// The training data: required to train (not to load a config for generation, evaluation or
// export, or to benchmark on random tokens).
std::vector<std::string> training_shards(const Config& cfg) {
  if (cfg.data.train.empty())
    throw std::invalid_argument(
        fmt::format("{}: data.train: required for training: the training shards (a path, a glob, or a list)", cfg.path));
  return expand_shards(cfg.data.train, "data.train");
}

// metrics.jsonl keeps the records of steps before `start` (a resumed run rewrites the rest).
void trim_metrics(const fs::path& path, int64_t start) {
  std::string kept, line;
  {
    std::ifstream in(path);
    while (std::getline(in, line)) {
      try {
        if (nlohmann::json::parse(line).value("step", INT64_MAX) < start) kept += line + "\n";
      } catch (const nlohmann::json::exception&) {
        // a line cut short by a crash: drop it
      }
    }
    if (in.bad())  // (a read error, not the end: rewriting would lose the rest of the history)
      throw std::runtime_error(fmt::format("{}: cannot read it: {}", path.string(), std::strerror(errno)));
  }
  write_file_atomically(path.string(), kept);
}


// Test hooks (tests/test_mpi.cpp): T6_TEST_NAN_STEP / T6_TEST_THROW_STEP, with
// T6_TEST_FAULT_RANK, poison the gradients of, or throw on, one rank at one step
// (T6_TEST_NAN_STEPS: that many steps from T6_TEST_NAN_STEP on).
struct FaultInjection {
  int64_t nan_step = -1, nan_steps = 1, throw_step = -1, signal_eval_step = -1, hang_step = -1, diverge_step = -1;
  int rank = 0;
  FaultInjection() {
    if (const char* v = std::getenv("T6_TEST_NAN_STEP")) nan_step = std::atoll(v);
    if (const char* v = std::getenv("T6_TEST_NAN_STEPS")) nan_steps = std::atoll(v);
    if (const char* v = std::getenv("T6_TEST_SIGTERM_IN_EVAL")) signal_eval_step = std::atoll(v);
    if (const char* v = std::getenv("T6_TEST_HANG_STEP")) hang_step = std::atoll(v);
    if (const char* v = std::getenv("T6_TEST_DIVERGE_STEP")) diverge_step = std::atoll(v);
    if (const char* v = std::getenv("T6_TEST_THROW_STEP")) throw_step = std::atoll(v);
    if (const char* v = std::getenv("T6_TEST_FAULT_RANK")) rank = std::atoi(v);
  }
};

// The outlier test's memory (docs: configs/README.md, skip_zscore_*): the mean and standard
// deviation of the last kOutlierWindow accepted values, once there are kOutlierWarmup.
constexpr size_t kOutlierWindow = 100, kOutlierWarmup = 20;
// Training batches are read this many ahead, on a thread of their own.
constexpr int kPrefetch = 4;
// --benchmark's random tokens: a seed per rank, so ranks see different batches.
constexpr uint64_t kBenchmarkSeed = 1234;

// Is x an outlier among the recent accepted values?
struct Outliers {
  std::deque<double> recent;
  bool above(double x, double zscore) const {
    if (zscore <= 0 || recent.size() < kOutlierWarmup) return false;
    double mean = 0, var = 0;
    for (double v : recent) mean += v / recent.size();
    for (double v : recent) var += (v - mean) * (v - mean) / recent.size();
    return x > mean + zscore * std::sqrt(var);
  }
  void add(double x) {
    recent.push_back(x);
    if (recent.size() > kOutlierWindow) recent.pop_front();
  }
};


std::string device_summary(const Context& ctx) {
  if (ctx.device == Device::cpu) return fmt::format("CPU, {} OpenMP threads", omp_get_max_threads());
  const GpuMemory m = gpu_memory(ctx);
  return fmt::format("{} ({:.1f} GB)", gpu_name(ctx), m.total / 1e9);
}

// The synthetic batches of --benchmark: uniform random tokens, seeded per rank.
struct RandomTokens {
  std::mt19937_64 rng;
  int vocab;
  void next(int32_t* inputs, int32_t* targets, size_t n) {
    for (size_t i = 0; i < n; i++)
      inputs[i] = (int32_t)uniform_below(rng, vocab), targets[i] = (int32_t)uniform_below(rng, vocab);
  }
};

// The median of a field over steps[first, size()) (the upper median of an even count); 0 if none.
double median_of(const std::vector<StepRecord>& steps, size_t first, double StepRecord::*field) {
  std::vector<double> v;
  for (size_t i = first; i < steps.size(); i++) v.push_back(steps[i].*field);
  if (v.empty()) return 0;
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

// median, over the steps after the first two (warm-up), of a step record's field
double median_after_warmup(const std::vector<StepRecord>& steps, double StepRecord::*field) {
  return median_of(steps, steps.size() > 2 ? 2 : 0, field);
}

// The time the remaining steps take at the median pace of the last (up to) 50 steps; steps
// alone (evaluations and checkpoints add to it).
std::string eta(const std::vector<StepRecord>& steps, int64_t remaining) {
  if (steps.size() < 3 || remaining <= 0) return "";
  const double ms = median_of(steps, steps.size() > 50 ? steps.size() - 50 : 1, &StepRecord::ms);
  return " | ETA " + format_duration(ms / 1e3 * remaining);
}

// Model FLOPs utilization of one rank (docs/model.md's formula over kPeakFlops).
double mfu(const ModelConfig& mc, double tokens_per_sec_per_rank) {
  return flops_per_token(mc) * tokens_per_sec_per_rank / kPeakFlops;
}

void print_benchmark(const Config& cfg, const Context& ctx, size_t activation_bytes,
                     const std::vector<StepRecord>& steps, size_t tokens_per_step, int W) {
  const double ms = median_after_warmup(steps, &StepRecord::ms), tok_s = tokens_per_step / (ms / 1e3);
  std::string memory = fmt::format("{:.2f} GB activations", activation_bytes / 1e9);
  if (ctx.device == Device::cuda) {
    const GpuMemory m = gpu_memory(ctx);
    memory = fmt::format("{:.2f} GB peak allocated, {:.2f} GB in use on the device ({})", m.peak_allocated / 1e9,
                         m.used / 1e9, memory);
  }
  fmt::print("\nbenchmark ({}, median of {} steps after 2 warm-up steps)\n", device_summary(ctx),
             steps.size() > 2 ? steps.size() - 2 : steps.size());
  fmt::print("| config | micro-batch × accum × ranks | tokens/step | ms/step | tokens/s | tokens/s per rank | MFU | memory |\n");
  fmt::print("|---|---|---|---|---|---|---|---|\n");
  fmt::print("| {} | {} × {} × {} | {} | {:.1f} | {:.0f} | {:.0f} | {:.1f}% | {} |\n", cfg.path, cfg.train.batch_size,
             cfg.train.gradient_accumulation_steps, W, tokens_per_step, ms, tok_s, tok_s / W,
             100 * mfu(cfg.model, tok_s / W), memory);
}

// The split of the flat buffers into W contiguous ranges, one per rank (ZeRO-1's optimizer shards).
std::vector<size_t> shard_counts(size_t total, int W) {
  std::vector<size_t> counts(W);
  for (int r = 0; r < W; r++) counts[r] = total / W + ((size_t)r < total % W);
  return counts;
}

// One run on this rank, read top to bottom in run(): set up (the constructor: data, model and
// optimizer; then the starting state and the logs), then per step train_step (which ends with
// log_step) and after_step (epoch, consistency check, evaluation, checkpoint, stop signal), then
// finish.
// comm carries host values (losses, norms, checkpoint gathers, signals); dcomm the backend's
// gradient and parameter buffers (NCCL on GPUs, comm itself on the CPU).
template <class Model>
struct Trainer {
  StopSignals signals;  // first: a stop asked for while the data and the model are set up is kept
  const Config& cfg;
  const ModelConfig& mc;
  const TrainConfig& tc;
  const Benchmark& bench;
  Communicator* comm;
  Communicator* dcomm;
  const Context& ctx;
  const int W, rank;
  const bool root;
  const int B, T, accum;
  const size_t tokens_per_step;
  const bool benchmarking;  // --benchmark: random tokens, nothing read or written
  const int64_t max_iters;

  // Data and weights are checked before anything is written, so a bad run leaves no outputs.
  // A benchmark reads no data: its tokens are random.
  std::unique_ptr<DataLoader> train_data, val_data;
  std::vector<McExample> mc_examples;
  RandomTokens random_tokens;
  Model model;
  const size_t total;

  // ZeRO-1: rank r owns the optimizer state of one contiguous range of the flat buffers.
  const bool zero;
  const std::vector<size_t> counts;
  const size_t shard_begin, shard_size;
  AdamW<float> optimizer;
  Buffer<float> grad_shard;
  // With train.overlap_grad_reduce, in the last micro-batch each layer's gradients are final as
  // soon as its backward is done: their all-reduce starts then and overlaps the layers below.
  const bool overlapped;

  int64_t start = 0;  // the first step: 0, or the resumed checkpoint's
  std::string resumed_from;
  std::ofstream metrics;
  std::unique_ptr<TensorBoardWriter> tensorboard;
  TrainResult result;
  std::unique_ptr<OutDirLock> out_dir_lock;
  int resumed_world = 0;  // ranks of the run that wrote the checkpoint resumed from
  std::string resumed_data;  // and its training data's fingerprint
  const FaultInjection faults;
  Outliers loss_history, norm_history;
  int consecutive_skips = 0;
  // Where the steps skipped in a row began: the state a run that gives up saves, so that
  // continuing it takes those batches again (after a lower learning rate, say).
  int64_t first_skipped = 0;
  LoaderState first_skipped_loader;
  int64_t last_saved_iter = -1;  // this run's last committed checkpoint (every rank)
  std::vector<int32_t> inputs, targets;
  int64_t epoch = 0;

  Trainer(const Config& cfg, const Benchmark& bench, Communicator* comm, Communicator* dcomm, const Context& ctx)
      : cfg(cfg), mc(cfg.model), tc(cfg.train), bench(bench), comm(comm), dcomm(dcomm), ctx(ctx), W(comm->size()),
        rank(comm->rank()), root(rank == 0), B(tc.batch_size), T(mc.block_size), accum(tc.gradient_accumulation_steps),
        tokens_per_step((size_t)B * T * accum * W), benchmarking(bench.steps > 0),
        max_iters(benchmarking ? bench.steps : tc.max_iters),
        train_data(benchmarking ? nullptr
                                 : std::make_unique<DataLoader>(training_shards(cfg), B, T,
                                                                cfg.data.shuffle, cfg.data.seed, mc.vocab_size,
                                                                "data.train", rank, W, kPrefetch)),
        val_data(benchmarking || cfg.data.val.empty()
                     ? nullptr
                     : std::make_unique<DataLoader>(expand_shards(cfg.data.val, "data.val"), B, T, false, 0,
                                                    mc.vocab_size, "data.val")),
        mc_examples(tc.eval_mc.empty() || benchmarking
                        ? std::vector<McExample>{}
                        : read_mc_file(tc.eval_mc, mc.vocab_size, train_data->meta().tokenizer)),
        random_tokens{std::mt19937_64(kBenchmarkSeed + rank), mc.vocab_size},
        model(mc, ctx, B, T, tc.recompute),
        total(model.layout.total),
        zero(cfg.optim.zero == 1 && W > 1),
        counts(shard_counts(total, W)),
        shard_begin(zero ? std::accumulate(counts.begin(), counts.begin() + rank, size_t{0}) : 0),
        shard_size(zero ? counts[rank] : total),
        optimizer(ctx, shard_size, cfg.optim.adamw),
        overlapped(W > 1 && !zero && tc.overlap_grad_reduce),
        inputs((size_t)B * T),
        targets((size_t)B * T) {
    if (zero) grad_shard = Buffer<float>(ctx, shard_size);
    check_data_agrees();
  }

  // Every rank must run the same config (launch/train.sh gives them one command line); a rank
  // given another model, batch or schedule would overrun the collectives' buffers, hang them, or
  // train on other data without a word. Checked first, before any collective depends on it.
  void check_ranks_share_the_config() {
    if (W == 1) return;
    const std::string mine = cfg.to_yaml();
    std::string rank0s = mine;
    comm->broadcast_string(rank0s, 0);
    const bool mine_differs = rank0s != mine;
    double any_differs = mine_differs;
    comm->all_reduce_max(&any_differs, 1);
    if (any_differs == 0) return;
    if (!mine_differs)
      throw std::invalid_argument("another rank was given a different config than rank 0 (its error lists the keys); "
                                  "every rank must run the same one");
    std::vector<std::string> keys = config_differences(load_config_text(rank0s, "rank 0's config"), cfg);
    if (keys.empty()) keys.push_back("(the effective configs differ in their text)");
    throw std::invalid_argument(fmt::format("rank {} was given a different config than rank 0 (rank 0 → this rank):\n  "
                                            "{}\nEvery rank must run the same one", rank, fmt::join(keys, "\n  ")));
  }

  // Every rank writes its checkpoint shard into out_dir, which rank 0 then commits: all ranks
  // must see the same directory (a shared filesystem across machines). Checked at the start, not
  // at the first save hours later.
  void check_out_dir_shared() {
    if (W == 1) return;
    const fs::path probe = fs::path(tc.out_dir) / fmt::format(".probe-{}", (long)getpid());
    std::string name = probe.string();
    if (root) write_file_atomically(name, "written by rank 0\n");
    comm->broadcast_string(name, 0);
    double missing = fs::exists(name) ? 0 : 1;
    comm->all_reduce_max(&missing, 1);
    if (root) fs::remove(name);
    if (missing != 0)
      throw std::runtime_error(fmt::format("train.out_dir {}: some rank cannot see the files rank 0 writes there; with "
                                           "several machines it must be on a filesystem they all share", tc.out_dir));
  }

  // What would otherwise fail only after training, or train on mismatched data without a word:
  // validation shards of another tokenizer, and the end-of-run sample's tokenizer and prompt.
  void check_data_agrees() const {
    if (!train_data) return;
    // An optimizer step reads accum × W different micro-batches; with fewer in the data, one
    // would appear twice in the same step.
    if (train_data->windows_per_epoch() < (uint64_t)accum * W)
      throw std::invalid_argument(fmt::format(
          "data.train: {} micro-batches of {}×{} tokens per epoch, fewer than one optimizer step reads ({} accumulation "
          "× {} rank(s)), so a step would see one twice: more data, fewer ranks, or a smaller batch or block_size",
          train_data->windows_per_epoch(), B, T, accum, W));
    const ShardMeta& t = train_data->meta();
    if (val_data) {
      const ShardMeta& v = val_data->meta();
      if (v.tokenizer != t.tokenizer || v.vocab_size != t.vocab_size || v.eot_token != t.eot_token)
        throw std::invalid_argument(fmt::format(
            "data.val was tokenized differently from data.train: tokenizer '{}', vocab_size {}, eot_token {} against "
            "'{}', {}, {}", v.tokenizer, v.vocab_size, v.eot_token, t.tokenizer, t.vocab_size, t.eot_token));
    }
    if (cfg.sample.max_new_tokens > 0) {
      const auto tokenizer = make_tokenizer(t.tokenizer);  // an unknown name: an error now, not after training
      for (const int32_t id : token_ids(*tokenizer, cfg.sample.prompt))
        if (id >= mc.vocab_size)
          throw std::invalid_argument(fmt::format("sample.prompt: the {} tokenizer gives id {}, not below "
                                                  "model.vocab_size {}", t.tokenizer, id, mc.vocab_size));
    }
  }

  TrainResult run(const std::string& resume) {
    check_ranks_share_the_config();
    if (root && !benchmarking) out_dir_lock = std::make_unique<OutDirLock>(tc.out_dir);  // one run per out_dir
    if (!benchmarking) check_out_dir_shared();
    restore_or_init(resume);  // (not watched: every rank reads the checkpoint, as long as that takes)
    dcomm->set_collective_timeout(tc.collective_timeout_s);  // (NCCL's watchdog passes it on to MPI's)
    param_norm = std::sqrt(sum_squares(ctx, model.params.data(), total));  // the first update's yardstick
    if (root) open_logs();
    epoch = train_data ? train_data->epoch() : 0;
    for (int64_t step = start; step < max_iters; step++) {
      if (benchmarking && bench.profile && step == 2) set_profiling(ctx, true);
      if (!train_step(step)) return result;  // too many skipped steps in a row
      if (!benchmarking && !after_step(step)) return result;  // stopped by a signal
    }
    finish();
    return result;
  }

  // Rank 0 chooses the checkpoint; every rank loads that one and takes its part. Without one:
  // model.init_from's weights, or the seed's.
  void restore_or_init(const std::string& resume) {
    if (!benchmarking && resume.empty() && root && !list_checkpoints(tc.out_dir).empty())
      throw std::invalid_argument(fmt::format(
          "{} already holds checkpoints of an earlier run (newest: {}); continue it with --resume auto, or start a "
          "new run in another train.out_dir (or delete the old one)",
          tc.out_dir, list_checkpoints(tc.out_dir).front()));
    TrainingState resumed;
    if (!resume.empty()) {
      if (root && find_resume_state(cfg, resume, model.layout, resumed, resumed_from)) {
        const auto moved = set_aside_later_checkpoints(tc.out_dir, resumed.iter);
        if (!moved.empty())
          fmt::print("resume: {} checkpoint(s) past step {} belong to the run this one replaces; moved to {}/superseded/ "
                     "so that --resume auto continues this run\n", moved.size(), resumed.iter, tc.out_dir);
      }
      comm->broadcast_string(resumed_from, 0);
      if (!root && !resumed_from.empty())  // with ZeRO, only this rank's shard of the moments is kept
        resumed = zero ? load_checkpoint(resumed_from, model.layout, shard_begin, shard_size)
                       : load_checkpoint(resumed_from, model.layout);
    }
    if (!resumed_from.empty()) {
      model.params_from_host(resumed.params);
      optimizer.m.from_host(resumed.adam_m.data() + (shard_begin - resumed.moments_begin), shard_size);
      optimizer.v.from_host(resumed.adam_v.data() + (shard_begin - resumed.moments_begin), shard_size);
      optimizer.steps = resumed.adam_steps;
      train_data->restore(resumed.loader);
      start = resumed.iter;
      resumed_world = resumed.world_size;
      resumed_data = resumed.data_fingerprint;
    } else if (!mc.init_from.empty()) {  // a weights file, or a checkpoint directory (as t6-eval takes)
      model.params_from_host(fs::is_directory(mc.init_from) ? load_checkpoint(mc.init_from, model.layout).params
                                                            : load_weights(mc.init_from, model.layout));
    } else {
      model.params_from_host(init_params(mc, model.layout, mc.seed));
    }
  }

  // Rank 0: what the run is (config, model, data, batch, device, memory), then out_dir's
  // config.yaml, metrics.jsonl (a resumed run keeps the steps before its checkpoint) and
  // the TensorBoard events. A benchmark writes nothing.
  void open_logs() {
    if (benchmarking) {
      fmt::print("benchmark: {} steps of {} on random tokens; {}\n", bench.steps, cfg.path, device_summary(ctx));
      return;
    }
    fmt::print("config {}:\n{}", cfg.path, cfg.to_yaml());
    fs::create_directories(tc.out_dir);
    // Every record goes to metrics.jsonl and, with train.tensorboard, each of its numbers to an
    // event file as a scalar ("train/loss", "eval/val_loss", …). The event file first: a path
    // it cannot be written to stops the run before out_dir's config and metrics are touched.
    if (!tc.tensorboard.empty()) tensorboard = std::make_unique<TensorBoardWriter>(tc.tensorboard);
    write_file_atomically((fs::path(tc.out_dir) / "config.yaml").string(), cfg.to_yaml());
    fmt::print("model: T6 {}, {} layers, n_embd {}, {} heads ({} KV) × {}, {} parameters; {}\n",
               attention_name(mc.attention), mc.n_layer, mc.n_embd, mc.n_head, mc.kv_heads(), mc.head_dim,
               model.layout.parameter_count(),
               !resumed_from.empty() ? fmt::format("resumed from {} at step {}", resumed_from, start)
               : mc.init_from.empty() ? fmt::format("init from seed {}", mc.seed)
                                      : "init from " + mc.init_from);
    if (!resumed_data.empty() && resumed_data != train_data->fingerprint()) warn_data_changed();
    if (resumed_world > 0 && resumed_world != W)
      fmt::print("resume: the checkpoint was written by {} rank(s); this run has {}: the data stream continues where "
                 "it stopped, split over {} rank(s)\n", resumed_world, W, W);
    fmt::print("data: {} tokens for training ({} windows of {}×{}+1, tokenizer '{}', shuffle {}){}\n",
               train_data->total_tokens(), train_data->windows_per_epoch(), B, T, train_data->meta().tokenizer,
               cfg.data.shuffle,
               val_data ? fmt::format(", {} tokens for validation", val_data->total_tokens()) : ", no validation data");
    fmt::print("batch: {} sequences × {} tokens × {} accumulation × {} rank(s) = {} tokens per step (global batch "
               "{} sequences), steps {} to {}\n",
               B, T, accum, W, tokens_per_step, B * accum * W, start, tc.max_iters);
    fmt::print("device: {}\n", device_summary(ctx));
    if (ctx.device == Device::cuda) {
      const GpuMemory m = gpu_memory(ctx);
      fmt::print("GPU memory: {:.2f} GB allocated ({:.2f} GB activations{}), {:.2f} GB in use on the device\n",
                 m.peak_allocated / 1e9, model.activation_bytes() / 1e9,
                 tc.recompute ? ", norms and SwiGLU recomputed in backward" : "", m.used / 1e9);
    }
    if (W > 1)
      fmt::print("optimizer state: {:.1f} MB per rank{}\n", 2.0 * shard_size * sizeof(float) / 1e6,
                 zero ? fmt::format(" (ZeRO-1: 1/{} of {:.1f} MB)", W, 2.0 * total * sizeof(float) / 1e6) : "");
    const fs::path metrics_path = fs::path(tc.out_dir) / "metrics.jsonl";
    if (start > 0) trim_metrics(metrics_path, start);
    errno = 0;
    metrics.open(metrics_path, start > 0 ? std::ios::app : std::ios::trunc);
    if (!metrics)
      throw std::runtime_error(fmt::format("{}: cannot write: {}", metrics_path.string(), std::strerror(errno)));
  }

  void record(const nlohmann::json& j) {
    if (!root || benchmarking) return;
    metrics << j.dump() << "\n" << std::flush;
    if (!metrics)  // (a full disk: stop rather than train on without a record)
      throw std::runtime_error(fmt::format("{}/metrics.jsonl: write failed: {}", tc.out_dir, std::strerror(errno)));
    if (!tensorboard) return;
    const bool eval = j.contains("val_loss") || j.contains("mc_acc");
    for (const auto& [name, value] : j.items())
      if (name != "step" && value.is_number() && std::isfinite(value.template get<double>()))  // as the JSON's nulls
        tensorboard->scalar((eval ? "eval/" : "train/") + name, j["step"], value);
    tensorboard->flush();
  }

  // Page-locked host floats that the GPU copies into while training goes on; kept from one
  // save to the next (pinning gigabytes takes a while).
  struct PinnedFloats {
    const Context* ctx = nullptr;
    float* data = nullptr;
    size_t n = 0;
    PinnedFloats() = default;
    PinnedFloats(const PinnedFloats&) = delete;
    PinnedFloats& operator=(const PinnedFloats&) = delete;
    ~PinnedFloats() { release(); }
    void resize(const Context& c, size_t count) {
      if (count == n && ctx == &c) return;
      release();
      data = static_cast<float*>(c.alloc_pinned(count * sizeof(float)));
      ctx = &c, n = count;
    }
    void release() {
      if (data) ctx->release_pinned(data);
      data = nullptr, n = 0;
    }
  };

  // A sharded save (trainer/checkpoint.h): every rank writes its slice of the parameters and
  // moments (the ZeRO partition, or the same even split without ZeRO), so no rank holds more
  // than its slice on the host. Training does not wait for the copy: it runs on the device
  // beside the next step's forward and backward (ctx.snapshot_to_host), and only that step's
  // update waits for it to end. The file is written on a thread once the copy is there, while
  // the next steps run, and the checkpoint is committed (rank 0's manifest, the rename,
  // `latest`) at the first step boundary where every rank's write is done, or at the next save
  // or the end of the run. At most one save is in flight. wait: commit now (a stop, the last
  // step, giving up).
  struct PendingSave {
    int64_t iter = -1;
    int64_t adam_steps = 0;  // and the loader's state: the run's place when the slice was taken
    LoaderState loader;
    PinnedFloats params, m, v;  // the slice, alive until its write ends
    std::future<SliceSums> sums;
    double stall_ms = 0;
    std::chrono::steady_clock::time_point started;
  } pending;

  void checkpoint(int64_t iter, bool wait = false, const LoaderState* loader = nullptr) {
    const TimelineRange in_checkpoint(ctx, "checkpoint");
    const auto start_time = std::chrono::steady_clock::now();  // (the pause includes waiting for the last save)
    finish_save();
    if (root) begin_checkpoint(tc.out_dir, iter);
    comm->barrier();  // the temporary directory exists before any rank writes into it
    const size_t begin = std::accumulate(counts.begin(), counts.begin() + rank, size_t{0}), n = counts[rank];
    pending.params.resize(ctx, n), pending.m.resize(ctx, n), pending.v.resize(ctx, n);
    const size_t moments = zero ? 0 : begin;  // (ZeRO's moments are the shard alone)
    ctx.snapshot_to_host(pending.params.data, model.params.data() + begin, n * sizeof(float));
    ctx.snapshot_to_host(pending.m.data, optimizer.m.data() + moments, n * sizeof(float));
    ctx.snapshot_to_host(pending.v.data, optimizer.v.data() + moments, n * sizeof(float));
    const StateSlice slice{begin, n, pending.params.data, pending.m.data, pending.v.data};
    pending.iter = iter;
    pending.adam_steps = optimizer.steps;
    pending.loader = loader ? *loader : train_data->state();
    pending.started = std::chrono::steady_clock::now();
    pending.stall_ms = std::chrono::duration<double, std::milli>(pending.started - start_time).count();
    pending.sums = std::async(std::launch::async, [&ctx = ctx, out = tc.out_dir, iter, r = rank, slice] {
      ctx.snapshot_wait();
      return write_checkpoint_slice(out, iter, r, slice);
    });
    if (wait) finish_save();
  }

  // Every rank's write done (or, with block false, all of them already done): the checksums go
  // to rank 0, which commits. A write that failed throws here, on its rank.
  void finish_save(bool block = true) {
    if (pending.iter < 0) return;
    if (!block) {
      double busy = pending.sums.wait_for(std::chrono::seconds(0)) == std::future_status::ready ? 0 : 1;
      comm->all_reduce_max(&busy, 1);
      if (busy != 0) return;
    }
    const int64_t iter = pending.iter;
    pending.iter = -1;
    // A slow filesystem may hold a rank in its write for long while the others wait below for its
    // checksums: not a hung peer, so the watchdog looks away until the save is committed.
    dcomm->set_collective_timeout(0);
    SliceSums mine;
    try {
      mine = pending.sums.get();
    } catch (const std::exception& e) {
      throw std::runtime_error(fmt::format("saving checkpoint {}/ckpt_{} failed: {}", tc.out_dir, iter, e.what()));
    }
    const double write_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - pending.started).count();
    std::vector<double> sums(3 * (size_t)W, 0.0);  // CRC-32s are exact in a double
    sums[3 * rank] = mine.params, sums[3 * rank + 1] = mine.adam_m, sums[3 * rank + 2] = mine.adam_v;
    comm->all_reduce_sum(sums.data(), sums.size());
    if (root) {
      std::vector<SliceSums> all(W);
      for (int r = 0; r < W; r++)
        all[r] = {(uint32_t)sums[3 * r], (uint32_t)sums[3 * r + 1], (uint32_t)sums[3 * r + 2]};
      TrainingState meta;
      meta.iter = iter;
      meta.adam_steps = pending.adam_steps;
      meta.loader = pending.loader;
      meta.world_size = W;
      meta.config_yaml = cfg.to_yaml();
      meta.data_fingerprint = train_data->fingerprint();
      result.last_checkpoint = commit_checkpoint(tc.out_dir, model.layout, meta, counts, all, cfg.checkpoint.keep);
      fmt::print("saved checkpoint {} (training paused {:.0f} ms to queue its copy; written beside it within {:.2f} s)\n",
                 result.last_checkpoint, pending.stall_ms, write_s);
    }
    comm->barrier();  // a checkpoint is complete for everyone before anyone moves on
    last_saved_iter = iter;
    dcomm->set_collective_timeout(tc.collective_timeout_s);  // (NCCL's watchdog passes it on to MPI's)
  }

  // One optimizer step: the micro-batches' gradients summed over ranks, then the update, or a
  // skip when the loss or gradient norm is non-finite or an outlier. False: too many skips in a
  // row (a checkpoint of the last good state is saved, except in a benchmark).
  bool train_step(int64_t step) {
    const TimelineRange in_step(ctx, fmt::format("step {}", step).c_str());
    const auto step_start = std::chrono::steady_clock::now();
    if (consecutive_skips == 0 && train_data) first_skipped = step, first_skipped_loader = train_data->state();
    const double local_loss = accumulate_gradients(step);
    float* grads = reduce_gradients();
    // The gradients are summed over ranks; the 1/W of the average is applied by the optimizer.
    double sums[2] = {local_loss, sum_squares(ctx, grads, shard_size)};
    comm->all_reduce_sum(&sums[0], 1);
    if (zero) comm->all_reduce_sum(&sums[1], 1);
    const double loss = sums[0] / W, grad_norm = std::sqrt(sums[1]) / W;

    // Every rank sees the same global loss and norm, so every rank makes the same decision.
    const char* skip_reason = !std::isfinite(loss) || !std::isfinite(grad_norm) ? "non-finite loss or gradient norm"
                              : loss_history.above(loss, tc.skip_zscore_loss)   ? "loss outlier"
                              : norm_history.above(grad_norm, tc.skip_zscore_grad) ? "gradient-norm outlier"
                                                                                    : nullptr;
    const double lr = cfg.optim.schedule.at(step);
    if (skip_reason) {
      if (!skip(step, skip_reason, loss, lr, grad_norm)) return false;
    } else {
      consecutive_skips = 0;
      loss_history.add(loss);
      norm_history.add(grad_norm);
      const TimelineRange in_update(ctx, "update");
      ctx.snapshot_fence();  // a checkpoint's copy of the parameters and moments, if one runs, ends first
      optimizer.step(model.params.data() + shard_begin, grads, lr, zero ? nullptr : model.bf16_weights(),
                     clip_factor(grad_norm, cfg.optim.grad_clip) / W);
      if (zero) dcomm->all_gather(model.params.data() + shard_begin, model.params.data(), counts);
      model.refresh_weights(/*flat_copy_current=*/!zero);
      if (!update_is_sane(step)) return false;
    }
    ctx.synchronize();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count();
    const StepRecord r{step, loss, lr, grad_norm, tokens_per_step / seconds, seconds * 1e3};
    result.steps.push_back(r);
    if (!skip_reason) log_step(r);
    return true;
  }

  // Forward and backward over the micro-batches; this rank's mean loss.
  double accumulate_gradients(int64_t step) {
    model.zero_grads();
    double loss = 0;
    const bool poison = rank == faults.rank && step >= faults.nan_step && step < faults.nan_step + faults.nan_steps;
    auto poison_at = [&](size_t index) {
      const float nan = std::nanf("");
      model.grads.from_host(&nan, 1, index);
    };
    for (int micro = 0; micro < accum; micro++) {
      if (benchmarking) random_tokens.next(inputs.data(), targets.data(), inputs.size());
      else train_data->next(inputs.data(), targets.data());
      {
        const TimelineRange in_forward(ctx, "forward");
        loss += model.forward(inputs.data(), targets.data(), 1.0 / accum);
      }
      const TimelineRange in_backward(ctx, "backward");
      if (overlapped && micro + 1 == accum) {
        model.backward([&](size_t off, size_t n) {
          if (poison && off > 0) poison_at(off);  // before the range leaves this rank
          dcomm->start_all_reduce_sum(model.grads.data() + off, n);
        });
      } else {
        model.backward();
      }
    }
    if (rank == faults.rank && step == faults.throw_step)
      throw std::runtime_error(fmt::format("injected failure at step {} (T6_TEST_THROW_STEP)", step));
    if (rank == faults.rank && step == faults.hang_step)  // a rank that stops answering (T6_TEST_HANG_STEP)
      std::this_thread::sleep_for(std::chrono::seconds(120));
    if (poison && !overlapped) poison_at(total / 2);
    return loss / accum;
  }

  // Sums the gradients over ranks (ZeRO: this rank's shard of them); where they now are.
  float* reduce_gradients() {
    const TimelineRange in_reduce(ctx, "gradient reduce");
    if (zero) {
      dcomm->reduce_scatter_sum(model.grads.data(), grad_shard.data(), counts);
      return grad_shard.data();
    }
    if (overlapped) dcomm->wait_all();
    else if (W > 1) dcomm->all_reduce_sum(model.grads.data(), total);
    return model.grads.data();
  }

  // After an update: the parameters' norm must be finite and must not jump (by more than
  // kAbsurdGrowth in one step; AdamW moves each weight by about the learning rate). A step that
  // broke the weights is not undone (that would need a copy of them), but it is never saved:
  // the run stops, pointing to the last checkpoint. Every rank holds the same parameters, so
  // every rank decides alike.
  static constexpr double kAbsurdGrowth = 10;
  double param_norm = 0;  // before the next update
  bool update_is_sane(int64_t step) {
    const double norm = std::sqrt(sum_squares(ctx, model.params.data(), total));
    if (std::isfinite(norm) && (norm <= kAbsurdGrowth * param_norm || param_norm == 0)) {
      param_norm = norm;
      return true;
    }
    finish_save();  // an earlier save is of good parameters: complete it
    result.gave_up = true;
    if (root)
      fmt::print("stopping: step {}'s update took the parameters' norm from {:.4g} to {:.4g}; they are not saved. "
                 "The last good checkpoint: {}. Lower optim.learning_rate (now {:.3g}) or raise optim.warmup_iters, "
                 "then continue with --resume auto.\n", step, param_norm, norm,
                 result.last_checkpoint.empty() ? "none from this run" : result.last_checkpoint,
                 cfg.optim.schedule.at(step));
    return false;
  }

  // A skipped update: logged and recorded. False when it is one too many in a row.
  bool skip(int64_t step, const char* reason, double loss, double lr, double grad_norm) {
    result.skipped++;
    consecutive_skips++;
    if (root)
      fmt::print("step {:>6}/{} | skipped: {} (loss {}, grad norm {}); {} skipped so far\n", step, tc.max_iters,
                 reason, loss, grad_norm, result.skipped);
    record({{"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", grad_norm}, {"skipped", reason}});
    if (consecutive_skips < tc.max_consecutive_skips) return true;
    result.gave_up = true;
    if (benchmarking) {  // a benchmark writes nothing
      if (root) fmt::print("benchmark: stopping after {} consecutive skipped steps\n", consecutive_skips);
      return false;
    }
    // The parameters are still those of the last good step; the data goes back to the first
    // skipped step's batch (the state after_step saved as this checkpoint, if it was due).
    // Saves made during the skips hold the same weights with the data past those batches:
    // they move aside, so that --resume auto takes this one.
    finish_save();
    if (root && !set_aside_later_checkpoints(tc.out_dir, first_skipped).empty())
      fmt::print("checkpoints saved during the skipped steps moved to {}/superseded/\n", tc.out_dir);
    if (last_saved_iter != first_skipped) checkpoint(first_skipped, /*wait=*/true, &first_skipped_loader);
    if (root)
      fmt::print("stopping: {} consecutive steps skipped (the last: {}). The last good state is in {}. Lower "
                 "optim.learning_rate or raise optim.warmup_iters, then continue with --resume auto.\n",
                 consecutive_skips, reason, result.last_checkpoint);
    return false;
  }

  void log_step(const StepRecord& r) {
    record({{"step", r.step}, {"loss", r.loss}, {"lr", r.lr}, {"grad_norm", r.grad_norm},
            {"tokens_per_sec", r.tokens_per_sec}, {"ms", r.ms}});
    if (root && (r.step % tc.log_interval == 0 || r.step + 1 == max_iters))
      fmt::print("step {:>6}/{} | loss {:.4f} | lr {:.3e} | grad norm {:.4f} | {:.0f} tok/s | {:.1f} ms{}{}\n", r.step,
                 max_iters, r.loss, r.lr, r.grad_norm, r.tokens_per_sec, r.ms,
                 ctx.device == Device::cuda ? fmt::format(" | MFU {:.1f}%", 100 * mfu(mc, r.tokens_per_sec / W)) : "",
                 benchmarking ? "" : eta(result.steps, max_iters - r.step - 1));
  }

  // What follows a training step: the epoch notice, the ranks' consistency check, the
  // evaluations, a checkpoint when due or asked for by a signal. False: stopped by a signal.
  bool after_step(int64_t step) {
    if (train_data->epoch() != epoch) {
      epoch = train_data->epoch();
      if (root) fmt::print("data: epoch {} begins (the training data wrapped around)\n", epoch);
    }
    if (W > 1 && tc.consistency_interval > 0 && (step + 1) % tc.consistency_interval == 0) check_ranks_agree(step);
    const bool last = step + 1 == tc.max_iters;
    // A signal reaches one rank or all; the max makes it everyone's decision. A run asked to
    // stop saves without evaluating first (unless this is its last step).
    double stop = stop_signal;
    comm->all_reduce_max(&stop, 1);
    if (((tc.eval_interval > 0 && (step + 1) % tc.eval_interval == 0) || last) && (stop == 0 || last))
      evaluate_now(step);
    if (stop == 0) {  // a signal during the evaluation
      stop = stop_signal;
      comm->all_reduce_max(&stop, 1);
    }
    const bool stopping = stop != 0;
    if (last || stopping || (cfg.checkpoint.interval > 0 && (step + 1) % cfg.checkpoint.interval == 0))
      checkpoint(step + 1, /*wait=*/last || stopping);
    else
      finish_save(/*block=*/false);  // commit an earlier save once every rank has written it
    if (!stopping || last) return true;
    if (root)
      fmt::print("stopped by {} after step {}, with checkpoint {} saved; to continue, run the same command "
                 "with --resume auto\n", (int)stop == SIGINT ? "SIGINT" : (int)stop == SIGUSR1 ? "SIGUSR1" : "SIGTERM",
                 step, result.last_checkpoint);
    result.interrupted = true;
    return false;
  }

  // The shards behind data.train differ from those of the checkpoint's run: the stream from
  // here is not the one the run would have read (the window order depends on the total). Said
  // loudly, shard by shard; not refused, since adding data to a run can be deliberate.
  void warn_data_changed() const {
    auto lines = [](const std::string& text) {
      std::vector<std::string> out;
      std::istringstream in(text);
      for (std::string line; std::getline(in, line);) out.push_back(line);
      return out;
    };
    const std::vector<std::string> before = lines(resumed_data), now = lines(train_data->fingerprint());
    fmt::print("WARNING: data.train is not the data the checkpoint was trained on (shard, tokens):\n");
    int listed = 0;
    for (const std::string& l : before)
      if (std::find(now.begin(), now.end(), l) == now.end()) fmt::print("  - {}\n", l), listed++;
    for (const std::string& l : now)
      if (std::find(before.begin(), before.end(), l) == before.end()) fmt::print("  + {}\n", l), listed++;
    if (listed == 0) fmt::print("  (the same shards, in another order)\n");
    fmt::print("WARNING: the data order from here on differs from the run's; if that is not intended, point "
               "data.train at the original shards\n");
  }

  // Identical parameters on every rank: the max and min over ranks of two sums of the fp32
  // parameters (their sum and sum of squares, each reduced on the device in a fixed order, so
  // equal parameters give equal bits) agree. Nothing is copied to the host; 32 bytes go over MPI.
  void check_ranks_agree(int64_t step) {
    if (rank == faults.rank && step == faults.diverge_step) {  // (a test's corrupted weight)
      const float odd = 0.5f;
      model.params.from_host(&odd, 1, total / 2);
    }
    const double s = sum(ctx, model.params.data(), total), q = sum_squares(ctx, model.params.data(), total);
    double span[4] = {s, q, -s, -q};
    comm->all_reduce_max(span, 4);
    if (span[0] != -span[2] || span[1] != -span[3])
      throw std::runtime_error(fmt::format(
          "step {}: the ranks' parameters diverged (their sums differ); this is a bug or a hardware fault", step));
  }

  void evaluate_now(int64_t step) {
    const TimelineRange in_evaluation(ctx, "evaluate");
    if (val_data) {
      if (step == faults.signal_eval_step) std::raise(SIGTERM);  // (a test's signal in mid-evaluation)
      const double val = evaluate(model, *val_data, tc.eval_iters);  // every rank the same: no communication
      if (std::isnan(val) && stop_signal != 0) {
        if (root) fmt::print("step {:>6}/{} | evaluation cut short by a stop signal: not recorded\n", step, tc.max_iters);
      } else {
        result.final_val_loss = val;
        record({{"step", step}, {"val_loss", val}});
        if (root) fmt::print("step {:>6}/{} | val loss {:.4f}\n", step, tc.max_iters, val);
      }
    }
    double stop = stop_signal;  // (the scoring below communicates: every rank decides alike)
    comm->all_reduce_max(&stop, 1);
    if (!mc_examples.empty() && stop == 0) {  // each rank a share of the examples, summed
      const McScore s = score_multiple_choice(model, mc_examples, comm);
      result.mc_acc = s.acc, result.mc_acc_norm = s.acc_norm;
      record({{"step", step}, {"mc_acc", s.acc}, {"mc_acc_norm", s.acc_norm}});
      if (root)
        fmt::print("step {:>6}/{} | multiple choice: acc {:.4f}, acc_norm {:.4f} ({} examples)\n", step,
                   tc.max_iters, s.acc, s.acc_norm, s.examples);
    }
  }

  // A benchmark's table (and profile); a run's final weights and sample.
  void finish() {
    if (!root) return;
    if (benchmarking) {
      print_benchmark(cfg, ctx, model.activation_bytes(), result.steps, tokens_per_step, W);
      if (bench.profile)
        fmt::print("\ndevice time by op over steps 2 to {} ({} micro-batches):\n{}", max_iters - 1,
                   (max_iters - 2) * accum, profile_report(ctx));
      return;
    }
    if (start >= tc.max_iters)
      fmt::print("nothing to do: the checkpoint is at step {} of max_iters {}\n", start, tc.max_iters);
    const std::vector<float> final_params = model.params_to_host();
    const fs::path weights = fs::path(tc.out_dir) / "model.safetensors";
    save_weights(weights.string(), model.layout, final_params, {{"format", "pt"}, {"t6_config", cfg.to_yaml()}});
    fmt::print("saved {}\n", weights.string());
    if (cfg.sample.max_new_tokens > 0) {
      const auto tokenizer = make_tokenizer(train_data->meta().tokenizer);
      fmt::print("sample (temperature {}, top-k {}):\n{}{}\n", cfg.sample.temperature, cfg.sample.top_k,
                 cfg.sample.prompt, sample_text(cfg, final_params, *tokenizer));
    }
  }
};

template <class Model>
TrainResult run(const Config& cfg, const std::string& resume, const Benchmark& bench, Communicator* comm,
                Communicator* dcomm, const Context& ctx) {
  std::unique_ptr<Trainer<Model>> trainer;
  try {
    trainer = std::make_unique<Trainer<Model>>(cfg, bench, comm, dcomm, ctx);
  } catch (const OutOfMemory& e) {  // the memory is all planned here: say what the run needs and what helps
    const ParamLayout layout = make_layout(cfg.model);  // (its flat buffers also hold the padding)
    throw OutOfMemory(fmt::format(
        "{}. The run does not fit: {} parameters take {:.2f} GB as fp32 weights, gradients and AdamW's two moments "
        "(per rank; ZeRO-1 splits the moments), plus the activations of {}×{} tokens. Lower train.batch_size, set "
        "train.recompute: true, or use more ranks with optim.zero: 1", e.what(), layout.parameter_count(),
        16.0 * layout.total / 1e9, cfg.train.batch_size, cfg.model.block_size));
  }
  return trainer->run(resume);
}

}  // namespace

std::string format_duration(double seconds) {
  const int64_t s = (int64_t)std::llround(std::max(0.0, seconds));
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
  if (s < 86400) return fmt::format("{}h{:02}m", s / 3600, s % 3600 / 60);
  return fmt::format("{}d{:02}h", s / 86400, s % 86400 / 3600);
}

TrainResult train(const Config& cfg, const std::string& resume, Communicator* comm, const Benchmark& benchmark) {
  std::unique_ptr<Communicator> local;
  if (!comm) {
    local = make_local_communicator();
    comm = local.get();
  }
  // (train.device: cpu asks nothing of CUDA, so even a broken driver cannot stop a CPU run.)
  const int gpus = cfg.train.device == DeviceChoice::cpu ? 0 : cuda_device_count(), D = cfg.model.head_dim;
  const bool gpu_attention = D == 32 || D == 64 || D == 128;
  if (cfg.train.device == DeviceChoice::cuda && !gpu_attention)
    throw std::invalid_argument(fmt::format("{}: model.head_dim: the CUDA backend supports 32, 64 and 128, got {}; "
                                            "use one of those or train.device: cpu", cfg.path, D));
  if (cfg.train.device == DeviceChoice::auto_ && gpus > 0 && !gpu_attention && comm->rank() == 0)
    fmt::print("device: the CUDA backend supports head_dim 32, 64 and 128, not {}: running on the CPU\n", D);
  const bool cuda = cfg.train.device == DeviceChoice::cuda ||
                    (cfg.train.device == DeviceChoice::auto_ && gpus > 0 && gpu_attention);
  if (!cuda) return run<T6<float>>(cfg, resume, benchmark, comm, comm, Context{});
#ifdef T6_WITH_CUDA
  if (gpus == 0)
    throw std::runtime_error("train.device is cuda, but no GPU is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)");
  // Local rank r takes GPU r; a process that sees a single GPU (a scheduler bound one GPU to
  // each task, e.g. Slurm's --gpus-per-task=1) takes that one.
  const int local_rank = comm->local_rank();
  if (gpus > 1 && local_rank >= gpus)
    throw std::runtime_error(fmt::format("local rank {} has no GPU of its own: this machine shows {} GPU(s); start at "
                                         "most that many processes per machine", local_rank, gpus));
  const Context ctx = make_cuda_context(gpus == 1 ? 0 : local_rank);
  set_deterministic(ctx, cfg.train.deterministic);
  std::unique_ptr<Communicator> nccl;
  if (comm->size() > 1) nccl = make_nccl_communicator(*comm, ctx);
  return run<T6<bf16, float>>(cfg, resume, benchmark, comm, nccl ? nccl.get() : comm, ctx);
#else
  throw std::runtime_error("train.device is cuda, but this build has no CUDA backend (nvcc was not found when it was "
                           "configured); rebuild with the CUDA toolkit installed, or set train.device: cpu");
#endif
}

}  // namespace t6
