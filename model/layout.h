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
  // Rows that the model's rounded-up matrix products read past a stacked weight (see
  // make_layout): they live in the flat buffers but are no parameter of the model. Always zero
  // (so is their gradient); not counted, initialized or exported.
  bool padding = false;
};

struct ParamLayout {
  std::vector<ParamInfo> params;  // in offset order, padding entries included
  size_t total = 0;               // elements of each flat buffer, padding included

  // The model's parameters: total without the padding.
  size_t parameter_count() const;

  // By name in O(1) (an index made on first use and remade when params has grown; names are not
  // edited in place), so models of thousands of layers build in linear time.
  const ParamInfo* find(const std::string& name) const;  // nullptr if absent
  const ParamInfo& at(const std::string& name) const;    // throws if absent

 private:
  mutable std::unordered_map<std::string, size_t> index_;
  mutable size_t indexed_ = 0;
};

// The rows of a stacked weight matrix are padded to a multiple of 8, so that the product's
// output rows stay 16-byte aligned (and fast) on the GPU.
inline int round8(int n) { return (n + 7) / 8 * 8; }

// The layout in the reference's order, with a padding entry after each layer's stacked q/k/v
// projections and after c_fc1‖c_fc2 wherever their row count is not a multiple of 8.
ParamLayout make_layout(const ModelConfig& cfg);

// The padding entries' names: "transformer.h.{layer}.attn.qkv_padding", "….mlp.fc_padding".
extern const char* const kQkvPadding;
extern const char* const kFcPadding;

// Model FLOPs per token of training, the reference's formula (docs/model.md): 6·N + 12·L·H·D·T.
double flops_per_token(const ModelConfig& cfg);

// "transformer.h.{layer}.{suffix}".
std::string layer_param(int layer, const char* suffix);

}  // namespace t6
