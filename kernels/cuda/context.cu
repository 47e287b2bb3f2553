// The CUDA context: device selection, stream, cuBLASLt handle, memory, and error reports.
#include <fmt/format.h>
#include <nvtx3/nvToolsExt.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>

#include "kernels/cuda/dispatch.h"
#include "kernels/cuda/state.h"

namespace t6 {

namespace cuda {

void fail(const char* what, const char* call, const char* file, int line) {
  std::string hint;
  if (std::string(what).find("out of memory") != std::string::npos)
    hint = " (the GPU is full: lower train.batch_size and raise train.gradient_accumulation_steps, or set "
           "train.recompute: true)";
  throw std::runtime_error(fmt::format("CUDA call {} failed at {}:{}: {}{}", call, file, line, what, hint));
}

void* alloc(const Context& ctx, size_t bytes) {
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, bytes);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // (clear it: the context stays usable)
    size_t free = 0, total = 0;
    CUDA_CHECK(cudaMemGetInfo(&free, &total));
    throw OutOfMemory(fmt::format("GPU {}: cannot allocate {:.2f} GB: {:.2f} GB of its {:.2f} GB are free (this "
                                  "process holds {:.2f} GB)", ctx.cuda->device, bytes / 1e9, free / 1e9, total / 1e9,
                                  ctx.cuda->allocated / 1e9));
  }
  CUDA_CHECK(err);
  CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, ctx.cuda->stream));
  CudaState& s = *ctx.cuda;
  s.sizes[p] = bytes;
  s.allocated += bytes;
  s.peak = std::max(s.peak, s.allocated);
  return p;
}

void release(const Context& ctx, void* ptr) {
  CudaState& s = *ctx.cuda;
  auto it = s.sizes.find(ptr);
  if (it != s.sizes.end()) {
    s.allocated -= it->second;
    s.sizes.erase(it);
  }
  // Not checked: a destructor may run while an error is already propagating.
  cudaStreamSynchronize(s.stream);
  cudaFree(ptr);
}

void to_host(const Context& ctx, void* dst, const void* src, size_t bytes) {
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, ctx.cuda->stream));
  CUDA_CHECK(cudaStreamSynchronize(ctx.cuda->stream));
}

void from_host(const Context& ctx, void* dst, const void* src, size_t bytes) {
  // Synchronous with respect to the host buffer: the caller may reuse it at once.
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ctx.cuda->stream));
  CUDA_CHECK(cudaStreamSynchronize(ctx.cuda->stream));
}

void zero(const Context& ctx, void* ptr, size_t bytes) { CUDA_CHECK(cudaMemsetAsync(ptr, 0, bytes, ctx.cuda->stream)); }

void copy(const Context& ctx, void* dst, const void* src, size_t bytes) {
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, ctx.cuda->stream));
}

void synchronize(const Context& ctx) { CUDA_CHECK(cudaStreamSynchronize(ctx.cuda->stream)); }

void range_push(const char* name) { nvtxRangePushA(name); }
void range_pop() { nvtxRangePop(); }

bool can_record(const Context& ctx) { return !ctx.cuda->profile; }

// Every failure is answered with null (the caller then runs the work plainly), the capture
// ended and the error cleared (capture errors are not sticky). Workspaces refuse to grow while
// a capture runs (capturing(), used by scratch and rope_table), so a refused growth leaves no
// half-made state behind.
void* record(const Context& ctx, const std::function<void()>& work, uint64_t* epoch) {
  CudaState& s = *ctx.cuda;
  *epoch = s.workspace_epoch;
  // Relaxed: the launches' attribute and occupancy queries are allowed during the capture.
  if (cudaStreamBeginCapture(s.stream, cudaStreamCaptureModeRelaxed) != cudaSuccess) {
    cudaGetLastError();
    return nullptr;
  }
  cudaGraph_t graph = nullptr;
  bool ok = true;
  try {
    work();
  } catch (...) {
    ok = false;
  }
  const cudaError_t ended = cudaStreamEndCapture(s.stream, &graph);
  cudaGraphExec_t exec = nullptr;
  if (ok && ended == cudaSuccess && graph && cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess) exec = nullptr;
  if (graph) cudaGraphDestroy(graph);
  cudaGetLastError();
  return exec;
}

bool capturing(const Context& ctx) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(ctx.cuda->stream, &status));
  return status != cudaStreamCaptureStatusNone;
}

void run_recording(const Context& ctx, void* exec) {
  CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec), ctx.cuda->stream));
}

void release_recording(void* exec) {
  cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec));  // (not checked: may run while an error propagates)
}

uint64_t workspace_epoch(const Context& ctx) { return ctx.cuda->workspace_epoch; }

