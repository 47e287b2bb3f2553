// Causal attention for Hopper (sm_90a): the same function as attention.cu's mma.sync kernels,
// built from the chip's own parts. One warpgroup produces (a single thread issues TMA copies
// into a ring of shared-memory stages guarded by mbarriers), two consume (wgmma from shared
// memory, fp32 accumulators in registers, softmax in registers), and register reallocation
// moves the producer's registers to the consumers.
//
// attention_sm90_forward.cu and attention_sm90_backward.cu hold the two passes,
// attention_sm90.cuh what they share; here: whether a call can use them, and the tensor maps.
#include <fmt/format.h>

#include <stdexcept>

#include "kernels/cuda/attention_sm90.cuh"
#include "kernels/cuda/attention_sm90.h"

namespace t6::cuda {

namespace sm90 {
namespace {

using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                 const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                 CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

EncodeTiled encoder() {
  static const EncodeTiled fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult found{};
    CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &found));
    if (found != cudaDriverEntryPointSuccess || !p)
      throw std::runtime_error("the CUDA driver lacks cuTensorMapEncodeTiled (tensor maps need a 12.0+ driver)");
    return reinterpret_cast<EncodeTiled>(p);
  }();
  return fn;
}

}  // namespace

CUtensorMap tile_map(const bf* base, int B, int T, int heads, int D, int rows) {
  CUtensorMap map;
  const cuuint64_t dims[4] = {(cuuint64_t)D, (cuuint64_t)heads, (cuuint64_t)T, (cuuint64_t)B};
  const cuuint64_t strides[3] = {(cuuint64_t)D * 2, (cuuint64_t)heads * D * 2, (cuuint64_t)T * heads * D * 2};
  const cuuint32_t box[4] = {64, 1, (cuuint32_t)rows, 1}, unit[4] = {1, 1, 1, 1};
  const CUresult r = encoder()(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4, const_cast<bf*>(base), dims, strides, box,
                               unit, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                               CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    throw std::runtime_error(fmt::format("cuTensorMapEncodeTiled failed ({}) for a ({}, {}, {}, {}) tensor", (int)r, B,
                                         T, heads, D));
  return map;
}

}  // namespace sm90

bool attention_sm90_supports(const Context& ctx, const void* const* tensors, int n, int D) {
  if (ctx.cuda->compute_major != 9 || ctx.cuda->compute_minor != 0) return false;
  if (D != 64 && D != 128) return false;
  for (int i = 0; i < n; i++)
    if (reinterpret_cast<uintptr_t>(tensors[i]) % 16 != 0) return false;
  return true;
}

}  // namespace t6::cuda
