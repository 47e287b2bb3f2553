#include "trainer/train.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "data/loader.h"
#include "model/init.h"
#include "model/safetensors.h"
#include "model/t6.h"
#include "optim/adamw.h"
#include "trainer/sample.h"

namespace t6 {

namespace fs = std::filesystem;

static void write_text_file(const fs::path& path, const std::string& text) {
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
static double evaluate(T6<float>& model, DataLoader& val, int eval_iters) {
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

TrainResult train(const Config& cfg) {
  const ModelConfig& mc = cfg.model;
  const TrainConfig& tc = cfg.train;
  const int B = tc.batch_size, T = mc.block_size, accum = tc.gradient_accumulation_steps;
  const size_t tokens_per_step = (size_t)B * T * accum;

  DataLoader train_data(expand_shards(cfg.data.train, "data.train"), B, T, cfg.data.shuffle, cfg.data.seed,
                        mc.vocab_size, "data.train", 0, 1, /*prefetch=*/4);
  std::unique_ptr<DataLoader> val_data;
  if (!cfg.data.val.empty())
    val_data = std::make_unique<DataLoader>(expand_shards(cfg.data.val, "data.val"), B, T, false, 0, mc.vocab_size,
                                            "data.val");

  // Data and weights are checked before anything is written, so a bad run leaves no outputs.
  const Context ctx;
  T6<float> model(mc, ctx, B, T);
  if (!mc.init_from.empty()) {
    model.params_from_host(load_weights(mc.init_from, model.layout));
  } else {
    model.params_from_host(init_params(mc, model.layout, mc.seed));
  }
  AdamW<float> optimizer(ctx, model.layout.total, cfg.optim.adamw);

  fmt::print("config {}:\n{}", cfg.path, cfg.to_yaml());
  fs::create_directories(tc.out_dir);
  write_text_file(fs::path(tc.out_dir) / "config.yaml", cfg.to_yaml());

  fmt::print("model: T6 {}, {} layers, n_embd {}, {} heads ({} KV) × {}, {} parameters; init {}\n",
             attention_name(mc.attention), mc.n_layer, mc.n_embd, mc.n_head, mc.kv_heads(), mc.head_dim,
             model.layout.total, mc.init_from.empty() ? fmt::format("seed {}", mc.seed) : mc.init_from);
  fmt::print("data: {} tokens for training ({} windows of {}×{}+1, tokenizer '{}', shuffle {}){}\n",
             train_data.total_tokens(), train_data.windows_per_epoch(), B, T, train_data.meta().tokenizer,
             cfg.data.shuffle,
             val_data ? fmt::format(", {} tokens for validation", val_data->total_tokens()) : ", no validation data");
  fmt::print("batch: {} sequences × {} tokens × {} accumulation = {} tokens per step, {} steps\n", B, T, accum,
             tokens_per_step, tc.max_iters);

  std::ofstream metrics(fs::path(tc.out_dir) / "metrics.jsonl");
  if (!metrics) throw std::runtime_error(fmt::format("{}/metrics.jsonl: cannot write", tc.out_dir));
  auto record = [&](const nlohmann::json& j) { metrics << j.dump() << "\n" << std::flush; };

  TrainResult result;
  std::vector<int32_t> inputs((size_t)B * T), targets((size_t)B * T);
  int64_t epoch = train_data.epoch();
  for (int64_t step = 0; step < tc.max_iters; step++) {
    const auto start = std::chrono::steady_clock::now();
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
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

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
  }

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
