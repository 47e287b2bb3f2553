// The CUDA side of a Context, and the check macros every CUDA, cuBLAS and NCCL call goes
// through. Plain C++ (CUDA's C headers only), so host code such as the NCCL communicator can
// reach the stream.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <map>
#include <memory>
#include <tuple>

#include "kernels/context.h"

namespace t6 {

struct CudaState {
  int device = 0;
  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
  void* lt_workspace = nullptr;
  size_t lt_workspace_bytes = 0;
  // Grow-once scratch for ops that need device workspace (attention's fp32 dQ, reductions'
  // partial sums): sized by the first step, then reused.
  void* scratch = nullptr;
  size_t scratch_bytes = 0;
  double* host_result = nullptr;  // pinned, for reductions' results
  size_t allocated = 0, peak = 0;  // bytes held through Context::alloc
  std::map<void*, size_t> sizes;
  // cuBLASLt plans by shape (see matmul.cu), so heuristics run once per shape.
  std::map<std::tuple<int, int, int, int, int, int, int, int, int, int, int>, std::shared_ptr<void>> plans;
  ~CudaState();
};

namespace cuda {
[[noreturn]] void fail(const char* what, const char* call, const char* file, int line);
void* scratch(const Context& ctx, size_t bytes);  // the grow-once workspace, at least `bytes`
}  // namespace cuda

}  // namespace t6

#define CUDA_CHECK(call)                                                                      \
  do {                                                                                        \
    cudaError_t t6_err_ = (call);                                                             \
    if (t6_err_ != cudaSuccess) ::t6::cuda::fail(cudaGetErrorString(t6_err_), #call, __FILE__, __LINE__); \
  } while (0)

#define CUBLAS_CHECK(call)                                                                    \
  do {                                                                                        \
    cublasStatus_t t6_st_ = (call);                                                           \
    if (t6_st_ != CUBLAS_STATUS_SUCCESS) ::t6::cuda::fail(cublasLtGetStatusString(t6_st_), #call, __FILE__, __LINE__); \
  } while (0)

// After every kernel launch: a bad configuration shows up here, at the launch that caused it.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
