// The execution context every op receives, and Buffer: memory owned by a backend.
// The model never touches elements directly; it passes Buffer pointers to ops and copies
// to/from the host only at the edges (batches in, losses and checkpoints out).
#pragma once
#include <cstddef>
#include <cstdint>
#include <utility>

namespace t6 {

enum class Device { cpu };

struct Context {
  Device device = Device::cpu;

  void* alloc(size_t bytes) const;  // zero-filled
  void release(void* ptr) const;
  void to_host(void* dst, const void* src, size_t bytes) const;
  void from_host(void* dst, const void* src, size_t bytes) const;
  void zero(void* ptr, size_t bytes) const;
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
