// Causal softmax attention, the plain reference: each row's probabilities are formed in a
// scratch row and only their log-sum-exp is kept; backward recomputes them. Query head h
// reads KV head h / (H/Hkv), so MHA (Hkv = H), GQA and MQA (Hkv = 1) share one code path.
#include <cmath>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/parallel.h"

namespace t6::cpu {

namespace {

// p[s] = q·k_s·scale for s ≤ t.
template <class T>
void scores(T* p, const T* qt, const T* k, int b, int t, int T_, int Hkv, int kvh, int D, T scale) {
  for (int s = 0; s <= t; s++) {
    const T* ks = k + (((size_t)b * T_ + s) * Hkv + kvh) * D;
    T dot = 0;
#pragma omp simd reduction(+ : dot)
    for (int d = 0; d < D; d++) dot += qt[d] * ks[d];
    p[s] = dot * scale;
  }
}

}  // namespace

template <class T, class P>
void attention_forward(const Context&, T* out, P* lse, const T* q, const T* k, const T* v, int B, int T_, int H,
                       int Hkv, int D) {
  const int group = H / Hkv;
  const T scale = T(1.0 / std::sqrt((double)D));
#pragma omp parallel for collapse(2) if ((size_t)B * H * T_ * T_ * D >= kParallelWork)
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < H; h++) {
      thread_local std::vector<T> p;
      if (p.size() < (size_t)T_) p.resize(T_);
      const int kvh = h / group;
      for (int t = 0; t < T_; t++) {
        const T* qt = q + (((size_t)b * T_ + t) * H + h) * D;
        scores(p.data(), qt, k, b, t, T_, Hkv, kvh, D, scale);
        T maxv = -INFINITY;
        for (int s = 0; s <= t; s++) maxv = p[s] > maxv ? p[s] : maxv;
        double denom = 0;
        for (int s = 0; s <= t; s++) {
          p[s] = std::exp(p[s] - maxv);
          denom += p[s];
        }
        const T inv = T(1.0 / denom);
        for (int s = 0; s <= t; s++) p[s] *= inv;
        lse[((size_t)b * H + h) * T_ + t] = P(maxv + std::log(denom));

        T* ot = out + (((size_t)b * T_ + t) * H + h) * D;
        for (int d = 0; d < D; d++) ot[d] = 0;
        for (int s = 0; s <= t; s++) {
          const T* vs = v + (((size_t)b * T_ + s) * Hkv + kvh) * D;
#pragma omp simd
          for (int d = 0; d < D; d++) ot[d] += p[s] * vs[d];
        }
      }
    }
  }
}

// Parallel over (batch, KV head): all query heads of a group add into the same dk and dv rows,
// so one thread owns a group and the sums keep a fixed order.
template <class T, class P>
void attention_backward(const Context&, T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                        const T* /*out*/, const P* lse, int B, int T_, int H, int Hkv, int D) {
  const int group = H / Hkv;
  const T scale = T(1.0 / std::sqrt((double)D));
#pragma omp parallel for collapse(2) if ((size_t)B * H * T_ * T_ * D >= kParallelWork)
  for (int b = 0; b < B; b++) {
    for (int kvh = 0; kvh < Hkv; kvh++) {
      thread_local std::vector<T> p, dp;  // grow once per thread, then reused across steps
      if (p.size() < (size_t)T_) p.resize(T_), dp.resize(T_);
      for (int t = 0; t < T_; t++) {
        T* dks = dk + (((size_t)b * T_ + t) * Hkv + kvh) * D;
        T* dvs = dv + (((size_t)b * T_ + t) * Hkv + kvh) * D;
        for (int d = 0; d < D; d++) dks[d] = dvs[d] = 0;
      }
      for (int h = kvh * group; h < (kvh + 1) * group; h++) {
        for (int t = 0; t < T_; t++) {
          const size_t qi = (((size_t)b * T_ + t) * H + h) * D;
          const T* dot_ = dout + qi;
          scores(p.data(), q + qi, k, b, t, T_, Hkv, kvh, D, scale);
          const T row_lse = T(lse[((size_t)b * H + h) * T_ + t]);
          // dP = dO·Vᵀ, then the softmax backward dS = P ⊙ (dP − Σ P⊙dP).
          T rowdot = 0;
          for (int s = 0; s <= t; s++) {
            p[s] = std::exp(p[s] - row_lse);
            const T* vs = v + (((size_t)b * T_ + s) * Hkv + kvh) * D;
            T acc = 0;
#pragma omp simd reduction(+ : acc)
            for (int d = 0; d < D; d++) acc += dot_[d] * vs[d];
            dp[s] = acc;
            rowdot += p[s] * acc;
          }
          T* dqt = dq + qi;
          for (int d = 0; d < D; d++) dqt[d] = 0;
          for (int s = 0; s <= t; s++) {
            const size_t ki = (((size_t)b * T_ + s) * Hkv + kvh) * D;
            const T ds = p[s] * (dp[s] - rowdot) * scale, ps = p[s];
            const T *ks = k + ki, *qt = q + qi;
            T *dks = dk + ki, *dvs = dv + ki;
#pragma omp simd
            for (int d = 0; d < D; d++) {
              dqt[d] += ds * ks[d];
              dks[d] += ds * qt[d];
              dvs[d] += ps * dot_[d];
            }
          }
        }
      }
    }
  }
}