void* alloc_pinned(const Context&, size_t bytes) {
  void* p = nullptr;
  const cudaError_t err = cudaHostAlloc(&p, bytes, cudaHostAllocDefault);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    throw OutOfMemory(fmt::format("cannot pin {:.2f} GB of host memory for copies from the GPU ({:.2f} GB available)",
                                  bytes / 1e9, host_memory_available() / 1e9));
  }
  CUDA_CHECK(err);
  return p;
}

void release_pinned(const Context&, void* ptr) {
  cudaFreeHost(ptr);  // (not checked: a destructor may run while an error propagates)
}

// Test hook (tests/test_cuda.cpp): T6_TEST_SNAPSHOT_DELAY_MS holds the snapshot stream that
// long before each copy, as a busy copy engine would, so that an update not ordered after the
// copy overwrites its source first.
void CUDART_CB hold_snapshot_stream(void* ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds((intptr_t)ms));
}

void snapshot_to_host(const Context& ctx, void* dst, const void* src, size_t bytes) {
  CudaState& s = *ctx.cuda;
  if (!s.snapshot_stream) {
    CUDA_CHECK(cudaStreamCreateWithFlags(&s.snapshot_stream, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&s.snapshot_after, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&s.snapshot_done, cudaEventDisableTiming));
  }
  CUDA_CHECK(cudaEventRecord(s.snapshot_after, s.stream));
  CUDA_CHECK(cudaStreamWaitEvent(s.snapshot_stream, s.snapshot_after, 0));
  if (const char* delay = std::getenv("T6_TEST_SNAPSHOT_DELAY_MS"))
    CUDA_CHECK(cudaLaunchHostFunc(s.snapshot_stream, hold_snapshot_stream, (void*)(intptr_t)std::atoi(delay)));
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s.snapshot_stream));
  CUDA_CHECK(cudaEventRecord(s.snapshot_done, s.snapshot_stream));
  s.snapshot_pending = true;
}

void snapshot_fence(const Context& ctx) {
  CudaState& s = *ctx.cuda;
  if (!s.snapshot_pending) return;
  CUDA_CHECK(cudaStreamWaitEvent(s.stream, s.snapshot_done, 0));
  s.snapshot_pending = false;
}

void snapshot_wait(const Context& ctx) {
  if (!ctx.cuda->snapshot_done) return;
  // (Called from a writer thread: on the run's GPU, not a context made on GPU 0 for this thread.)
  CUDA_CHECK(cudaSetDevice(ctx.cuda->device));
  CUDA_CHECK(cudaEventSynchronize(ctx.cuda->snapshot_done));
}

void* scratch(const Context& ctx, size_t bytes) {
  CudaState& s = *ctx.cuda;
  if (bytes > s.scratch_bytes) {
    if (capturing(ctx)) throw std::runtime_error("the scratch cannot grow while a Replay records");
    if (s.scratch) release(ctx, s.scratch);
    s.scratch = nullptr, s.scratch_bytes = 0;  // nothing dangles if the allocation below fails
    s.scratch = alloc(ctx, bytes);
    s.scratch_bytes = bytes;
    s.workspace_epoch++;
  }
  return s.scratch;
}

void OpTimer::start(CudaState* s, std::string op) {
  s_ = s;
  op_ = std::move(op);
  CUDA_CHECK(cudaEventCreate(&start_));
  CUDA_CHECK(cudaEventRecord(start_, s_->stream));
}

OpTimer::~OpTimer() {
  if (!s_) return;
  cudaEvent_t stop = nullptr;
  if (cudaEventCreate(&stop) == cudaSuccess && cudaEventRecord(stop, s_->stream) == cudaSuccess)
    s_->timings.push_back({op_, start_, stop, flops_});
}

}  // namespace cuda

void set_deterministic(const Context& ctx, bool on) {
  if (ctx.cuda) ctx.cuda->deterministic = on;
}

void set_profiling(const Context& ctx, bool on) {
  if (!ctx.cuda) return;
  profile_report(ctx);  // drop what was timed so far
  ctx.cuda->profile = on;
}

