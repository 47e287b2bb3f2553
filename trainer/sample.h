#pragma once
#include <string>
#include <vector>

#include "trainer/config.h"

namespace t6 {

// Continues cfg.sample.prompt by cfg.sample.max_new_tokens tokens with temperature and top-k
// sampling, from the given weights. Byte-level vocabularies only: the text is the bytes.
std::string sample_text(const Config& cfg, const std::vector<float>& params);

}  // namespace t6
