// Generation from trained weights: the prompt through the model once (prefill), then new
// tokens sampled one at a time from the key/value cache (model/kv_cache.h); what t6-generate
// and the trainer's end-of-run sample run, on the CPU (fp32) or the GPU (bf16).
#pragma once
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels/context.h"
#include "model/config.h"

namespace t6 {

struct GenerateOptions {
  int max_new_tokens = 200;
  double temperature = 0.8;  // 0: greedy (the most likely token)
  int top_k = 0;             // keep the k most likely tokens; 0: all
  double top_p = 1.0;        // keep the fewest most likely tokens whose probability reaches p; 1: all
  uint64_t seed = 1337;      // sequence b draws from a generator seeded with seed + b
  int batch = 1;             // sequences generated together from the same prompt
  // Positions the cache holds per sequence (prompt + new tokens); 0: block_size. More than
  // block_size extends RoPE past the trained lengths. Past it, each further token is computed
  // from the last block_size tokens without the cache (a sliding window, as before the cache).
  int context = 0;
  int known_vocab = 0;  // sample only ids below this (the tokenizer's; the model's vocabulary is padded); 0: all
  Device device = Device::cpu;  // cuda: GPU 0, bf16 weights and cache (the training kernels for the prompt)
};

struct GenerateStats {
  int prompt_tokens = 0, new_tokens = 0;  // per sequence
  // The first new token comes from the prefill's logits; each later one from a decode pass over
  // the cache, or, past the context, from the sliding window's recomputation.
  int decode_passes = 0, window_passes = 0;
  double prefill_seconds = 0, decode_seconds = 0, window_seconds = 0;
  size_t cache_bytes = 0;
  int cache_numbers_per_token = 0;  // keys and values, per position and layer
  std::string gpu;  // the GPU's name when it ran there
};

// The new tokens of each sequence. on_token(b, token), if given, sees each token as it is chosen
// (sequence by sequence within a step). Errors (an empty prompt, one longer than block_size or
// the context, a token outside the vocabulary, bad options) are std::invalid_argument.
std::vector<std::vector<int32_t>> generate(const ModelConfig& cfg, const std::vector<float>& params,
                                           const std::vector<int32_t>& prompt, const GenerateOptions& options,
                                           const std::function<void(int, int32_t)>& on_token = {},
                                           GenerateStats* stats = nullptr);

// The same on a given context, whose device decides (fp32 on the CPU, bf16 on a GPU;
// options.device is not read): a benchmark warms a context up once and reuses it.
std::vector<std::vector<int32_t>> generate(const Context& ctx, const ModelConfig& cfg, const std::vector<float>& params,
                                           const std::vector<int32_t>& prompt, const GenerateOptions& options,
                                           const std::function<void(int, int32_t)>& on_token = {},
                                           GenerateStats* stats = nullptr);

// The next token from logits[0 … n): greedy when temperature is 0, else a draw from
// softmax(logits / temperature) restricted by top_k and top_p.
int32_t sample_token(const double* logits, int n, const GenerateOptions& options, std::mt19937_64& rng);

}  // namespace t6
