// t6-kernel-bench's shared parts: arguments, inputs rounded to bf16, device copies, the
// element-by-element check against the CPU backend and the CUDA-event timer.
#pragma once
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/state.h"
#include "model/random.h"

namespace t6::bench {

using Vec = std::vector<double>;

// The flags that take yes or no; every other one but --config takes a positive integer.
inline bool is_yes_no_flag(const std::string& k) { return k == "dense" || k == "cold-l2"; }

// The --name value pairs after the op name, kept as text: defaults depend on each other (Hkv
// is H unless given; qkv's B and T come from the config), so numbers are read when asked for.
struct BenchArgs {
  std::map<std::string, std::string> kv;
  int get(const std::string& k, int fallback) const {
    auto it = kv.find(k);
    if (it == kv.end()) return fallback;
    char* end = nullptr;
    const long v = std::strtol(it->second.c_str(), &end, 10);
    if (it->second.empty() || *end || v < 1 || v > (1 << 30))
      throw std::invalid_argument(fmt::format("--{} {}: expected a positive integer", k, it->second));
    return (int)v;
  }
  std::string str(const std::string& k, const std::string& fallback) const {
    auto it = kv.find(k);
    return it == kv.end() ? fallback : it->second;
  }
  bool yes_no(const std::string& k, bool fallback) const {
    if (!is_yes_no_flag(k)) throw std::logic_error(fmt::format("--{} is not listed as a yes/no flag", k));
    const std::string v = str(k, fallback ? "yes" : "no");
    if (v != "yes" && v != "no") throw std::invalid_argument(fmt::format("--{} {}: expected yes or no", k, v));
    return v == "yes";
  }
};

struct Rng {
  std::mt19937_64 gen{1234};
  Vec bf16_values(size_t n, double scale) {  // uniform, rounded to bf16 (both sides see these)
    Vec v(n);
    for (double& x : v) x = to_float(to_bf16((float)uniform(gen, -scale, scale)));
    return v;
  }
};

inline Buffer<bf16> upload(const Context& ctx, const Vec& v) {
  std::vector<bf16> h(v.size());
  for (size_t i = 0; i < v.size(); i++) h[i] = to_bf16((float)v[i]);
  Buffer<bf16> b(ctx, v.size());
  b.from_host(h.data(), h.size());
  return b;
}
inline Buffer<float> upload_f32(const Context& ctx, const Vec& v) {
  const std::vector<float> h(v.begin(), v.end());
  Buffer<float> b(ctx, v.size());
  b.from_host(h.data(), h.size());
  return b;
}
template <class T>
Vec download(const Buffer<T>& b, size_t n = 0, size_t offset = 0) {
  n = n ? n : b.size();
  std::vector<T> h(n);
  b.to_host(h.data(), n, offset);
  Vec v(n);
  for (size_t i = 0; i < n; i++) v[i] = to_float(h[i]);
  return v;
}
inline Buffer<bf16> poisoned(const Context& ctx, size_t n) {
  std::vector<bf16> h(n, bf16{0x7fc0});
  Buffer<bf16> b(ctx, n);
  b.from_host(h.data(), n);
  return b;
}

// Element-wise |got − want| ≤ atol + rtol·|want| with atol = arms·rms(want) + 1e-6; returns
// the worst ratio |got − want| / bound (≤ 1 passes) and prints the first mismatches.
inline double compare(const std::string& what, const Vec& got, const Vec& want, double rtol, double arms,
               const std::function<std::string(size_t)>& where) {
  double ss = 0;
  for (double w : want) ss += w * w;
  const double atol = arms * std::sqrt(ss / std::max<size_t>(want.size(), 1)) + 1e-6;
  double worst = 0;
  int shown = 0;
  for (size_t i = 0; i < want.size(); i++) {
    const double bound = atol + rtol * std::fabs(want[i]), err = std::fabs(got[i] - want[i]);
    const double ratio = std::isfinite(got[i]) ? err / bound : INFINITY;
    worst = std::max(worst, ratio);
    if (ratio > 1 && shown++ < 5)
      fmt::print("  MISMATCH {} at {}: got {:.6g}, want {:.6g}\n", what, where(i), got[i], want[i]);
  }
  return worst;
}

// The median time of f over reps runs; before (not timed), if given, runs ahead of each.
inline double median_ms(const Context& ctx, int reps, const std::function<void()>& f, const std::function<void()>& before = {}) {
  cudaStream_t s = ctx.cuda->stream;
  std::vector<float> ms;
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  f();  // warm-up: plans, tensor maps, first-touch
  for (int r = 0; r < reps; r++) {
    if (before) before();
    CUDA_CHECK(cudaEventRecord(a, s));
    f();
    CUDA_CHECK(cudaEventRecord(b, s));
    CUDA_CHECK(cudaEventSynchronize(b));
    float t = 0;
    CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// A buffer larger than the L2, written before a timed call so that the call finds the L2 full
// of other (dirty) lines, as a kernel does in a training step after the kernels before it.
struct L2Filler {
  Buffer<unsigned char> buffer;
  explicit L2Filler(const Context& ctx) : buffer(ctx, 256u << 20) {}
  void fill(const Context& ctx) { ctx.zero(buffer.data(), buffer.size()); }
};

// The device's copy rate in GB/s: a 1 GiB device-to-device copy reads and writes every byte.
// Memory-bound kernels are judged against it (what the GPU moves in practice, not its data sheet).
inline double copy_rate_gbs(const Context& ctx) {
  const size_t bytes = 1ull << 30;
  Buffer<unsigned char> from(ctx, bytes), to(ctx, bytes);
  return 2.0 * bytes / median_ms(ctx, 10, [&] { ctx.copy(to.data(), from.data(), bytes); }) / 1e6;
}

// The other op families, one small harness each (kernel_bench_ops.cpp): embedding, rmsnorm,
// matmul, swiglu, classifier, adamw. 0 when every check passes.
int bench_op(const Context& ctx, const std::string& op, const BenchArgs& args);

}  // namespace t6::bench
