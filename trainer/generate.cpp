#include "trainer/generate.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <new>
#include <stdexcept>

#include "model/random.h"
#include "model/t6.h"

namespace t6 {

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void check(const ModelConfig& cfg, const std::vector<int32_t>& prompt, const GenerateOptions& o, int context) {
  if (prompt.empty()) throw std::invalid_argument("the prompt is empty: give at least one token");
  for (int32_t t : prompt)
    if (t < 0 || t >= cfg.vocab_size)
      throw std::invalid_argument(fmt::format("prompt token {} is outside the model's vocabulary of {}", t, cfg.vocab_size));
  if ((int)prompt.size() > cfg.block_size)
    throw std::invalid_argument(fmt::format("the prompt has {} tokens; the model reads at most model.block_size = {} "
                                            "at once: shorten it", prompt.size(), cfg.block_size));
  if ((int)prompt.size() > context)
    throw std::invalid_argument(
        fmt::format("the prompt has {} tokens, more than the context of {} positions", prompt.size(), context));
  if (!(o.temperature >= 0) || !std::isfinite(o.temperature))
    throw std::invalid_argument(fmt::format("temperature {}: expected 0 (greedy) or more", o.temperature));
  if (o.top_k < 0) throw std::invalid_argument(fmt::format("top-k {}: expected 0 (all tokens) or more", o.top_k));
  if (!(o.top_p > 0 && o.top_p <= 1)) throw std::invalid_argument(fmt::format("top-p {}: expected (0, 1]", o.top_p));
  if (o.batch < 1) throw std::invalid_argument(fmt::format("batch {}: expected at least 1", o.batch));
  if (o.max_new_tokens < 0)
    throw std::invalid_argument(fmt::format("max new tokens {}: expected 0 or more", o.max_new_tokens));
}

}  // namespace

int32_t sample_token(const double* logits, int n, const GenerateOptions& o, std::mt19937_64& rng) {
  if (o.temperature == 0) return (int32_t)(std::max_element(logits, logits + n) - logits);
  const double maxv = *std::max_element(logits, logits + n);
  std::vector<std::pair<double, int>> cand;
  cand.reserve(n);
  for (int v = 0; v < n; v++) cand.push_back({(logits[v] - maxv) / o.temperature, v});
  if (o.top_k > 0 && o.top_k < (int)cand.size()) {
    std::partial_sort(cand.begin(), cand.begin() + o.top_k, cand.end(), std::greater<>());
    cand.resize(o.top_k);
  }
  double total = 0;
  for (auto& c : cand) total += (c.first = std::exp(c.first));
  if (o.top_p < 1) {  // the most likely first, down to the smallest set that reaches p
    std::sort(cand.begin(), cand.end(), std::greater<>());
    double kept = 0;
    size_t keep = 0;
    while (keep < cand.size() && kept < o.top_p * total) kept += cand[keep++].first;
    cand.resize(std::max<size_t>(keep, 1));
    total = kept > 0 ? kept : cand[0].first;
  }
  double r = uniform01(rng) * total;
  for (auto& c : cand)
    if ((r -= c.first) <= 0) return c.second;
  return cand.back().second;
}

