// The CUDA side of a Context, and the check macros every CUDA, cuBLAS and NCCL call goes
// through. Plain C++ (CUDA's C headers only), so host code such as the NCCL communicator can
// reach the stream.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <map>
#include <string>
#include <memory>
#include <tuple>
#include <vector>

#include "kernels/context.h"

namespace t6 {

struct CudaState {
  int device = 0;
  int compute_major = 0, compute_minor = 0;
  // Which attention kernels run (attention.cu): 0 the fastest for this GPU, 1 the mma.sync
  // ones (sm_80 and later), 2 Hopper's (sm_90 only), 3 Hopper's with a block per tile instead
  // of persistent blocks.
  // Tests and the kernel benchmark set it.
  int attention_version = 0;
  // false: cuBLASLt's first-choice algorithm, untimed (tests compare the timed choice with it).
  bool tune_matmuls = true;
  // Runs repeat bitwise: attention's dQ summed in a fixed order, and cuBLASLt's algorithm the
  // fastest of those giving bitwise its first choice's result (matmul.cu).
  bool deterministic = true;
  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
  void* lt_workspace = nullptr;
  size_t lt_workspace_bytes = 0;
  unsigned long long* fingerprint = nullptr;  // two words: matmul.cu compares candidates' results
  // Grow-once scratch for ops that need device workspace (attention's fp32 dQ, reductions'
  // partial sums): sized by the first step, then reused.
  void* scratch = nullptr;
  size_t scratch_bytes = 0;
  // Counts moves of the workspaces above and of the RoPE tables: a recorded Replay (kernels/
  // context.h) that used them is stale once it changes.
  uint64_t workspace_epoch = 0;
  double* host_result = nullptr;  // pinned, for reductions' results
  // Context::snapshot_to_host's stream, and its events: the work it follows, and its copies' end.
  cudaStream_t snapshot_stream = nullptr;
  cudaEvent_t snapshot_after = nullptr, snapshot_done = nullptr;
  bool snapshot_pending = false;  // copies queued that no fence has ordered the stream after yet
  std::map<int, std::pair<void*, int>> rope_tables;  // cos/sin by D: (table, positions), grown on use (qkv.cu)
  size_t max_shared_per_block = 0;  // dynamic shared memory a block may opt into
  int sm_count = 0;
  size_t allocated = 0, peak = 0;  // bytes held through Context::alloc
  std::map<void*, size_t> sizes;
  // cuBLASLt plans by shape (see matmul.cu), so heuristics run once per shape.
  std::map<std::tuple<int, int, int, int, int, int, int, int, int, int, int>, std::shared_ptr<void>> plans;
  // Per-op timing (t6-train --benchmark N --profile): events around every op, summed by name.
  bool profile = false;
  struct Timing { std::string op; cudaEvent_t start, stop; double flops; };
  std::vector<Timing> timings;
  ~CudaState();
};

namespace cuda {
[[noreturn]] void fail(const char* what, const char* call, const char* file, int line);
void* scratch(const Context& ctx, size_t bytes);  // the grow-once workspace, at least `bytes`
bool capturing(const Context& ctx);  // whether a Replay is recording on the context's stream

// Times the enclosing op on the device when profiling is on (a no-op otherwise); flops, when
// known, give the report an achieved-TFLOP/s column.
class OpTimer {
 public:
  OpTimer(const Context& ctx, const char* op, double flops = 0)
      : OpTimer(ctx, [op] { return std::string(op); }, flops) {}
  // name() is called only when profiling: the name may be costly to format.
  template <class Name>
  OpTimer(const Context& ctx, const Name& name, double flops = 0) : flops_(flops) {
    if (ctx.cuda && ctx.cuda->profile) start(ctx.cuda.get(), name());
  }
  ~OpTimer();

 private:
  void start(CudaState* s, std::string op);
  CudaState* s_ = nullptr;
  std::string op_;
  cudaEvent_t start_ = nullptr;
  double flops_ = 0;
};
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

#define T6_TIMED(ctx, name) ::t6::cuda::OpTimer t6_op_timer_(ctx, name)

// After every kernel launch: a bad configuration shows up here, at the launch that caused it.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
