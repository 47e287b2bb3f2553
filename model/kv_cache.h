// Generation's key/value cache: per layer, the records kernels/ops.h's kv_cache_store writes
// (TPA's factors, or dense keys and values), for `batch` sequences of up to `context`
// positions, in the model's activation type. Filled by T6::store_prompt, extended by
// T6::decode.
#pragma once
#include <vector>

#include "kernels/context.h"
#include "kernels/ops.h"

namespace t6 {

template <class A>
struct KvCache {
  KvCache(const Context& ctx, const QkvLayout& L, int n_layer, int batch, int context)
      : batch(batch), context(context), k_record(kv_record(L, 1)), v_record(kv_record(L, 2)) {
    for (int l = 0; l < n_layer; l++) {
      k.emplace_back(ctx, (size_t)batch * context * k_record);
      v.emplace_back(ctx, (size_t)batch * context * v_record);
    }
  }
  static size_t bytes_for(const QkvLayout& L, int n_layer, int batch, int context) {
    return (size_t)n_layer * batch * context * (kv_record(L, 1) + kv_record(L, 2)) * sizeof(A);
  }
  size_t bytes() const { return (size_t)k.size() * batch * context * (k_record + v_record) * sizeof(A); }
  // Numbers stored per position and layer, keys and values together.
  int numbers_per_position() const { return k_record + v_record; }

  std::vector<Buffer<A>> k, v;
  int batch, context;
  int len = 0;  // positions filled, the same for every sequence
  int k_record, v_record;
};

}  // namespace t6