namespace {

// The cache's bytes against the memory left (the GPU's free memory, or the host's available
// memory), before anything is allocated.
void check_cache_fits(const Context& ctx, int batch, int context, size_t bytes) {
  size_t free = 0;
  if (ctx.device == Device::cuda) {
    const GpuMemory g = gpu_memory(ctx);
    free = g.total > g.used ? g.total - g.used : 0;
  } else {
    free = host_memory_available();
    if (free == 0) return;  // unknown here: the allocation will tell
  }
  if (bytes > free)
    throw std::invalid_argument(fmt::format("the key/value cache for {} sequence(s) of {} positions ({:.2f} GB) does "
                                            "not fit in memory: {:.2f} GB {} available; lower the batch or the "
                                            "context", batch, context, bytes / 1e9, free / 1e9,
                                            ctx.device == Device::cuda ? "of the GPU's are" : "of the host's are"));
}

template <class A, class W>
std::vector<std::vector<int32_t>> run(const Context& ctx, const ModelConfig& cfg, const std::vector<float>& params,
                                      const std::vector<int32_t>& prompt, const GenerateOptions& o,
                                      const std::function<void(int, int32_t)>& on_token, GenerateStats* stats) {
  const int context = o.context > 0 ? o.context : cfg.block_size, P = (int)prompt.size(), V = cfg.vocab_size;
  const int known = o.known_vocab > 0 ? std::min(o.known_vocab, V) : V;
  GenerateStats st;
  st.prompt_tokens = P;
  if (ctx.device == Device::cuda) st.gpu = gpu_name(ctx);

  // Prefill: the prompt through the normal forward pass (batch 1), into every sequence's cache.
  T6<A, W> model(cfg, ctx, 1, P);
  model.params_from_host(params);
  ctx.synchronize();
  auto start = std::chrono::steady_clock::now();
  model.forward(prompt.data(), nullptr);
  const QkvLayout L = qkv_layout(cfg, model.layout);
  const size_t cache_bytes = KvCache<A>::bytes_for(L, cfg.n_layer, o.batch, context);
  check_cache_fits(ctx, o.batch, context, cache_bytes);
  std::unique_ptr<KvCache<A>> cache;
  try {
    cache = std::make_unique<KvCache<A>>(model.make_cache(o.batch, context));
  } catch (const OutOfMemory&) {
    throw std::invalid_argument(fmt::format("the key/value cache for {} sequence(s) of {} positions ({:.2f} GB) does "
                                            "not fit in memory: lower the batch or the context",
                                            o.batch, context, cache_bytes / 1e9));
  }
  model.store_prompt(*cache);
  st.cache_bytes = cache->bytes();
  st.cache_numbers_per_token = cache->numbers_per_position();
  std::vector<double> logits = model.logits_at(P - 1), all((size_t)o.batch * V);
  for (int b = 0; b < o.batch; b++) std::copy(logits.begin(), logits.end(), all.begin() + (size_t)b * V);
  const double* rows = all.data();  // batch × V logits of the tokens to sample: `all`, or decode's buffer
  st.prefill_seconds = seconds_since(start);

  std::vector<std::mt19937_64> rngs;
  for (int b = 0; b < o.batch; b++) rngs.emplace_back(o.seed + b);
  std::vector<std::vector<int32_t>> seqs(o.batch, prompt), out(o.batch);
  std::vector<int32_t> next(o.batch);
  std::unique_ptr<T6<A, W>> window_model;  // for tokens past the context, made when needed
  std::vector<int32_t> window;
  for (int i = 0; i < o.max_new_tokens; i++) {
    // Each sequence draws from its own generator, so the rows can be sampled side by side.
#pragma omp parallel for if (o.batch > 1 && o.temperature != 0)
    for (int b = 0; b < o.batch; b++) next[b] = sample_token(rows + (size_t)b * V, known, o, rngs[b]);
    for (int b = 0; b < o.batch; b++) {
      seqs[b].push_back(next[b]);
      out[b].push_back(next[b]);
      if (on_token) on_token(b, next[b]);
    }
    st.new_tokens = i + 1;
    if (i + 1 == o.max_new_tokens) break;
    start = std::chrono::steady_clock::now();
    if (cache->len < context) {  // the new tokens' logits from the cache
      rows = model.decode(next.data(), *cache).data();
      st.decode_passes++;
      st.decode_seconds += seconds_since(start);
      continue;
    }
    // Past the context: the last block_size tokens of each sequence, recomputed for each token
    // (positions after them are padding, which causal attention keeps out of the one read).
    const int T = cfg.block_size;
    if (!window_model) {
      window_model = std::make_unique<T6<A, W>>(cfg, ctx, 1, T);
      window_model->params_from_host(params);
      window.resize(T);
    }
    for (int b = 0; b < o.batch; b++) {
      const int len = std::min<int>((int)seqs[b].size(), T);
      std::fill(window.begin(), window.end(), 0);
      std::copy(seqs[b].end() - len, seqs[b].end(), window.begin());
      window_model->forward(window.data(), nullptr);
      logits = window_model->logits_at(len - 1);
      std::copy(logits.begin(), logits.end(), all.begin() + (size_t)b * V);
    }
    rows = all.data();
    st.window_passes++;
    st.window_seconds += seconds_since(start);
  }
  ctx.synchronize();
  if (stats) *stats = st;
  return out;
}

}  // namespace

std::vector<std::vector<int32_t>> generate(const Context& ctx, const ModelConfig& cfg, const std::vector<float>& params,
                                           const std::vector<int32_t>& prompt, const GenerateOptions& o,
                                           const std::function<void(int, int32_t)>& on_token, GenerateStats* stats) {
  check(cfg, prompt, o, o.context > 0 ? o.context : cfg.block_size);
  if (ctx.device == Device::cpu) return run<float, float>(ctx, cfg, params, prompt, o, on_token, stats);
#ifdef T6_WITH_CUDA
  return run<bf16, float>(ctx, cfg, params, prompt, o, on_token, stats);
#else
  throw std::invalid_argument("generation on the GPU: this build has no CUDA backend");
#endif
}

std::vector<std::vector<int32_t>> generate(const ModelConfig& cfg, const std::vector<float>& params,
                                           const std::vector<int32_t>& prompt, const GenerateOptions& o,
                                           const std::function<void(int, int32_t)>& on_token, GenerateStats* stats) {
  const Context ctx = o.device == Device::cuda ? make_cuda_context(0) : Context{};
  return generate(ctx, cfg, params, prompt, o, on_token, stats);
}

}  // namespace t6
