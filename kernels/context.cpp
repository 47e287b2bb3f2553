#include "kernels/context.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace t6 {

void* Context::alloc(size_t bytes) const {
  if (bytes == 0) return nullptr;
  // 64-byte alignment keeps BLAS and vectorized loops on their fast paths.
  size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, rounded);
  return p;
}

void Context::release(void* ptr) const { std::free(ptr); }
void Context::to_host(void* dst, const void* src, size_t bytes) const { if (bytes) std::memcpy(dst, src, bytes); }
void Context::from_host(void* dst, const void* src, size_t bytes) const { if (bytes) std::memcpy(dst, src, bytes); }
void Context::zero(void* ptr, size_t bytes) const { if (bytes) std::memset(ptr, 0, bytes); }

}  // namespace t6
