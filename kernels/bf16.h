// bfloat16 as the host sees it: the upper half of an IEEE float, layout-compatible with CUDA's
// __nv_bfloat16, so host code can size, copy and convert device activations without CUDA headers.
#pragma once
#include <cstdint>
#include <cstring>

namespace t6 {

struct bf16 {
  uint16_t bits = 0;
};

// Round to nearest even, as __float2bfloat16 does; NaN stays NaN.
inline bf16 to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{uint16_t((u >> 16) | 0x40)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{uint16_t(u >> 16)};
}

inline float to_float(bf16 b) {
  uint32_t u = uint32_t(b.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float to_float(float f) { return f; }
inline double to_float(double d) { return d; }

}  // namespace t6
