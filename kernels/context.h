// The execution context every op receives, and Buffer: memory owned by a backend.
// The model never touches elements directly; it passes Buffer pointers to ops and copies
// to/from the host only at the edges (batches in, losses and checkpoints out).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

#include "kernels/bf16.h"

namespace t6 {

enum class Device { cpu, cuda };

struct CudaState;  // kernels/cuda/context.cu: device, stream, cuBLASLt handle and workspace

// A buffer that does not fit in the memory left (host or GPU), said with the numbers; thrown by
// Context::alloc before anything is touched (on the host, where the kernel's OOM killer would
// otherwise end the process without a word while the zero-fill touches the pages).
struct OutOfMemory : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// The host's memory available to a new allocation: Linux's MemAvailable, or less where the
// process's cgroup (a Slurm job, a container) allows less; 0 if unknown.
size_t host_memory_available();

struct Context {
  Device device = Device::cpu;
  std::shared_ptr<CudaState> cuda;  // set when device == cuda

  void* alloc(size_t bytes) const;  // zero-filled
  void release(void* ptr) const;
  void to_host(void* dst, const void* src, size_t bytes) const;
  void from_host(void* dst, const void* src, size_t bytes) const;
  void zero(void* ptr, size_t bytes) const;
  void copy(void* dst, const void* src, size_t bytes) const;  // within this backend's memory
  void synchronize() const;  // waits for the device's queued work (nothing to do on the CPU)

  // Host memory the device copies into directly (page-locked on the GPU, ordinary on the CPU).
  void* alloc_pinned(size_t bytes) const;
  void release_pinned(void* ptr) const;
  // A copy of device memory for the host that does not hold the device up (a checkpoint's
  // state): it runs on a stream of its own after the work queued so far, beside the work queued
  // after it. snapshot_fence() makes the work queued next wait for it (call it before work
  // that writes its source); snapshot_wait() waits for it on the host (any thread). dst should
  // come from alloc_pinned. On the CPU the copy is made at once.
  void snapshot_to_host(void* dst, const void* src, size_t bytes) const;
  void snapshot_fence() const;
  void snapshot_wait() const;
};

// GPUs this process can use: 0 when the build has no CUDA backend, or the machine no device or
// no NVIDIA driver; throws when the driver is there but CUDA cannot use it.
int cuda_device_count();
// A context on GPU `index` with its own stream; throws with the reason when there is none.
Context make_cuda_context(int index);
// Bytes of GPU memory: in use now on the device (all processes), the most this process has
// held at once through Context::alloc, and the card's total.
struct GpuMemory { size_t used = 0, peak_allocated = 0, total = 0; };
GpuMemory gpu_memory(const Context& ctx);
std::string gpu_name(const Context& ctx);
// Reductions in a fixed order, so runs repeat bitwise (the default; the CPU always is).
void set_deterministic(const Context& ctx, bool on);
// Per-op device time: profiling on/off, and a table (op, calls, ms, share) of what was timed
// since it was switched on (waits for the device; an empty string on the CPU).
void set_profiling(const Context& ctx, bool on);
std::string profile_report(const Context& ctx);

// A named range on the timeline of a profiler such as Nsight Systems (NVTX), from construction
// to destruction, so that a step's phases read themselves there (`nsys profile t6-train ...`);
// nothing on the CPU backend, and next to nothing when no profiler is attached.
class TimelineRange {
 public:
  TimelineRange(const Context& ctx, const char* name);
  ~TimelineRange();
  TimelineRange(const TimelineRange&) = delete;
  TimelineRange& operator=(const TimelineRange&) = delete;

 private:
  bool pushed_ = false;
};

// Device work recorded once and run again in one launch (a CUDA graph): record() calls `work`
// with what it queues on the context's stream captured instead of run; run() runs the recording.
// Worth it where many small kernels cost more to launch than to run (decoding a token). The
// recording keeps the addresses its work used: current() says whether the context's own
// workspaces (scratch, RoPE tables) are still where they were. Nothing is recorded on the CPU or
// while profiling (available() says so; run the work plainly then), nor when the work does
// something a capture cannot hold (record() says false, and then nothing of `work` ran).
class Replay {
 public:
  explicit Replay(const Context& ctx) : ctx_(&ctx) {}
  ~Replay() { reset(); }
  Replay(const Replay&) = delete;
  Replay& operator=(const Replay&) = delete;

  bool available() const;
  bool record(const std::function<void()>& work);
  void run() const;
  bool recorded() const { return exec_ != nullptr; }
  bool current() const;
  void reset();

 private:
  const Context* ctx_;
  void* exec_ = nullptr;  // the instantiated graph
  uint64_t epoch_ = 0;    // the workspaces' generation it was recorded with
};

template <class T>
class Buffer {
 public:
  Buffer() = default;
  Buffer(const Context& ctx, size_t count) : ctx_(&ctx), count_(count) {
    data_ = static_cast<T*>(ctx.alloc(count * sizeof(T)));
  }
  ~Buffer() { if (data_) ctx_->release(data_); }
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept {
    std::swap(ctx_, o.ctx_); std::swap(data_, o.data_); std::swap(count_, o.count_);
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return count_; }
  void zero() { ctx_->zero(data_, count_ * sizeof(T)); }
  void to_host(T* dst, size_t n, size_t offset = 0) const { ctx_->to_host(dst, data_ + offset, n * sizeof(T)); }
  void from_host(const T* src, size_t n, size_t offset = 0) { ctx_->from_host(data_ + offset, src, n * sizeof(T)); }

 private:
  const Context* ctx_ = nullptr;
  T* data_ = nullptr;
  size_t count_ = 0;
};

}  // namespace t6
