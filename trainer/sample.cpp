#include "trainer/sample.h"

#include "trainer/generate.h"

namespace t6 {

std::string sample_text(const Config& cfg, const std::vector<float>& params, const Tokenizer& tokenizer) {
  std::vector<int32_t> prompt = token_ids(tokenizer, cfg.sample.prompt);
  if (prompt.empty()) prompt.push_back(tokenizer.eot_token());  // an empty prompt starts a new document
  if ((int)prompt.size() > cfg.model.block_size)  // the model reads at most block_size tokens: their end
    prompt.erase(prompt.begin(), prompt.end() - cfg.model.block_size);
  GenerateOptions o;
  o.max_new_tokens = cfg.sample.max_new_tokens;
  o.temperature = cfg.sample.temperature;
  o.top_k = cfg.sample.top_k;
  o.seed = cfg.sample.seed;
  o.known_vocab = tokenizer.vocab_size();  // the model's vocabulary is padded (50304 for GPT-2's 50257)
  const std::vector<int32_t> out = generate(cfg.model, params, prompt, o)[0];
  return tokenizer.decode(std::vector<uint32_t>(out.begin(), out.end()));
}

}  // namespace t6
