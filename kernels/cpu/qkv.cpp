// q, k and v from the attention's input projection: TPA's factor contraction or a dense slice,
// with RoPE. Rotary embeddings use the reference's convention: halves (x1, x2) of each
// D-vector become (x1·cos + x2·sin, −x1·sin + x2·cos), θ(t, i) = t·10000^(−2i/D).
#include <fmt/format.h>

#include <cmath>
#include <stdexcept>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/parallel.h"

namespace t6 {
namespace cpu {

namespace {

// cos and sin of θ(t, i) for i < D/2. The angle is formed in T, like the reference's fp32
// tables, so float runs match its rounding.
template <class T>
void rope_table(std::vector<T>& cs, int t, int D) {
  const int half = D / 2;
  cs.resize(D);
  for (int i = 0; i < half; i++) {
    T inv_freq = T(1.0 / std::pow(10000.0, (2.0 * i) / D));
    T angle = T(t) * inv_freq;
    cs[i] = T(std::cos((double)angle));
    cs[half + i] = T(std::sin((double)angle));
  }
}

// Rotates rows of length D in place by −θ (sign +1) or back (sign −1, the transpose).
template <class T>
void rotate(T* x, int rows, int D, const std::vector<T>& cs, T sign) {
  const int half = D / 2;
  for (int r = 0; r < rows; r++) {
    T* v = x + (size_t)r * D;
    for (int i = 0; i < half; i++) {
      const T c = cs[i], s = sign * cs[half + i], x1 = v[i], x2 = v[i + half];
      v[i] = x1 * c + x2 * s;
      v[i + half] = -x1 * s + x2 * c;
    }
  }
}

// A row pitch below the width would make rows overlap (a default-made QkvLayout has pitch 0).
void check_pitch(const QkvLayout& L) {
  if (L.pitch < L.width)
    throw std::invalid_argument(fmt::format("QkvLayout: row pitch {} is below the width {}", L.pitch, L.width));
}

}  // namespace

template <class T>
void qkv_forward(const Context&, T* q, T* k, T* v, const T* proj, const QkvLayout& L, int B, int T_, int t0,
                 const int* at) {
  check_pitch(L);
  if (at) t0 = *at;
  const int N = B * T_, D = L.D;
  T* outs[3] = {q, k, v};
#pragma omp parallel for if ((size_t)N * L.width * D >= kParallelWork)
  for (int n = 0; n < N; n++) {
    thread_local std::vector<T> cs, brot;
    rope_table(cs, t0 + n % T_, D);
    const T* row = proj + (size_t)n * L.pitch;
    for (int i = 0; i < 3; i++) {
      const int H = L.heads[i], R = L.rank[i];
      T* o = outs[i] + (size_t)n * H * D;
      if (R == 0) {
        for (int j = 0; j < H * D; j++) o[j] = row[L.dense[i] + j];
        if (i < 2) rotate(o, H, D, cs, T(1));
        continue;
      }
      brot.assign(row + L.b[i], row + L.b[i] + R * D);
      if (i < 2) rotate(brot.data(), R, D, cs, T(1));
      const T* a = row + L.a[i];
      for (int h = 0; h < H; h++) {
        T* oh = o + (size_t)h * D;
        for (int d = 0; d < D; d++) oh[d] = 0;
        for (int r = 0; r < R; r++)
          for (int d = 0; d < D; d++) oh[d] += a[h * R + r] * brot[r * D + d];
        for (int d = 0; d < D; d++) oh[d] /= T(R);  // sum first, then divide, as the reference does
      }
    }
  }
}

template <class T>
void qkv_backward(const Context&, T* dproj, const T* dq, const T* dk, const T* dv, const T* proj, const QkvLayout& L,
                  int B, int T_) {
  check_pitch(L);
  const int N = B * T_, D = L.D;
  const T* douts[3] = {dq, dk, dv};
#pragma omp parallel for if ((size_t)N * L.width * D >= kParallelWork)
  for (int n = 0; n < N; n++) {
    thread_local std::vector<T> cs, brot;
    rope_table(cs, n % T_, D);
    const T* row = proj + (size_t)n * L.pitch;
    T* drow = dproj + (size_t)n * L.pitch;
    for (int i = 0; i < 3; i++) {
      const int H = L.heads[i], R = L.rank[i];
      const T* g = douts[i] + (size_t)n * H * D;
      if (R == 0) {
        T* d = drow + L.dense[i];
        for (int j = 0; j < H * D; j++) d[j] = g[j];
        if (i < 2) rotate(d, H, D, cs, T(-1));
        continue;
      }
      brot.assign(row + L.b[i], row + L.b[i] + R * D);
      if (i < 2) rotate(brot.data(), R, D, cs, T(1));
      const T* a = row + L.a[i];
      T* da = drow + L.a[i];
      T* db = drow + L.b[i];
      for (int j = 0; j < R * D; j++) db[j] = 0;
      for (int h = 0; h < H; h++)
        for (int r = 0; r < R; r++) {
          T acc = 0;
          const T coef = a[h * R + r] / T(R);
          for (int d = 0; d < D; d++) {
            acc += g[h * D + d] * brot[r * D + d];
            db[r * D + d] += coef * g[h * D + d];
          }
          da[h * R + r] = acc / T(R);
        }
      if (i < 2) rotate(db, R, D, cs, T(-1));  // the transpose of a rotation is the opposite rotation
    }
  }
}

}  // namespace cpu

int kv_b_offset(const QkvLayout& L, int side) { return (L.heads[side] * L.rank[side] + 7) / 8 * 8; }

int kv_record(const QkvLayout& L, int side) {
  const int R = L.rank[side];
  return R ? kv_b_offset(L, side) + R * L.D : L.heads[side] * L.D;
}

namespace cpu {

template <class T>
void kv_cache_store(const Context&, T* k_cache, T* v_cache, const T* proj, const QkvLayout& L, int B, int T_, int t0,
                    int context, const int* at) {
  check_pitch(L);
  if (at) t0 = *at;
  const int D = L.D;
  T* caches[3] = {nullptr, k_cache, v_cache};
  for (int n = 0; n < B * T_; n++) {
    std::vector<T> cs;
    const int pos = t0 + n % T_;
    rope_table(cs, pos, D);
    const T* row = proj + (size_t)n * L.pitch;
    for (int i = 1; i < 3; i++) {
      const int H = L.heads[i], R = L.rank[i];
      T* rec = caches[i] + ((size_t)(n / T_) * context + pos) * kv_record(L, i);
      if (R == 0) {  // the slice, k rotated: as qkv_forward makes it
        for (int j = 0; j < H * D; j++) rec[j] = row[L.dense[i] + j];
        if (i == 1) rotate(rec, H, D, cs, T(1));
        continue;
      }
      const int b0 = kv_b_offset(L, i);
      for (int j = 0; j < b0; j++) rec[j] = j < H * R ? row[L.a[i] + j] : T(0);
      T* b = rec + b0;
      for (int j = 0; j < R * D; j++) b[j] = row[L.b[i] + j];
      if (i == 1) rotate(b, R, D, cs, T(1));
    }
  }
}

#define INSTANTIATE(T)                                                                               \
  template void qkv_forward<T>(const Context&, T*, T*, T*, const T*, const QkvLayout&, int, int, int, const int*); \
  template void kv_cache_store<T>(const Context&, T*, T*, const T*, const QkvLayout&, int, int, int, int, const int*); \
  template void qkv_backward<T>(const Context&, T*, const T*, const T*, const T*, const T*, const QkvLayout&, int, int);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace cpu
}  // namespace t6
