// A build without nvcc: the CUDA backend's entry points exist and say why they cannot run.
#include <stdexcept>

#include "kernels/cuda/dispatch.h"
#include "kernels/ops.h"

namespace t6 {

namespace {
[[noreturn]] void no_cuda() {
  throw std::runtime_error("this build has no CUDA backend (nvcc was not found when it was configured); "
                           "rebuild on a machine with the CUDA toolkit, or set train.device: cpu");
}
}  // namespace

int cuda_device_count() { return 0; }
Context make_cuda_context(int) { no_cuda(); }
GpuMemory gpu_memory(const Context&) { no_cuda(); }
std::string gpu_name(const Context&) { no_cuda(); }
void set_profiling(const Context&, bool) {}
void set_deterministic(const Context&, bool) {}
std::string profile_report(const Context&) { return ""; }
void convert(const Context&, bf16*, const float*, size_t) { no_cuda(); }

namespace cuda {
void* alloc(const Context&, size_t) { no_cuda(); }
void release(const Context&, void*) { no_cuda(); }
void to_host(const Context&, void*, const void*, size_t) { no_cuda(); }
void from_host(const Context&, void*, const void*, size_t) { no_cuda(); }
void zero(const Context&, void*, size_t) { no_cuda(); }
void copy(const Context&, void*, const void*, size_t) { no_cuda(); }
void synchronize(const Context&) { no_cuda(); }
void* alloc_pinned(const Context&, size_t) { no_cuda(); }
void release_pinned(const Context&, void*) { no_cuda(); }
void snapshot_to_host(const Context&, void*, const void*, size_t) { no_cuda(); }
void snapshot_fence(const Context&) { no_cuda(); }
void snapshot_wait(const Context&) { no_cuda(); }
void range_push(const char*) {}
void range_pop() {}
bool can_record(const Context&) { return false; }
void* record(const Context&, const std::function<void()>&, uint64_t*) { return nullptr; }
void run_recording(const Context&, void*) { no_cuda(); }
void release_recording(void*) {}
uint64_t workspace_epoch(const Context&) { return 0; }
// (The fp32 ops' CUDA branches are compiled for every build; the bf16 ops are instantiated only
// where CUDA is, kernels/dispatch.cpp.)
template <> void scale<float>(const Context&, float*, double, size_t) { no_cuda(); }
template <> void add_from_pitch<float>(const Context&, float*, const float*, int, int, int) { no_cuda(); }
template <> double sum<float>(const Context&, const float*, size_t) { no_cuda(); }
template <> double sum_squares<float>(const Context&, const float*, size_t) { no_cuda(); }
template <> void adamw_update<float>(const Context&, float*, const float*, float*, float*, size_t, double, double, double,
                                     double, double, double, double, double, bf16*) { no_cuda(); }
}  // namespace cuda

}  // namespace t6
