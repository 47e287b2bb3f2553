#pragma once
// Random numbers that a seed fixes on every standard library. std::mt19937_64's output is fixed by
// the standard, its distributions are not (libc++ and MSVC draw differently from libstdc++), so the
// initialisation, the sampler and the benchmark tokens draw through these instead.
#include <cmath>
#include <cstdint>
#include <random>

namespace t6 {

// In [0, 1): one 64-bit draw scaled by 2^-64, which is what libstdc++'s generate_canonical does
// for this engine, so seeds keep the values they had before this header existed.
inline double uniform01(std::mt19937_64& rng) {
  const double u = (double)rng() * 0x1p-64;
  return u < 1.0 ? u : std::nextafter(1.0, 0.0);  // a draw near 2^64 rounds up to 2^64
}

inline double uniform(std::mt19937_64& rng, double lo, double hi) { return uniform01(rng) * (hi - lo) + lo; }

// Unbiased in [0, n) for n >= 1, by rejecting the draws past the last whole multiple of n.
inline uint64_t uniform_below(std::mt19937_64& rng, uint64_t n) {
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t r;
  do r = rng(); while (r >= limit);
  return r % n;
}

}  // namespace t6
