// Helpers shared by the test suites.
#pragma once
#include <cmath>
#include <unistd.h>

#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "model/safetensors.h"

namespace t6::test {

inline std::string source_path(const std::string& rel) { return std::string(T6_SOURCE_DIR) + "/" + rel; }

// A fresh empty directory under the system temp dir, unique per test.
inline std::string temp_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("t6_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

// Writes text to path (bytes as they are); returns the path.
inline std::string write_file(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

// The message of the exception f throws, or "" if it throws none.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// --set overrides that shrink configs/demo.yaml to a model that trains in milliseconds a step.
inline std::vector<std::string> tiny_overrides(const std::string& out_dir, std::vector<std::string> extra = {}) {
  std::vector<std::string> o = {"train.out_dir=" + out_dir, "model.n_layer=2", "model.n_embd=64", "model.n_head=4",
                                "model.head_dim=16", "model.block_size=64", "train.batch_size=8",
                                "train.max_iters=60", "train.eval_interval=30", "train.eval_iters=8",
                                "optim.warmup_iters=10", "train.log_interval=20", "sample.max_new_tokens=0"};
  o.insert(o.end(), extra.begin(), extra.end());
  return o;
}

// Every tensor of a safetensors file, concatenated in name order.
inline std::vector<float> flat_weights(const std::string& path) {
  std::vector<float> all;
  for (const auto& [name, t] : read_safetensors(path)) all.insert(all.end(), t.data.begin(), t.data.end());
  return all;
}

// ‖a − b‖ / ‖b‖ (‖a − b‖ when b is zero).
template <class A, class B>
double rel_error(const A& a, const B& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < b.size(); i++) {
    num += ((double)a[i] - (double)b[i]) * ((double)a[i] - (double)b[i]);
    den += (double)b[i] * (double)b[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// The layout without its padding entries, the other tensors packed back to back: the layout
// before the padding entries existed, as checkpoints of then and safetensors files have it.
inline ParamLayout without_padding(const ParamLayout& layout) {
  ParamLayout packed;
  for (const ParamInfo& p : layout.params) {
    if (p.padding) continue;
    packed.params.push_back({p.name, p.shape, packed.total, p.size});
    packed.total += p.size;
  }
  return packed;
}

// A flat array of `layout` in without_padding(layout)'s order (its padding dropped).
template <class T>
std::vector<T> without_padding(const ParamLayout& layout, const std::vector<T>& flat) {
  std::vector<T> packed;
  for (const ParamInfo& p : layout.params)
    if (!p.padding) packed.insert(packed.end(), flat.begin() + p.offset, flat.begin() + p.offset + p.size);
  return packed;
}

}  // namespace t6::test
