#include "trainer/sample.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "model/t6.h"

namespace t6 {

std::string sample_text(const Config& cfg, const std::vector<float>& params, const Tokenizer& tokenizer) {
  const Context ctx;
  const int T = cfg.model.block_size;
  T6<float> model(cfg.model, ctx, 1, T);
  model.params_from_host(params);

  std::vector<uint32_t> prompt;
  tokenizer.encode(cfg.sample.prompt, prompt);
  std::vector<int32_t> seq(prompt.begin(), prompt.end());
  if (seq.empty()) seq.push_back(tokenizer.eot_token());  // an empty prompt starts a new document
  std::vector<uint32_t> generated;
  std::mt19937_64 rng(cfg.sample.seed);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::vector<int32_t> window(T, 0);
  for (int i = 0; i < cfg.sample.max_new_tokens; i++) {
    // The model sees the last T tokens; positions after them are padding that causal
    // attention keeps from influencing the position we read.
    const int len = std::min<int>((int)seq.size(), T);
    std::fill(window.begin(), window.end(), 0);
    std::copy(seq.end() - len, seq.end(), window.begin());
    model.forward(window.data(), nullptr);
    std::vector<double> logits = model.logits_at(len - 1);

    // Only ids the tokenizer knows: the model's vocabulary is padded (50304 for GPT-2's 50257).
    const int known = std::min<int>((int)logits.size(), tokenizer.vocab_size());
    const double maxv = *std::max_element(logits.begin(), logits.begin() + known);
    std::vector<std::pair<double, int>> cand;
    for (int v = 0; v < known; v++) cand.push_back({(logits[v] - maxv) / cfg.sample.temperature, v});
    if (cfg.sample.top_k > 0 && cfg.sample.top_k < (int)cand.size()) {
      std::partial_sort(cand.begin(), cand.begin() + cfg.sample.top_k, cand.end(), std::greater<>());
      cand.resize(cfg.sample.top_k);
    }
    double total = 0;
    for (auto& c : cand) total += (c.first = std::exp(c.first));
    double r = uniform(rng) * total;
    int next = cand.back().second;
    for (auto& c : cand) {
      if ((r -= c.first) <= 0) { next = c.second; break; }
    }
    seq.push_back(next);
    generated.push_back((uint32_t)next);
  }
  return tokenizer.decode(generated);
}

}  // namespace t6
