// Weights interop in the safetensors format with the reference's tensor names and shapes.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "model/layout.h"

namespace t6 {

struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;  // converted to float from F32, F64, BF16 or F16
};

// Every tensor of a safetensors file. Throws std::runtime_error naming the file on bad input.
std::map<std::string, HostTensor> read_safetensors(const std::string& path);

// The file's __metadata__ (string to string); empty when it has none.
std::map<std::string, std::string> read_safetensors_metadata(const std::string& path);

// Writes the flat buffer as one F32 tensor per parameter tensor of the layout (its padding
// entries are left out), plus optional metadata, to a temporary name first, so an interrupted
// write never leaves a file that looks complete.
void save_weights(const std::string& path, const ParamLayout& layout, const std::vector<float>& flat,
                  const std::map<std::string, std::string>& metadata = {});

// Reads weights into a flat buffer in layout order (the padding zero). `transformer.wte.weight` and/or
// `lm_head.weight` may carry the tied matrix (if both, they must be equal). Missing,
// unexpected or mis-shaped tensors raise one error that lists every offending name.
std::vector<float> load_weights(const std::string& path, const ParamLayout& layout);

}  // namespace t6
