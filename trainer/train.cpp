#include "trainer/train.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "data/loader.h"
#include "data/tokenizer.h"
#include "model/init.h"
#include "model/safetensors.h"
#include "model/t6.h"
#include "optim/adamw.h"
#include "trainer/checkpoint.h"
#include "trainer/sample.h"

namespace t6 {

namespace fs = std::filesystem;

namespace {

// SIGINT/SIGTERM ask the loop to stop after the current step; a second one stops at once.
std::atomic<int> stop_signal{0};

void on_stop_signal(int sig) {
  if (stop_signal.exchange(sig) != 0) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  }
}

struct StopSignals {
  struct sigaction old_int {}, old_term {};
  StopSignals() {
    stop_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
  }
  ~StopSignals() {
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
  }
};

void write_text_file(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp);
    out << text;
    if (!out.flush()) throw std::runtime_error(fmt::format("{}: write failed", tmp.string()));
  }
  fs::rename(tmp, path);
}

// Mean loss over the first eval_iters windows of the validation data (all of them if fewer):
// the same tokens at every evaluation, so the numbers are comparable along a run.
double evaluate(T6<float>& model, DataLoader& val, int eval_iters) {
  val.reset();
  const size_t n = (size_t)model.batch() * model.seq();
  std::vector<int32_t> inputs(n), targets(n);
  const int iters = (int)std::min<uint64_t>(eval_iters, val.windows_per_epoch());
  double total = 0;
  for (int i = 0; i < iters; i++) {
    val.next(inputs.data(), targets.data());
    total += model.forward(inputs.data(), targets.data());
  }
  return total / iters;
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
    candidates = {fs::path(resume).filename() == "state.h5" ? fs::path(resume).parent_path().string() : resume};
  }
  for (const std::string& dir : candidates) {
    Config saved;
    try {
      saved = load_config_text(checkpoint_config(dir), dir + "/state.h5");
    } catch (const std::exception& e) {
      if (resume != "auto") throw;
      fmt::print(stderr, "resume: warning: skipping {}: {}\n", dir, e.what());
      continue;
    }
    std::vector<std::string> model_changes, other_changes;
    for (const std::string& d : config_differences(saved, cfg)) {
      const bool irrelevant = d.rfind("model.init_from:", 0) == 0 || d.rfind("model.seed:", 0) == 0;
      if (d.rfind("model.", 0) == 0 && !irrelevant) model_changes.push_back(d);
      else if (!irrelevant) other_changes.push_back(d);
    }
    if (!model_changes.empty())
      throw std::invalid_argument(fmt::format(
          "{} holds another model than the config describes (checkpoint → config):\n  {}\n"
          "Resume with the checkpoint's model settings, or start a new out_dir.",
          dir, fmt::join(model_changes, "\n  ")));
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
  }
  write_text_file(path, kept);
}

}  // namespace