// The plain reference: each cached key and value is formed as qkv_forward forms it (a factored
// one summed over the rank, then divided by it), and the row's softmax as attention_forward
// does it, so decoding reproduces the full forward pass.
template <class T>
void attention_decode(const Context&, T* out, const T* q, const T* k_cache, const T* v_cache, const QkvLayout& L,
                      int B, int len, int context, const int* at) {
  if (at) len = *at + 1;
  const int H = L.heads[0], Hkv = L.heads[1], D = L.D, group = H / Hkv;
  const int kw = kv_record(L, 1), vw = kv_record(L, 2);
  const T scale = T(1.0 / std::sqrt((double)D));
  // Head kvh's key or value at a cached position: the slice, or the contraction of the factors.
  auto head = [&](T* dst, const T* rec, int side, int kvh) {
    const int R = L.rank[side];
    if (R == 0) {
      for (int d = 0; d < D; d++) dst[d] = rec[(size_t)kvh * D + d];
      return;
    }
    const T *a = rec + (size_t)kvh * R, *b = rec + kv_b_offset(L, side);
    for (int d = 0; d < D; d++) dst[d] = 0;
    for (int r = 0; r < R; r++)
      for (int d = 0; d < D; d++) dst[d] += a[r] * b[r * D + d];
    for (int d = 0; d < D; d++) dst[d] /= T(R);
  };
#pragma omp parallel for collapse(2) if ((size_t)B * H * len * D >= kParallelWork)
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < H; h++) {
      std::vector<T> p(len), kv(D);
      const T* qh = q + ((size_t)b * H + h) * D;
      const T *kc = k_cache + (size_t)b * context * kw, *vc = v_cache + (size_t)b * context * vw;
      for (int s = 0; s < len; s++) {
        head(kv.data(), kc + (size_t)s * kw, 1, h / group);
        T dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int d = 0; d < D; d++) dot += qh[d] * kv[d];
        p[s] = dot * scale;
      }
      T maxv = -INFINITY;
      for (int s = 0; s < len; s++) maxv = p[s] > maxv ? p[s] : maxv;
      double denom = 0;
      for (int s = 0; s < len; s++) {
        p[s] = std::exp(p[s] - maxv);
        denom += p[s];
      }
      const T inv = T(1.0 / denom);
      T* oh = out + ((size_t)b * H + h) * D;
      for (int d = 0; d < D; d++) oh[d] = 0;
      for (int s = 0; s < len; s++) {
        head(kv.data(), vc + (size_t)s * vw, 2, h / group);
        const T ps = p[s] * inv;
#pragma omp simd
        for (int d = 0; d < D; d++) oh[d] += ps * kv[d];
      }
    }
  }
}

#define INSTANTIATE(T)                                                                               \
  template void attention_forward<T, T>(const Context&, T*, T*, const T*, const T*, const T*, int, int, int, int, int); \
  template void attention_backward<T, T>(const Context&, T*, T*, T*, const T*, const T*, const T*, const T*, const T*, \
                                         const T*, int, int, int, int, int); \
  template void attention_decode<T>(const Context&, T*, const T*, const T*, const T*, const QkvLayout&, int, int, int, \
                                    const int*);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace t6::cpu
