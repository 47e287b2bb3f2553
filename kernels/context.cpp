#include "kernels/context.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "kernels/cuda/dispatch.h"

namespace t6 {

void* Context::alloc(size_t bytes) const {
  if (bytes == 0) return nullptr;
  if (device == Device::cuda) return cuda::alloc(*this, bytes);
  // 64-byte alignment keeps BLAS and vectorized loops on their fast paths.
  size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) throw std::bad_alloc();
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