TrainResult train(const Config& cfg, const std::string& resume) {
  const ModelConfig& mc = cfg.model;
  const TrainConfig& tc = cfg.train;
  const int B = tc.batch_size, T = mc.block_size, accum = tc.gradient_accumulation_steps;
  const size_t tokens_per_step = (size_t)B * T * accum;

  // Data and weights are checked before anything is written, so a bad run leaves no outputs.
  DataLoader train_data(expand_shards(cfg.data.train, "data.train"), B, T, cfg.data.shuffle, cfg.data.seed,
                        mc.vocab_size, "data.train", 0, 1, /*prefetch=*/4);
  std::unique_ptr<DataLoader> val_data;
  if (!cfg.data.val.empty())
    val_data = std::make_unique<DataLoader>(expand_shards(cfg.data.val, "data.val"), B, T, false, 0, mc.vocab_size,
                                            "data.val");
  const Context ctx;
  T6<float> model(mc, ctx, B, T);
  AdamW<float> optimizer(ctx, model.layout.total, cfg.optim.adamw);
  int64_t start = 0;
  TrainingState resumed;
  std::string resumed_from;
  if (!resume.empty() && find_resume_state(cfg, resume, model.layout, resumed, resumed_from)) {
    model.params_from_host(resumed.params);
    optimizer.m.from_host(resumed.adam_m.data(), resumed.adam_m.size());
    optimizer.v.from_host(resumed.adam_v.data(), resumed.adam_v.size());
    optimizer.steps = resumed.adam_steps;
    train_data.restore(resumed.loader);
    start = resumed.iter;
  } else if (!mc.init_from.empty()) {
    model.params_from_host(load_weights(mc.init_from, model.layout));
  } else {
    model.params_from_host(init_params(mc, model.layout, mc.seed));
  }

  fmt::print("config {}:\n{}", cfg.path, cfg.to_yaml());
  fs::create_directories(tc.out_dir);
  write_text_file(fs::path(tc.out_dir) / "config.yaml", cfg.to_yaml());
  fmt::print("model: T6 {}, {} layers, n_embd {}, {} heads ({} KV) × {}, {} parameters; {}\n",
             attention_name(mc.attention), mc.n_layer, mc.n_embd, mc.n_head, mc.kv_heads(), mc.head_dim,
             model.layout.total,
             !resumed_from.empty() ? fmt::format("resumed from {} at step {}", resumed_from, start)
             : mc.init_from.empty() ? fmt::format("init from seed {}", mc.seed)
                                    : "init from " + mc.init_from);
  fmt::print("data: {} tokens for training ({} windows of {}×{}+1, tokenizer '{}', shuffle {}){}\n",
             train_data.total_tokens(), train_data.windows_per_epoch(), B, T, train_data.meta().tokenizer,
             cfg.data.shuffle,
             val_data ? fmt::format(", {} tokens for validation", val_data->total_tokens()) : ", no validation data");
  fmt::print("batch: {} sequences × {} tokens × {} accumulation = {} tokens per step, steps {} to {}\n", B, T, accum,
             tokens_per_step, start, tc.max_iters);

  const fs::path metrics_path = fs::path(tc.out_dir) / "metrics.jsonl";
  if (start > 0) trim_metrics(metrics_path, start);
  std::ofstream metrics(metrics_path, start > 0 ? std::ios::app : std::ios::trunc);
  if (!metrics) throw std::runtime_error(fmt::format("{}: cannot write", metrics_path.string()));
  auto record = [&](const nlohmann::json& j) { metrics << j.dump() << "\n" << std::flush; };

  TrainResult result;
  auto checkpoint = [&](int64_t iter) {
    TrainingState s;
    s.iter = iter;
    s.params = model.params_to_host();
    s.adam_m.resize(model.layout.total);
    s.adam_v.resize(model.layout.total);
    optimizer.m.to_host(s.adam_m.data(), s.adam_m.size());
    optimizer.v.to_host(s.adam_v.data(), s.adam_v.size());
    s.adam_steps = optimizer.steps;
    s.loader = train_data.state();
    s.world_size = 1;
    s.config_yaml = cfg.to_yaml();
    result.last_checkpoint = save_checkpoint(tc.out_dir, model.layout, s, cfg.checkpoint.keep);
    fmt::print("saved checkpoint {}\n", result.last_checkpoint);
  };

  StopSignals signals;
  std::vector<int32_t> inputs((size_t)B * T), targets((size_t)B * T);
  int64_t epoch = train_data.epoch();
  for (int64_t step = start; step < tc.max_iters; step++) {
    const auto step_start = std::chrono::steady_clock::now();
    model.zero_grads();
    double loss = 0;
    for (int micro = 0; micro < accum; micro++) {
      train_data.next(inputs.data(), targets.data());
      loss += model.forward(inputs.data(), targets.data(), 1.0 / accum);
      model.backward();
    }
    loss /= accum;
    if (!std::isfinite(loss))
      throw std::runtime_error(fmt::format(
          "step {}: the training loss is {}; the run diverged (try a lower optim.learning_rate or longer warmup)",
          step, loss));
    const double grad_norm = clip_grad_norm(ctx, model.grads.data(), model.layout.total, cfg.optim.grad_clip);
    const double lr = cfg.optim.schedule.at(step);
    optimizer.step(model.params.data(), model.grads.data(), lr);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count();

    StepRecord r{step, loss, lr, grad_norm, tokens_per_step / seconds, seconds * 1e3};
    result.steps.push_back(r);
    record({{"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", grad_norm},
            {"tokens_per_sec", r.tokens_per_sec}, {"ms", r.ms}});
    if (step % tc.log_interval == 0 || step + 1 == tc.max_iters)
      fmt::print("step {:>6}/{} | loss {:.4f} | lr {:.3e} | grad norm {:.4f} | {:.0f} tok/s | {:.1f} ms\n", step,
                 tc.max_iters, loss, lr, grad_norm, r.tokens_per_sec, r.ms);
    if (train_data.epoch() != epoch) {
      epoch = train_data.epoch();
      fmt::print("data: epoch {} begins (the training data wrapped around)\n", epoch);
    }
    const bool last = step + 1 == tc.max_iters;
    if (val_data && ((tc.eval_interval > 0 && (step + 1) % tc.eval_interval == 0) || last)) {
      const double val = evaluate(model, *val_data, tc.eval_iters);
      result.final_val_loss = val;
      record({{"step", step}, {"val_loss", val}});
      fmt::print("step {:>6}/{} | val loss {:.4f}\n", step, tc.max_iters, val);
    }
    const bool stopping = stop_signal != 0;
    if (last || stopping || (cfg.checkpoint.interval > 0 && (step + 1) % cfg.checkpoint.interval == 0))
      checkpoint(step + 1);
    if (stopping && !last) {
      fmt::print("stopped by {} after step {}, with checkpoint {} saved; to continue, run the same command "
                 "with --resume auto\n", stop_signal == SIGINT ? "SIGINT" : "SIGTERM", step, result.last_checkpoint);
      result.interrupted = true;
      return result;
    }
  }
  if (start >= tc.max_iters) fmt::print("nothing to do: the checkpoint is at step {} of max_iters {}\n", start, tc.max_iters);

  const std::vector<float> final_params = model.params_to_host();
  const fs::path weights = fs::path(tc.out_dir) / "model.safetensors";
  save_weights(weights.string(), model.layout, final_params, {{"format", "pt"}, {"t6_config", cfg.to_yaml()}});
  fmt::print("saved {}\n", weights.string());

  if (cfg.sample.max_new_tokens > 0) {
    const auto tokenizer = make_tokenizer(train_data.meta().tokenizer);
    fmt::print("sample (temperature {}, top-k {}):\n{}{}\n", cfg.sample.temperature, cfg.sample.top_k,
               cfg.sample.prompt, sample_text(cfg, final_params, *tokenizer));
  }
  return result;
}

}  // namespace t6
