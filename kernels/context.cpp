#include "kernels/context.h"

#include <fmt/format.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <new>
#include <string>

#include "kernels/cuda/dispatch.h"

namespace t6 {

size_t host_memory_available() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  size_t kb = 0;
  while (f >> key >> kb) {
    if (key == "MemAvailable:") return kb * 1024;
    f.ignore(256, '\n');
  }
  return 0;
}

void* Context::alloc(size_t bytes) const {
  if (bytes == 0) return nullptr;
  if (device == Device::cuda) return cuda::alloc(*this, bytes);
  // 64-byte alignment keeps BLAS and vectorized loops on their fast paths.
  size_t rounded = (bytes + 63) / 64 * 64;
  if (rounded >= (64u << 20)) {  // large ones only: reading /proc costs a little
    const size_t available = host_memory_available();
    if (available > 0 && rounded > available)
      throw OutOfMemory(fmt::format("cannot allocate {:.2f} GB on the host: {:.2f} GB available", rounded / 1e9,
                                    available / 1e9));
  }
  void* p = std::aligned_alloc(64, rounded);
  if (!p)
    throw OutOfMemory(fmt::format("cannot allocate {:.2f} GB on the host (the allocator refused)", rounded / 1e9));
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

}  // namespace t6
