#include <cstring>

#include "kernels/cpu/ops.h"

namespace t6::cpu {

template <class T>
void embedding_forward(const Context&, T* out, const int32_t* tokens, const T* wte, int N, int C) {
  for (int n = 0; n < N; n++) std::memcpy(out + (size_t)n * C, wte + (size_t)tokens[n] * C, C * sizeof(T));
}

// Sequential over tokens: a token that repeats adds into the same row, so a parallel loop
// would race (or need atomics that make the sum order nondeterministic).
template <class T, class P>
void embedding_backward(const Context&, P* dwte, const T* dout, const int32_t* tokens, int N, int C, int) {
  for (int n = 0; n < N; n++) {
    P* row = dwte + (size_t)tokens[n] * C;
    const T* d = dout + (size_t)n * C;
    for (int c = 0; c < C; c++) row[c] += d[c];
  }
}

#define INSTANTIATE(T)                                                                               \
  template void embedding_forward<T>(const Context&, T*, const int32_t*, const T*, int, int);        \
  template void embedding_backward<T, T>(const Context&, T*, const T*, const int32_t*, int, int, int);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace t6::cpu
