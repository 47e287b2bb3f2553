#include "kernels/context.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <new>
#include <string>

#include "kernels/cuda/dispatch.h"

namespace t6 {

namespace {

// What the process's cgroup (a Slurm job, a container) still allows, or SIZE_MAX if unlimited
// or unknown: the limit less the usage, from cgroup v2 (memory.max) or v1 (memory.limit_in_bytes).
size_t cgroup_memory_left() {
  std::ifstream self("/proc/self/cgroup");
  std::string line, limit_file, usage_file;
  while (std::getline(self, line)) {
    if (line.rfind("0::", 0) == 0 && limit_file.empty()) {
      const std::string dir = "/sys/fs/cgroup" + line.substr(3);
      limit_file = dir + "/memory.max", usage_file = dir + "/memory.current";
    }
    const size_t v1 = line.find(":memory:");
    if (v1 != std::string::npos) {  // v1 names the memory controller's hierarchy itself
      const std::string dir = "/sys/fs/cgroup/memory" + line.substr(v1 + 8);
      limit_file = dir + "/memory.limit_in_bytes", usage_file = dir + "/memory.usage_in_bytes";
    }
  }
  std::ifstream max_file(limit_file), current_file(usage_file);
  std::string limit;
  size_t current = 0;
  if (!(max_file >> limit) || limit == "max" || !(current_file >> current)) return SIZE_MAX;
  const size_t max = std::strtoull(limit.c_str(), nullptr, 10);  // (v1's "unlimited" is a huge number)
  return max > current ? max - current : 0;
}

}  // namespace

size_t host_memory_available() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  size_t kb = 0, available = 0;
  while (f >> key >> kb) {
    if (key == "MemAvailable:") {
      available = kb * 1024;
      break;
    }
    f.ignore(256, '\n');
  }
  if (available == 0) return 0;
  return std::min(available, cgroup_memory_left());
}

namespace {

// Host memory, 64-byte aligned (BLAS and vectorized loops stay on their fast paths), refused up
// front when it cannot fit; *rounded gets the size allocated.
void* host_alloc(size_t bytes, size_t* rounded) {
  *rounded = (bytes + 63) / 64 * 64;
  if (*rounded >= (64u << 20)) {  // large ones only: reading /proc costs a little
    const size_t available = host_memory_available();
    if (available > 0 && *rounded > available)
      throw OutOfMemory(fmt::format("cannot allocate {:.2f} GB on the host: {:.2f} GB available", *rounded / 1e9,
                                    available / 1e9));
  }
  void* p = std::aligned_alloc(64, *rounded);
  if (!p)
    throw OutOfMemory(fmt::format("cannot allocate {:.2f} GB on the host (the allocator refused)", *rounded / 1e9));
  return p;
}

}  // namespace

void* Context::alloc(size_t bytes) const {
  if (bytes == 0) return nullptr;
  if (device == Device::cuda) return cuda::alloc(*this, bytes);
  size_t rounded = 0;
  void* p = host_alloc(bytes, &rounded);
  std::memset(p, 0, rounded);
  return p;
}

void Context::release(void* ptr) const {
  if (device == Device::cuda) cuda::release(*this, ptr);
  else std::free(ptr);
}

void Context::to_host(void* dst, const void* src, size_t bytes) const {
  if (!bytes) return;
  if (device == Device::cuda) cuda::to_host(*this, dst, src, bytes);
  else std::memcpy(dst, src, bytes);
}

void Context::from_host(void* dst, const void* src, size_t bytes) const {
  if (!bytes) return;
  if (device == Device::cuda) cuda::from_host(*this, dst, src, bytes);
  else std::memcpy(dst, src, bytes);
}

void Context::zero(void* ptr, size_t bytes) const {
  if (!bytes) return;
  if (device == Device::cuda) cuda::zero(*this, ptr, bytes);
  else std::memset(ptr, 0, bytes);
}

void Context::copy(void* dst, const void* src, size_t bytes) const {
  if (!bytes) return;
  if (device == Device::cuda) cuda::copy(*this, dst, src, bytes);
  else std::memcpy(dst, src, bytes);
}

void Context::synchronize() const {
  if (device == Device::cuda) cuda::synchronize(*this);
}

bool Replay::available() const { return ctx_->device == Device::cuda && cuda::can_record(*ctx_); }

bool Replay::record(const std::function<void()>& work) {
  reset();
  if (!available()) return false;
  exec_ = cuda::record(*ctx_, work, &epoch_);
  return exec_ != nullptr;
}

void Replay::run() const {
  if (!exec_) throw std::logic_error("Replay::run before a successful record");
  cuda::run_recording(*ctx_, exec_);
}

bool Replay::current() const { return exec_ && cuda::workspace_epoch(*ctx_) == epoch_; }

void Replay::reset() {
  if (exec_) cuda::release_recording(exec_);
  exec_ = nullptr;
}

TimelineRange::TimelineRange(const Context& ctx, const char* name) {
  if (ctx.device != Device::cuda) return;
  cuda::range_push(name);
  pushed_ = true;
}

TimelineRange::~TimelineRange() {
  if (pushed_) cuda::range_pop();
}

void* Context::alloc_pinned(size_t bytes) const {
  if (bytes == 0) return nullptr;
  if (device == Device::cuda) return cuda::alloc_pinned(*this, bytes);
  size_t rounded = 0;
  return host_alloc(bytes, &rounded);  // (not zeroed: the snapshot's copy writes all of it)
}

void Context::release_pinned(void* ptr) const {
  if (device == Device::cuda) cuda::release_pinned(*this, ptr);
  else std::free(ptr);
}

void Context::snapshot_to_host(void* dst, const void* src, size_t bytes) const {
  if (!bytes) return;
  if (device == Device::cuda) cuda::snapshot_to_host(*this, dst, src, bytes);
  else std::memcpy(dst, src, bytes);
}

void Context::snapshot_fence() const {
  if (device == Device::cuda) cuda::snapshot_fence(*this);
}

void Context::snapshot_wait() const {
  if (device == Device::cuda) cuda::snapshot_wait(*this);
}

}  // namespace t6
