// Rotary embeddings with the reference's convention: halves (x1, x2) of each D-vector become
// (x1·cos + x2·sin, −x1·sin + x2·cos), θ(t, i) = t·10000^(−2i/D).
#include <cmath>

#include "kernels/cpu/parallel.h"
#include "kernels/ops.h"

namespace t6 {

// The angle is formed in T, like the reference's fp32 tables, so float runs match its rounding.
template <class T>
static void rotate(T* x, int B, int T_, int rows, int D, T sign) {
  const int half = D / 2;
#pragma omp parallel for collapse(2) if ((size_t)B * T_ * rows * D >= kParallelWork)
  for (int b = 0; b < B; b++) {
    for (int t = 0; t < T_; t++) {
      for (int i = 0; i < half; i++) {
        T inv_freq = T(1.0 / std::pow(10000.0, (2.0 * i) / D));
        T angle = T(t) * inv_freq;
        T c = T(std::cos((double)angle)), s = sign * T(std::sin((double)angle));
        T* base = x + ((size_t)b * T_ + t) * rows * D;
        for (int r = 0; r < rows; r++) {
          T* v = base + (size_t)r * D;
          T x1 = v[i], x2 = v[i + half];
          v[i] = x1 * c + x2 * s;
          v[i + half] = -x1 * s + x2 * c;
        }
      }
    }
  }
}

template <class T>
void rope_forward(const Context&, T* x, int B, int T_, int rows, int D) { rotate(x, B, T_, rows, D, T(1)); }

// The transpose of a rotation is the rotation by the opposite angle.
template <class T>
void rope_backward(const Context&, T* dx, int B, int T_, int rows, int D) { rotate(dx, B, T_, rows, D, T(-1)); }

#define INSTANTIATE(T)                                                                               \
  template void rope_forward<T>(const Context&, T*, int, int, int, int);                             \
  template void rope_backward<T>(const Context&, T*, int, int, int, int);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace t6