std::string profile_report(const Context& ctx) {
  if (!ctx.cuda) return "";
  CudaState& s = *ctx.cuda;
  CUDA_CHECK(cudaStreamSynchronize(s.stream));
  struct Row { int calls = 0; double ms = 0, flops = 0; };
  std::map<std::string, Row> by_op;
  double total = 0;
  for (const CudaState::Timing& t : s.timings) {
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, t.start, t.stop));
    Row& r = by_op[t.op];
    r.calls++, r.ms += ms, r.flops += t.flops;
    total += ms;
    cudaEventDestroy(t.start);
    cudaEventDestroy(t.stop);
  }
  s.timings.clear();
  std::vector<std::pair<std::string, Row>> rows(by_op.begin(), by_op.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.ms > b.second.ms; });
  std::string out = "| op | calls | ms | share | TFLOP/s |\n|---|---|---|---|---|\n";
  for (const auto& [op, r] : rows)
    out += fmt::format("| {} | {} | {:.2f} | {:.1f}% | {} |\n", op, r.calls, r.ms, 100 * r.ms / total,
                       r.flops > 0 && r.ms > 0 ? fmt::format("{:.0f}", r.flops / (r.ms * 1e9)) : "");
  return out + fmt::format("| all ops | | {:.2f} | | |\n", total);
}

CudaState::~CudaState() {
  // Best effort: the process may be ending because of a CUDA error.
  plans.clear();
  for (auto& [D, table] : rope_tables) cudaFree(table.first);
  if (scratch) cudaFree(scratch);
  if (lt_workspace) cudaFree(lt_workspace);
  if (fingerprint) cudaFree(fingerprint);
  if (host_result) cudaFreeHost(host_result);
  if (snapshot_stream) cudaStreamSynchronize(snapshot_stream), cudaStreamDestroy(snapshot_stream);
  if (snapshot_after) cudaEventDestroy(snapshot_after);
  if (snapshot_done) cudaEventDestroy(snapshot_done);
  if (lt) cublasLtDestroy(lt);
  if (stream) cudaStreamDestroy(stream);
}

// No device, or no NVIDIA driver at all, is "no GPU"; any other failure (a driver that does
// not match, a GPU that fell off the bus) is an error, so a broken GPU machine does not quietly
// train on its CPU.
int cuda_device_count() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  // Test hook (tests/CMakeLists.txt, cli_broken_gpu_*): the count fails as with a driver that
  // does not match the kernel module's version.
  if (std::getenv("T6_TEST_CUDA_COUNT_FAILS")) e = cudaErrorSystemDriverMismatch;
  if (e == cudaSuccess) return n;
  cudaGetLastError();  // clear the sticky error
  // A driver this process could use: loaded (procfs) and reachable (a container without GPU
  // access on a GPU host sees the former, not the latter).
  const bool driver_installed =
      std::filesystem::exists("/proc/driver/nvidia/version") && std::filesystem::exists("/dev/nvidiactl");
  if (e == cudaErrorNoDevice || (e == cudaErrorInsufficientDriver && !driver_installed)) return 0;
  throw std::runtime_error(fmt::format("CUDA cannot use this machine's GPUs: cudaGetDeviceCount failed with {} ({}); "
                                       "check nvidia-smi, or set train.device: cpu",
                                       cudaGetErrorName(e), cudaGetErrorString(e)));
}

Context make_cuda_context(int index) {
  const int n = cuda_device_count();
  if (index < 0 || index >= n)
    throw std::runtime_error(fmt::format("GPU {} requested, but {} GPU(s) are visible", index, n));
  CUDA_CHECK(cudaSetDevice(index));
  Context ctx;
  ctx.device = Device::cuda;
  ctx.cuda = std::make_shared<CudaState>();
  CudaState& s = *ctx.cuda;
  s.device = index;
  CUDA_CHECK(cudaDeviceGetAttribute(&s.compute_major, cudaDevAttrComputeCapabilityMajor, index));
  CUDA_CHECK(cudaDeviceGetAttribute(&s.compute_minor, cudaDevAttrComputeCapabilityMinor, index));
  int smem = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, index));
  s.max_shared_per_block = (size_t)smem;
  CUDA_CHECK(cudaDeviceGetAttribute(&s.sm_count, cudaDevAttrMultiProcessorCount, index));
  CUDA_CHECK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
  CUBLAS_CHECK(cublasLtCreate(&s.lt));
  s.lt_workspace_bytes = 64u << 20;  // cuBLASLt's recommendation for Hopper is 32 MiB or more
  CUDA_CHECK(cudaMalloc(&s.lt_workspace, s.lt_workspace_bytes));
  CUDA_CHECK(cudaMalloc(&s.fingerprint, 2 * sizeof(unsigned long long)));
  CUDA_CHECK(cudaMallocHost(&s.host_result, sizeof(double)));
  return ctx;
}

GpuMemory gpu_memory(const Context& ctx) {
  size_t free = 0, total = 0;
  CUDA_CHECK(cudaMemGetInfo(&free, &total));
  return {total - free, ctx.cuda->peak + ctx.cuda->lt_workspace_bytes, total};
}

std::string gpu_name(const Context& ctx) {
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, ctx.cuda->device));
  return fmt::format("GPU {}: {}", ctx.cuda->device, prop.name);
}

}  // namespace t6
