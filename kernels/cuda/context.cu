// The CUDA context: device selection, stream, cuBLASLt handle, memory, and error reports.
#include <fmt/format.h>

#include <stdexcept>

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
  CUDA_CHECK(cudaMalloc(&p, bytes));
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

void synchronize(const Context& ctx) { CUDA_CHECK(cudaStreamSynchronize(ctx.cuda->stream)); }

void* scratch(const Context& ctx, size_t bytes) {
  CudaState& s = *ctx.cuda;
  if (bytes > s.scratch_bytes) {
    if (s.scratch) release(ctx, s.scratch);
    s.scratch = alloc(ctx, bytes);
    s.scratch_bytes = bytes;
  }
  return s.scratch;
}

}  // namespace cuda

CudaState::~CudaState() {
  // Best effort: the process may be ending because of a CUDA error.
  plans.clear();
  if (scratch) cudaFree(scratch);
  if (lt_workspace) cudaFree(lt_workspace);
  if (host_result) cudaFreeHost(host_result);
  if (lt) cublasLtDestroy(lt);
  if (stream) cudaStreamDestroy(stream);
}

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: clear the sticky error and report none
    return 0;
  }
  return n;
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
  CUDA_CHECK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
  CUBLAS_CHECK(cublasLtCreate(&s.lt));
  s.lt_workspace_bytes = 64u << 20;  // cuBLASLt's recommendation for Hopper is 32 MiB or more
  CUDA_CHECK(cudaMalloc(&s.lt_workspace, s.lt_workspace_bytes));
  CUDA_CHECK(cudaMallocHost(&s.host_result, sizeof(double) * 4));
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
