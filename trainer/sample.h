#pragma once
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "trainer/config.h"

namespace t6 {

// Continues cfg.sample.prompt by cfg.sample.max_new_tokens tokens with temperature and top-k
// sampling, from the given weights (trainer/generate.h, on the CPU); text in and out through
// the data's tokenizer.
std::string sample_text(const Config& cfg, const std::vector<float>& params, const Tokenizer& tokenizer);

}  // namespace t6
