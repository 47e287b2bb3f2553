// The flat parameter buffer's map: every tensor's reference name (docs/model.md), shape and
// offset. Gradients and optimizer moments use the same layout.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "model/config.h"

namespace t6 {

struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;  // PyTorch shape, row-major
  size_t offset = 0;           // in elements
  size_t size = 0;
};

struct ParamLayout {
  std::vector<ParamInfo> params;
  size_t total = 0;

  // By name in O(1) (an index made on first use and remade when params has grown; names are not
  // edited in place), so models of thousands of layers build in linear time.
  const ParamInfo* find(const std::string& name) const;  // nullptr if absent
  const ParamInfo& at(const std::string& name) const;    // throws if absent

 private:
  mutable std::unordered_map<std::string, size_t> index_;
  mutable size_t indexed_ = 0;
};

ParamLayout make_layout(const ModelConfig& cfg);

// Model FLOPs per token of training, the reference's formula (docs/model.md): 6·N + 12·L·H·D·T.
double flops_per_token(const ModelConfig& cfg);

// "transformer.h.{layer}.{suffix}".
std::string layer_param(int layer, const char* suffix);

}  // namespace t6
