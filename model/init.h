#pragma once
#include <cstdint>
#include <vector>

#include "model/config.h"
#include "model/layout.h"

namespace t6 {

// The reference's initial distributions (docs/model.md, "Initialization"), drawn from `seed`
// in layout order, into a host vector of layout.total elements (the padding entries zero).
std::vector<float> init_params(const ModelConfig& cfg, const ParamLayout& layout, uint64_t seed);

}  // namespace t6
