// The CUDA backend against the CPU backend (label `gpu`; every test skips, saying why, where
// no GPU is visible). Ops run on fresh random inputs rounded to bf16; the reference is the CPU
// op in double on the same rounded inputs, so the error measured is the GPU's own:
// ‖gpu − cpu‖ / ‖cpu‖ < 1e-2 for bf16 paths, < 1e-5 for the fp32 optimizer paths, and for
// every op element by element too (close_elementwise / close_matrix), so that one wrong row,
// head or column cannot hide in a norm.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <limits>
#include <random>
#include <thread>

#include "kernels/cuda/state.h"
#include "kernels/ops.h"
#include "model/init.h"
#include "model/t6.h"
#include "test_util.h"
#include "trainer/config.h"
#include "trainer/tools.h"
#include "trainer/train.h"

namespace t6 {
namespace {

using Vec = std::vector<double>;

class Gpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device visible: the gpu tests run on a GPU machine";
    ctx = make_cuda_context(0);
  }
  // Random values rounded to bf16 (so CPU and GPU see the same numbers), and a device copy.
  Vec random(size_t n, double scale = 1.0) {
    std::uniform_real_distribution<double> u(-scale, scale);
    Vec v(n);
    for (double& x : v) x = to_float(to_bf16((float)u(rng)));
    return v;
  }
  Buffer<bf16> upload(const Vec& v) {
    std::vector<bf16> h(v.size());
    for (size_t i = 0; i < v.size(); i++) h[i] = to_bf16((float)v[i]);
    Buffer<bf16> b(ctx, v.size());
    b.from_host(h.data(), h.size());
    return b;
  }
  Buffer<float> upload_f32(const Vec& v) {
    std::vector<float> h(v.begin(), v.end());
    Buffer<float> b(ctx, v.size());
    b.from_host(h.data(), h.size());
    return b;
  }
  // Poisoned output (NaN bits), so an element the kernel does not write fails the check.
  Buffer<bf16> poisoned(size_t n) {
    std::vector<bf16> h(n, bf16{0x7fc0});
    Buffer<bf16> b(ctx, n);
    b.from_host(h.data(), n);
    return b;
  }
  // Fills the context's scratch, grown to `bytes` at least, with NaN bits, as an earlier op may
  // leave it (a fresh allocation is zeros): no op may rely on its scratch starting at zero.
  void poison_scratch(size_t bytes) {
    void* s = cuda::scratch(ctx, bytes);
    const size_t n = ctx.cuda->scratch_bytes / sizeof(float);
    const std::vector<float> h(n, std::numeric_limits<float>::quiet_NaN());
    Buffer<float> nan(ctx, n);
    nan.from_host(h.data(), n);
    ctx.copy(s, nan.data(), n * sizeof(float));
  }
  template <class B>
  Vec download(const B& b) {
    using T = std::remove_cv_t<std::remove_reference_t<decltype(*b.data())>>;
    std::vector<T> h(b.size());
    b.to_host(h.data(), h.size());
    Vec v(h.size());
    for (size_t i = 0; i < h.size(); i++) v[i] = to_float(h[i]);
    return v;
  }
  // A small model of each variant for the model-level tests (GQA with 2 KV heads).
  static ModelConfig small_model(Attention attention, int block_size) {
    ModelConfig c;
    c.attention = attention;
    c.n_layer = 2, c.n_embd = 256, c.n_head = 6, c.head_dim = 64, c.q_rank = 6, c.rank = 2;
    c.n_kv_head = attention == Attention::gqa ? 2 : 0;
    c.vocab_size = 1000, c.block_size = block_size;
    return c;
  }
  // The spec's initialization, but c_proj random: its zero c_proj would hide the branches.
  std::vector<float> live_weights(const ModelConfig& c, uint64_t seed) {
    const ParamLayout layout = make_layout(c);
    std::vector<float> params = init_params(c, layout, seed);
    std::uniform_real_distribution<float> u(-0.05f, 0.05f);
    for (const ParamInfo& p : layout.params)
      if (p.name.find("c_proj") != std::string::npos)
        for (size_t i = 0; i < p.size; i++) params[p.offset + i] = u(rng);
    return params;
  }
  Context ctx;
  const Context cpu;
  std::mt19937_64 rng{2024};
};

constexpr double kBf16 = 1e-2, kFp32 = 1e-5;

// Element by element: |got − want| ≤ arms·rms(want) + rtol·|want| (+1e-6), printing the first
// mismatches with their place, so one wrong row or head cannot hide in a norm. `slack`, where
// given, is an element's own rounding allowance beyond that (a sum whose terms cancel); it is
// asked only for elements that fail the plain bound, and for at most 1000 of them.
::testing::AssertionResult close_elementwise(const Vec& got, const Vec& want, double rtol, double arms,
                                             const std::function<std::string(size_t)>& where,
                                             const std::function<double(size_t)>& slack = nullptr) {
  double ss = 0;
  for (double w : want) ss += w * w;
  const double atol = arms * std::sqrt(ss / std::max<size_t>(want.size(), 1)) + 1e-6;
  std::string msg;
  size_t bad = 0, slack_asked = 0;
  for (size_t i = 0; i < want.size(); i++) {
    const double err = std::fabs(got[i] - want[i]), bound = atol + rtol * std::fabs(want[i]);
    if (err <= bound) continue;
    const double extra = slack && slack_asked++ < 1000 ? slack(i) : 0.0;
    if (err <= bound + extra) continue;
    if (bad++ < 5)
      msg += fmt::format("\n  at {}: got {:.6g}, want {:.6g} (bound {:.3g} + rounding slack {:.3g})", where(i),
                         got[i], want[i], bound, extra);
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << want.size() << " elements off" << msg;
}

// The same for a (rows × cols) matrix at the bf16 paths' tolerance (1e-2 of rms and of the
// value: one element's rounding is at most 2^-8 of it; a wrong row or column is off by ≈ rms).
::testing::AssertionResult close_matrix(const Vec& got, const Vec& want, size_t cols) {
  return close_elementwise(got, want, 1e-2, 1e-2,
                           [cols](size_t i) { return fmt::format("(row {}, column {})", i / cols, i % cols); });
}


TEST_F(Gpu, EmbeddingForwardBackward) {
  // Several blocks of vocabulary rows (128 each) and a skewed distribution: a few ids repeat
  // many times, most appear once or not at all.
  const int N = 700, C = 96, V = 300;
  std::vector<int32_t> tokens(N);
  for (int32_t& t : tokens) t = rng() % 3 ? (int32_t)(rng() % 4) * 97 : (int32_t)(rng() % V);
  Vec wte = random((size_t)V * C), dout = random((size_t)N * C), out(N * C), dwte(V * C, 0.0);
  embedding_forward(cpu, out.data(), tokens.data(), wte.data(), N, C);
  embedding_backward(cpu, dwte.data(), dout.data(), tokens.data(), N, C, V);
  Buffer<int32_t> t(ctx, N);
  t.from_host(tokens.data(), N);
  auto g_wte = upload(wte), g_dout = upload(dout);
  auto g_out = poisoned((size_t)N * C);
  Buffer<float> g_dwte(ctx, (size_t)V * C);
  embedding_forward(ctx, g_out.data(), t.data(), g_wte.data(), N, C);
  embedding_backward(ctx, g_dwte.data(), g_dout.data(), t.data(), N, C, V);
  EXPECT_EQ(test::rel_error(download(g_out), out), 0.0);
  EXPECT_LT(test::rel_error(download(g_dwte), dwte), kFp32);
  EXPECT_TRUE(close_matrix(download(g_dwte), dwte, C));
  // The sums run in token order: a second pass adds exactly the same values again.
  const Vec once = download(g_dwte);
  g_dwte.zero();
  embedding_backward(ctx, g_dwte.data(), g_dout.data(), t.data(), N, C, V);
  EXPECT_EQ(download(g_dwte), once);
}

TEST_F(Gpu, RmsNormPlainResidualAndBackward) {
  for (int C : {768, 100}) {
    const int N = 257;
    Vec x = random((size_t)N * C, 3.0), br = random((size_t)N * C), dy = random((size_t)N * C), dx0 = random((size_t)N * C);
    Vec xo(N * C), h(N * C), rstd(N), dx = dx0;
    residual_rmsnorm_forward(cpu, xo.data(), h.data(), rstd.data(), x.data(), br.data(), N, C, kRmsEps);
    auto gx = upload(x), gbr = upload(br), gdy = upload(dy), gdx = upload(dx0);
    auto gxo = poisoned((size_t)N * C), gh = poisoned((size_t)N * C), gh2 = poisoned((size_t)N * C);
    Buffer<float> grstd(ctx, N);
    residual_rmsnorm_forward(ctx, gxo.data(), gh.data(), grstd.data(), gx.data(), gbr.data(), N, C, kRmsEps);
    EXPECT_LT(test::rel_error(download(gxo), xo), kBf16) << C;
    EXPECT_LT(test::rel_error(download(gh), h), kBf16) << C;
    EXPECT_TRUE(close_matrix(download(gxo), xo, C)) << C;
    EXPECT_TRUE(close_matrix(download(gh), h, C)) << C;
    EXPECT_LT(test::rel_error(download(grstd), rstd), kBf16) << C;
    // Plain form and backward from the GPU's own stored stream (what the model does).
    const Vec xs = download(gxo);
    Vec h2(N * C), rstd2(N);
    rmsnorm_forward(cpu, h2.data(), rstd2.data(), xs.data(), N, C, kRmsEps);
    rmsnorm_forward(ctx, gh2.data(), grstd.data(), gxo.data(), N, C, kRmsEps);
    EXPECT_LT(test::rel_error(download(gh2), h2), kBf16) << C;
    EXPECT_TRUE(close_matrix(download(gh2), h2, C)) << C;
    rmsnorm_backward(cpu, dx.data(), dy.data(), xs.data(), rstd2.data(), N, C);
    rmsnorm_backward(ctx, gdx.data(), gdy.data(), gxo.data(), grstd.data(), N, C);
    EXPECT_LT(test::rel_error(download(gdx), dx), kBf16) << C;
    EXPECT_TRUE(close_matrix(download(gdx), dx, C)) << C;
  }
}

TEST_F(Gpu, MatmulForwardBackward) {
  // Paper-sized and awkward shapes (odd sizes take cuBLASLt's unaligned kernels).
  struct Shape { int M, K, N; };
  for (Shape s : {Shape{512, 768, 980}, Shape{333, 64, 250}, Shape{128, 2730, 1024}, Shape{7, 13, 5}}) {
    Vec x = random((size_t)s.M * s.K), W = random((size_t)s.N * s.K, 0.05), dy = random((size_t)s.M * s.N);
    Vec dx0 = random((size_t)s.M * s.K), dW0 = random((size_t)s.N * s.K), out(s.M * s.N), dx = dx0, dW = dW0;
    matmul_forward(cpu, out.data(), x.data(), W.data(), s.M, s.K, s.N);
    matmul_backward_input(cpu, dx.data(), dy.data(), W.data(), s.M, s.K, s.N, 0, 0, true);
    matmul_backward_weight(cpu, dW.data(), dy.data(), x.data(), s.M, s.K, s.N);
    auto gx = upload(x), gW = upload(W), gdy = upload(dy), gdx = upload(dx0);
    auto gout = poisoned((size_t)s.M * s.N);
    auto gdW = upload_f32(dW0);
    matmul_forward(ctx, gout.data(), gx.data(), gW.data(), s.M, s.K, s.N);
    matmul_backward_input(ctx, gdx.data(), gdy.data(), gW.data(), s.M, s.K, s.N, 0, 0, true);
    matmul_backward_weight(ctx, gdW.data(), gdy.data(), gx.data(), s.M, s.K, s.N);
    const std::string at = fmt::format("{}x{}x{}", s.M, s.K, s.N);
    EXPECT_LT(test::rel_error(download(gout), out), kBf16) << at;
    EXPECT_LT(test::rel_error(download(gdx), dx), kBf16) << at;
    EXPECT_LT(test::rel_error(download(gdW), dW), kBf16) << at;
    EXPECT_TRUE(close_matrix(download(gout), out, s.N)) << at;
    EXPECT_TRUE(close_matrix(download(gdx), dx, s.K)) << at;
    EXPECT_TRUE(close_matrix(download(gdW), dW, s.K)) << at;
  }
}

// In the deterministic mode the timed choice among cuBLASLt's candidates may differ from run
// to run, so it must give bitwise the heuristic's first choice's result: each product of
// T6-small's shapes (fewer rows) planned in a fresh context with the timing and in one without,
// then compared bitwise on other operands (the plan is made on the first call's). The plans
// are made on random operands and, the second time, on zero weights (step 0's c_proj).
TEST_F(Gpu, TimedMatmulChoiceRepeatsTheFirstChoiceBitwise) {
  struct Shape { int M, K, N; };
  for (const bool zero_first : {false, true})
    for (Shape s : {Shape{2048, 768, 984}, Shape{2048, 768, 4096}, Shape{2048, 2048, 768}, Shape{2048, 2176, 768},
                    Shape{1000, 768, 5000}}) {
      const Vec x = random((size_t)s.M * s.K), dy = random((size_t)s.M * s.N);
      const Vec W_plan = zero_first ? Vec((size_t)s.N * s.K, 0.0) : random((size_t)s.N * s.K, 0.05);
      const Vec W = random((size_t)s.N * s.K, 0.05);
      std::vector<std::vector<uint16_t>> results;
      for (const bool tune : {false, true}) {
        Context fresh = make_cuda_context(0);
        fresh.cuda->tune_matmuls = tune;
        ASSERT_TRUE(fresh.cuda->deterministic);
        auto gx = upload(x), gdy = upload(dy), gW_plan = upload(W_plan), gW = upload(W);
        Buffer<bf16> out(fresh, (size_t)s.M * s.N), dx(fresh, (size_t)s.M * s.K);
        for (const auto* w : {&gW_plan, &gW}) {  // the plans are made by the first
          matmul_forward(fresh, out.data(), gx.data(), w->data(), s.M, s.K, s.N);
          matmul_backward_input(fresh, dx.data(), gdy.data(), w->data(), s.M, s.K, s.N, 0, 0, false);
        }
        std::vector<bf16> h(out.size() + dx.size());
        out.to_host(h.data(), out.size());
        dx.to_host(h.data() + out.size(), dx.size());
        std::vector<uint16_t> bits(h.size());
        for (size_t i = 0; i < h.size(); i++) bits[i] = h[i].bits;
        results.push_back(std::move(bits));
      }
      EXPECT_TRUE(results[1] == results[0])
          << fmt::format("{}x{}x{}{}", s.M, s.K, s.N, zero_first ? ", planned on zero weights" : "");
    }
}

// The stacked projection of T6-small's TPA (H 34, R_q 6, R_k = R_v 2, D 64), and a layout
// with dense and factored sections mixed (tpa_kvonly-like, with R_v = 1); rows padded to a
// multiple of 8, as the model lays them out.
std::vector<QkvLayout> qkv_layouts() {
  QkvLayout tpa;
  tpa.D = 64;
  const int H = 34, R[3] = {6, 2, 2};
  int col = 0;
  for (int s = 0; s < 3; s++) tpa.heads[s] = H, tpa.rank[s] = R[s], tpa.a[s] = col, col += H * R[s];
  for (int s = 0; s < 3; s++) tpa.b[s] = col, col += R[s] * 64;
  tpa.width = col;
  tpa.pitch = (col + 7) / 8 * 8;
  QkvLayout mixed;
  mixed.D = 32;
  mixed.heads[0] = 5, mixed.rank[0] = 0, mixed.dense[0] = 0;
  mixed.heads[1] = 5, mixed.rank[1] = 3, mixed.a[1] = 160, mixed.b[1] = 175;
  mixed.heads[2] = 5, mixed.rank[2] = 1, mixed.a[2] = 271, mixed.b[2] = 276;
  mixed.width = 308;
  mixed.pitch = 312;
  // Ranks above 8 (taken in blocks of 8) with D = 128, and more heads than a block of 16.
  QkvLayout big;
  big.D = 128;
  const int BH = 20, BR[3] = {10, 3, 9};
  col = 0;
  for (int s = 0; s < 3; s++) big.heads[s] = BH, big.rank[s] = BR[s], big.a[s] = col, col += BH * BR[s];
  for (int s = 0; s < 3; s++) big.b[s] = col, col += BR[s] * 128;
  big.width = col;
  big.pitch = (col + 7) / 8 * 8;
  // T6-medium's TPA (47 heads): B's rows start at column 470, not a multiple of 4 (unaligned
  // in the staged row).
  QkvLayout medium;
  medium.D = 64;
  col = 0;
  for (int s = 0; s < 3; s++) medium.heads[s] = 47, medium.rank[s] = R[s], medium.a[s] = col, col += 47 * R[s];
  for (int s = 0; s < 3; s++) medium.b[s] = col, col += R[s] * 64;
  medium.width = col;
  medium.pitch = (col + 7) / 8 * 8;
  // A wide dense row (T6-large MHA's 3 × 20 heads × 64 = 3840 columns): fewer tokens a block.
  QkvLayout wide;
  wide.D = 64;
  for (int s = 0; s < 3; s++) wide.heads[s] = 20, wide.dense[s] = s * 20 * 64;
  wide.width = wide.pitch = 3 * 20 * 64;
  return {tpa, mixed, big, medium, wide};
}

TEST_F(Gpu, QkvForwardBackward) {
  for (const QkvLayout& L : qkv_layouts()) {
    const int B = 2, T = 37, N = B * T, D = L.D;
    Vec proj = random((size_t)N * L.pitch), douts[3], outs[3], dproj((size_t)N * L.pitch, 0.0);
    for (int s = 0; s < 3; s++) douts[s] = random((size_t)N * L.heads[s] * D), outs[s].resize(douts[s].size());
    qkv_forward(cpu, outs[0].data(), outs[1].data(), outs[2].data(), proj.data(), L, B, T);
    qkv_backward(cpu, dproj.data(), douts[0].data(), douts[1].data(), douts[2].data(), proj.data(), L, B, T);
    auto gp = upload(proj), g0 = upload(douts[0]), g1 = upload(douts[1]), g2 = upload(douts[2]);
    auto o0 = poisoned(outs[0].size()), o1 = poisoned(outs[1].size()), o2 = poisoned(outs[2].size());
    auto gdp = poisoned(dproj.size());
    qkv_forward(ctx, o0.data(), o1.data(), o2.data(), gp.data(), L, B, T);
    qkv_backward(ctx, gdp.data(), g0.data(), g1.data(), g2.data(), gp.data(), L, B, T);
    EXPECT_LT(test::rel_error(download(o0), outs[0]), kBf16) << L.width;
    EXPECT_LT(test::rel_error(download(o1), outs[1]), kBf16) << L.width;
    EXPECT_LT(test::rel_error(download(o2), outs[2]), kBf16) << L.width;
    EXPECT_TRUE(close_matrix(download(o0), outs[0], (size_t)L.heads[0] * D)) << L.width;
    EXPECT_TRUE(close_matrix(download(o1), outs[1], (size_t)L.heads[1] * D)) << L.width;
    EXPECT_TRUE(close_matrix(download(o2), outs[2], (size_t)L.heads[2] * D)) << L.width;
    // At a position offset (generation's decode step): RoPE's angles from t0 on.
    Vec shifted[3];
    for (int s = 0; s < 3; s++) shifted[s] = Vec(outs[s].size());
    qkv_forward(cpu, shifted[0].data(), shifted[1].data(), shifted[2].data(), proj.data(), L, B, T, 500);
    auto s0 = poisoned(outs[0].size()), s1 = poisoned(outs[1].size()), s2 = poisoned(outs[2].size());
    qkv_forward(ctx, s0.data(), s1.data(), s2.data(), gp.data(), L, B, T, 500);
    EXPECT_LT(test::rel_error(download(s0), shifted[0]), kBf16) << L.width;
    EXPECT_LT(test::rel_error(download(s1), shifted[1]), kBf16) << L.width;
    // Every used column of every row (the pitch's padding is not the op's to write).
    const Vec got = download(gdp);
    Vec used_got, used_want;
    for (int n = 0; n < N; n++)
      for (int c = 0; c < L.width; c++)
        used_got.push_back(got[(size_t)n * L.pitch + c]), used_want.push_back(dproj[(size_t)n * L.pitch + c]);
    EXPECT_LT(test::rel_error(used_got, used_want), kBf16) << L.width;
    EXPECT_TRUE(close_matrix(used_got, used_want, L.width)) << L.width;
  }
}

struct AttentionCase { int B, T, H, Hkv, D; };
class GpuAttention : public Gpu, public ::testing::WithParamInterface<AttentionCase> {};

// Every version of the kernels that runs on this GPU (the mma.sync ones; Hopper's on sm_90),
// against the CPU in double on the same bf16 inputs. The reference backward reads the
// output rounded to bf16, as the GPU stores it. P and dS pass through bf16 on the way into
// the products (as in every flash attention), so gradients get a looser absolute part than
// the output, still far below the error of a wrong row (≈ rms).
// More than any attention backward takes from the scratch (fp32 dQ sums, two statistics per
// row, counters; rows padded to whole 128-key tiles), so poisoning it that large means the
// backward runs on poisoned memory instead of growing a fresh, zeroed allocation.
size_t attention_scratch_bound(int B, int T, int H, int D) {
  const size_t rows = (size_t)B * H * ((T + 127) / 128 * 128);
  return sizeof(float) * (rows * D + 2 * rows) + sizeof(int) * (2 + rows / 64);
}

TEST_P(GpuAttention, ForwardAndBackwardMatchTheCpu) {
  const auto [B, T, H, Hkv, D] = GetParam();
  const size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * Hkv * D;
  // Scores of a realistic spread (|q·k|/√D up to a few units), so softmax is neither flat nor one-hot.
  Vec q = random(nq, 2.0), k = random(nk, 2.0), v = random(nk), dout = random(nq);
  Vec out(nq), lse((size_t)B * H * T), dq(nq), dk(nk), dv(nk);
  attention_forward(cpu, out.data(), lse.data(), q.data(), k.data(), v.data(), B, T, H, Hkv, D);
  Vec out_bf16 = out;
  for (double& x : out_bf16) x = to_float(to_bf16((float)x));
  attention_backward(cpu, dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(), out_bf16.data(),
                     lse.data(), B, T, H, Hkv, D);
  auto at = [&](int heads) {
    return [=](size_t i) {
      return fmt::format("(b {}, t {}, h {}, d {})", i / ((size_t)T * heads * D), i / (heads * D) % T, i / D % heads,
                         i % D);
    };
  };
  auto at_lse = [=](size_t i) { return fmt::format("(b {}, h {}, t {})", i / ((size_t)H * T), i / T % H, i % T); };
  // The kernels round P and dS to bf16 (relative error ≤ 2^-9) before the products, so a
  // gradient element is off by up to 2^-9 of the sum of its terms' magnitudes. Where the terms
  // cancel (a row with two keys: dS₀ = −dS₁), that is far above the bound from the whole
  // tensor's rms. Each element's own sum, with a factor 2 to spare: dq = Σₛ dS·k, dk = Σₜ dS·q,
  // dv = Σₜ P·dO over the heads sharing a kv head.
  const int group = H / Hkv;
  const double scale = 1.0 / std::sqrt((double)D);
  auto qrow = [&](int b, int t, int h) { return &q[(((size_t)b * T + t) * H + h) * D]; };
  auto kvrow = [&](const Vec& x, int b, int s, int kvh) { return &x[(((size_t)b * T + s) * Hkv + kvh) * D]; };
  auto dot = [&](const double* x, const double* y) {
    double sum = 0;
    for (int d = 0; d < D; d++) sum += x[d] * y[d];
    return sum;
  };
  auto p_ds = [&](int b, int h, int t, int s) {  // P and dS of query t, key s, as the CPU backward has them
    const size_t row = (((size_t)b * T + t) * H + h) * D;
    const double p = std::exp(dot(qrow(b, t, h), kvrow(k, b, s, h / group)) * scale - lse[((size_t)b * H + h) * T + t]);
    const double dp = dot(&dout[row], kvrow(v, b, s, h / group)), rowdot = dot(&dout[row], &out_bf16[row]);
    return std::pair{p, p * (dp - rowdot) * scale};
  };
  constexpr double kRounding = 2.0 / 512;
  auto slack_dq = [&](size_t i) {
    const int d = i % D, h = i / D % H, t = i / ((size_t)H * D) % T, b = i / ((size_t)T * H * D);
    double sum = 0;
    for (int s = 0; s <= t; s++) sum += std::fabs(p_ds(b, h, t, s).second * kvrow(k, b, s, h / group)[d]);
    return kRounding * sum;
  };
  auto slack_kv = [&](bool is_dv) {
    return [&, is_dv](size_t i) {
      const int d = i % D, kvh = i / D % Hkv, s = i / ((size_t)Hkv * D) % T, b = i / ((size_t)T * Hkv * D);
      double sum = 0;
      for (int h = kvh * group; h < (kvh + 1) * group; h++)
        for (int t = s; t < T; t++) {
          const auto [p, ds] = p_ds(b, h, t, s);
          const size_t row = (((size_t)b * T + t) * H + h) * D;
          sum += is_dv ? p * std::fabs(dout[row + d]) : std::fabs(ds * q[row + d]);
        }
      return kRounding * sum;
    };
  };
  auto gq = upload(q), gk = upload(k), gv = upload(v), gdo = upload(dout);
  int versions = 0;
  // mma.sync; Hopper's in the deterministic order and in arrival order; Hopper's, a block per tile.
  const std::pair<int, bool> runs[] = {{1, true}, {2, true}, {2, false}, {3, true}};
  for (const auto& [version, deterministic] : runs) {
    ctx.cuda->attention_version = version;
    ctx.cuda->deterministic = deterministic;
    auto gout = poisoned(nq), gdq = poisoned(nq), gdk = poisoned(nk), gdv = poisoned(nk);
    Buffer<float> glse(ctx, lse.size());
    try {
      attention_forward(ctx, gout.data(), glse.data(), gq.data(), gk.data(), gv.data(), B, T, H, Hkv, D);
    } catch (const std::invalid_argument& e) {  // Hopper's kernels on another GPU, or D = 32
      continue;
    }
    poison_scratch(attention_scratch_bound(B, T, H, D));
    attention_backward(ctx, gdq.data(), gdk.data(), gdv.data(), gdo.data(), gq.data(), gk.data(), gv.data(),
                       gout.data(), glse.data(), B, T, H, Hkv, D);
    versions++;
    SCOPED_TRACE(version == 1 ? "mma.sync kernels"
                 : version == 3 ? "Hopper kernels, a block per tile"
                 : deterministic ? "Hopper kernels, deterministic" : "Hopper kernels, arrival order");
    EXPECT_TRUE(close_elementwise(download(gout), out, 2e-2, 2e-2, at(H))) << "out";
    EXPECT_TRUE(close_elementwise(download(glse), lse, 1e-3, 1e-3, at_lse)) << "lse";
    EXPECT_TRUE(close_elementwise(download(gdq), dq, 3e-2, 6e-2, at(H), slack_dq)) << "dq";
    EXPECT_TRUE(close_elementwise(download(gdk), dk, 3e-2, 6e-2, at(Hkv), slack_kv(false))) << "dk";
    EXPECT_TRUE(close_elementwise(download(gdv), dv, 3e-2, 6e-2, at(Hkv), slack_kv(true))) << "dv";
    EXPECT_LT(test::rel_error(download(gdq), dq), kBf16);
    EXPECT_LT(test::rel_error(download(gdk), dk), kBf16);
    EXPECT_LT(test::rel_error(download(gdv), dv), kBf16);
  }
  ctx.cuda->attention_version = 0;
  ctx.cuda->deterministic = true;
  EXPECT_GE(versions, 1);
}

INSTANTIATE_TEST_SUITE_P(Shapes, GpuAttention,
                         ::testing::Values(AttentionCase{2, 1, 3, 3, 64},      // one position
                                           AttentionCase{3, 7, 2, 1, 64},      // a few positions, MQA
                                           AttentionCase{2, 64, 4, 4, 64},     // exactly one query tile
                                           AttentionCase{2, 128, 4, 4, 64},    // whole tiles
                                           AttentionCase{1, 200, 34, 34, 64},  // T6-small's 34 heads, a partial tile
                                           AttentionCase{1, 77, 47, 47, 64},   // T6-medium's 47 heads, one partial tile
                                           AttentionCase{2, 190, 6, 2, 64},    // GQA, 3 query heads per KV head
                                           AttentionCase{1, 300, 8, 4, 64},    // GQA with 4 KV heads
                                           AttentionCase{1, 130, 5, 1, 64},    // MQA
                                           AttentionCase{2, 100, 3, 3, 128},   // head_dim 128
                                           AttentionCase{1, 1000, 4, 2, 128},  // head_dim 128, GQA, partial tiles
                                           AttentionCase{2, 129, 4, 2, 32},    // head_dim 32 (mma.sync only), GQA
                                           AttentionCase{1, 1024, 2, 2, 64},   // the paper's T
                                           AttentionCase{1, 2048, 1, 1, 64},   // one head, longer
                                           AttentionCase{1, 4096, 1, 1, 64},   // the longest rows
                                           AttentionCase{2, 520, 47, 47, 64},  // 470 query tiles: several per block
                                           AttentionCase{2, 1000, 16, 4, 128}, // and with D 128 and GQA
                                           AttentionCase{4, 600, 12, 4, 64},   // and with GQA
                                           AttentionCase{3, 260, 48, 12, 64}), // 144 sequence-heads: more than SMs
                         [](const auto& info) {
                           const AttentionCase& c = info.param;
                           return fmt::format("B{}_T{}_H{}_Hkv{}_D{}", c.B, c.T, c.H, c.Hkv, c.D);
                         });

// The deterministic mode (the default): dQ's sums in a fixed order, so two backward passes
// give the same bits; Hopper's kernels, where they run (the mma.sync ones use atomics).
TEST_F(Gpu, AttentionBackwardRepeatsBitwise) {
  for (const int D : {64, 128}) {  // three dQ writers a block, and two
    SCOPED_TRACE(fmt::format("head_dim {}", D));
    // 256 key tiles: more than an H200's 132 SMs, so persistent blocks take several each.
    const int B = 16, T = 1024, H = 6, Hkv = 2;
    const size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * Hkv * D;
    auto q = upload(random(nq, 2.0)), k = upload(random(nk, 2.0)), v = upload(random(nk)), dout = upload(random(nq));
    Buffer<bf16> out(ctx, nq);
    Buffer<float> lse(ctx, (size_t)B * H * T);
    try {
      ctx.cuda->attention_version = 2;
      attention_forward(ctx, out.data(), lse.data(), q.data(), k.data(), v.data(), B, T, H, Hkv, D);
    } catch (const std::invalid_argument& e) {
      ctx.cuda->attention_version = 0;
      GTEST_SKIP() << "Hopper's attention kernels do not run on this GPU: " << e.what();
    }
    std::vector<Vec> runs;
    for (int run = 0; run < 3; run++) {
      poison_scratch(attention_scratch_bound(B, T, H, D));
      auto dq = poisoned(nq), dk = poisoned(nk), dv = poisoned(nk);  // (an unwritten row cannot repeat)
      attention_backward(ctx, dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(), out.data(),
                         lse.data(), B, T, H, Hkv, D);
      Vec all = download(dq), kk = download(dk), vv = download(dv);
      all.insert(all.end(), kk.begin(), kk.end());
      all.insert(all.end(), vv.begin(), vv.end());
      runs.push_back(all);
    }
    ctx.cuda->attention_version = 0;
    EXPECT_TRUE(runs[1] == runs[0]);
    EXPECT_TRUE(runs[2] == runs[0]);
  }
}

TEST_F(Gpu, SwigluForwardBackward) {
  // 16-byte accesses (a partial block of threads: F 2056), bf16 pairs, single features.
  for (const int F : {2056, 2730, 1365}) {
    SCOPED_TRACE(fmt::format("F {}", F));
    const int N = 99;
    Vec fc = random((size_t)N * 2 * F, 4.0), dout = random((size_t)N * F), out(N * F), dfc(fc.size());
    swiglu_forward(cpu, out.data(), fc.data(), N, F);
    swiglu_backward(cpu, dfc.data(), dout.data(), fc.data(), N, F);
    auto gfc = upload(fc), gdo = upload(dout);
    auto gout = poisoned(out.size()), gdfc = poisoned(dfc.size());
    swiglu_forward(ctx, gout.data(), gfc.data(), N, F);
    swiglu_backward(ctx, gdfc.data(), gdo.data(), gfc.data(), N, F);
    EXPECT_LT(test::rel_error(download(gout), out), kBf16);
    EXPECT_LT(test::rel_error(download(gdfc), dfc), kBf16);
    EXPECT_TRUE(close_matrix(download(gout), out, F));
    EXPECT_TRUE(close_matrix(download(gdfc), dfc, 2 * F));
  }
}

TEST_F(Gpu, ClassifierLossAndGradient) {
  for (int V : {50304, 257}) {
    const int N = 64, n_valid = 60;
    std::vector<int32_t> targets(N);
    for (int n = 0; n < N; n++) targets[n] = n < n_valid ? (int32_t)(rng() % V) : -1;
    Vec logits = random((size_t)N * V, 8.0), losses(N), dlogits = logits;
    classifier_forward_backward(cpu, dlogits.data(), losses.data(), targets.data(), N, V, 100, 0.5);
    Buffer<int32_t> gt(ctx, N);
    gt.from_host(targets.data(), N);
    auto gl = upload(logits);
    Buffer<float> gloss(ctx, N);
    classifier_forward_backward(ctx, gl.data(), gloss.data(), gt.data(), N, V, 100, 0.5);
    EXPECT_LT(test::rel_error(download(gloss), losses), 1e-5) << V;  // fp32 statistics on exact inputs
    EXPECT_LT(test::rel_error(download(gl), dlogits), kBf16) << V;
    EXPECT_TRUE(close_matrix(download(gl), dlogits, V)) << V;
  }
}

// A weight into its padded bf16 compute copy, and the padded gradient added back: every used
// element exact (bf16 inputs) or within fp32 rounding, and the pitch's padding left alone.
TEST_F(Gpu, PitchedCopiesMatchTheCpu) {
  const int rows = 300, cols = 771, pitch = 776;
  const Vec w = random((size_t)rows * cols), g = random((size_t)rows * pitch), acc0 = random((size_t)rows * cols);
  Vec copy((size_t)rows * pitch, 0.0), acc = acc0;
  copy_to_pitch(cpu, copy.data(), w.data(), rows, cols, pitch);
  add_from_pitch(cpu, acc.data(), g.data(), rows, cols, pitch);
  auto gw = upload_f32(w), gg = upload_f32(g), gacc = upload_f32(acc0);
  auto gcopy = poisoned(copy.size());
  copy_to_pitch(ctx, gcopy.data(), gw.data(), rows, cols, pitch);
  add_from_pitch(ctx, gacc.data(), gg.data(), rows, cols, pitch);
  const Vec got = download(gcopy);
  size_t wrong = 0, touched = 0;
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < pitch; c++) {
      const double x = got[(size_t)r * pitch + c];
      if (c < cols) wrong += x != copy[(size_t)r * pitch + c];
      else touched += !std::isnan(x);
    }
  EXPECT_EQ(wrong, 0u) << "elements of the copy differ from the CPU's";
  EXPECT_EQ(touched, 0u) << "padding elements written";
  EXPECT_TRUE(close_elementwise(download(gacc), acc, kFp32, kFp32, [&](size_t i) {
    return fmt::format("(row {}, column {})", i / cols, i % cols);
  }));
}

TEST_F(Gpu, OptimizerOpsInFp32) {
  const size_t n = 1000003;
  Vec p = random(n), g = random(n, 0.01), m = random(n, 0.001), v = random(n, 1e-4);
  for (double& x : v) x = std::abs(x);
  auto gp = upload_f32(p), gg = upload_f32(g), gm = upload_f32(m), gv = upload_f32(v);
  EXPECT_NEAR(sum_squares(ctx, gg.data(), n), sum_squares(cpu, g.data(), n), 1e-9 * sum_squares(cpu, g.data(), n));
  EXPECT_NEAR(sum(ctx, gp.data(), n), sum(cpu, p.data(), n), 1e-6);
  auto w = poisoned(n);
  adamw_update(cpu, p.data(), g.data(), m.data(), v.data(), n, 1e-3, 0.9, 0.95, 1e-8, 0.1, 0.19, 0.0975, 0.7);
  adamw_update(ctx, gp.data(), gg.data(), gm.data(), gv.data(), n, 1e-3, 0.9, 0.95, 1e-8, 0.1, 0.19, 0.0975, 0.7, w.data());
  EXPECT_LT(test::rel_error(download(gp), p), kFp32);
  EXPECT_LT(test::rel_error(download(gm), m), kFp32);
  EXPECT_LT(test::rel_error(download(gv), v), kFp32);
  EXPECT_LT(test::rel_error(download(w), p), 4e-3);  // the bf16 copy of the new weights
  scale(ctx, gp.data(), -0.5, n);
  scale(cpu, p.data(), -0.5, n);
  EXPECT_LT(test::rel_error(download(gp), p), kFp32);
}

// Generation's cache and decode attention against the CPU in double on the same bf16
// projection rows: the records kv_cache_store writes (A, its zero padding, B rotated; or the
// dense slices), stored all at once and one position at a time, and the decoded rows, element
// by element, at contexts that leave a split of one position, for TPA (T6-small's 34 heads;
// the authors' benchmark ranks 1/1 with 32 heads; D 128), GQA, MHA and MQA.
struct DecodeCase { const char* name; int H, Hkv, Rk, Rv, D; };
class GpuDecode : public Gpu, public ::testing::WithParamInterface<DecodeCase> {};

TEST_P(GpuDecode, CacheAndAttentionMatchTheCpu) {
  const DecodeCase c = GetParam();
  QkvLayout L;
  L.D = c.D;
  const int ranks[3] = {0, c.Rk, c.Rv}, heads[3] = {c.H, c.Hkv, c.Hkv};
  int col = 0;
  for (int s = 0; s < 3; s++) {
    L.heads[s] = heads[s], L.rank[s] = ranks[s];
    if (ranks[s]) L.a[s] = col, col += heads[s] * ranks[s], L.b[s] = col, col += ranks[s] * c.D;
    else L.dense[s] = col, col += heads[s] * c.D;
  }
  L.width = col, L.pitch = (col + 7) / 8 * 8;
  for (const int B : {1, 3})
    for (const int len : {1, 7, 511, 513, 4097}) {
      SCOPED_TRACE(fmt::format("batch {}, {} positions", B, len));
      const int context = len + 3, kw = kv_record(L, 1), vw = kv_record(L, 2);
      std::vector<double> proj = random((size_t)B * len * L.pitch, 2.0), q = random((size_t)B * c.H * c.D, 2.0);
      std::vector<double> kc((size_t)B * context * kw, 0.0), vc((size_t)B * context * vw, 0.0), want((size_t)B * c.H * c.D);
      kv_cache_store(cpu, kc.data(), vc.data(), proj.data(), L, B, len, 0, context);
      attention_decode(cpu, want.data(), q.data(), kc.data(), vc.data(), L, B, len, context);

      // The last position written on its own, as decode appends it; the rest at once.
      std::vector<double> head_rows, last_rows;
      for (int b = 0; b < B; b++)
        for (int t = 0; t < len; t++) {
          auto& to = t == len - 1 ? last_rows : head_rows;
          to.insert(to.end(), proj.begin() + ((size_t)b * len + t) * L.pitch, proj.begin() + ((size_t)b * len + t + 1) * L.pitch);
        }
      auto gk = poisoned(kc.size()), gv = poisoned(vc.size()), gq = upload(q), gout = poisoned(want.size());
      auto glast = upload(last_rows);
      if (len > 1) {
        auto ghead = upload(head_rows);
        kv_cache_store(ctx, gk.data(), gv.data(), ghead.data(), L, B, len - 1, 0, context);
      }
      kv_cache_store(ctx, gk.data(), gv.data(), glast.data(), L, B, 1, len - 1, context);
      attention_decode(ctx, gout.data(), gq.data(), gk.data(), gv.data(), L, B, len, context);

      // Only the written positions of the caches (the rest stays poisoned, unread).
      for (int side = 1; side < 3; side++) {
        const int w = side == 1 ? kw : vw;
        const std::vector<double> all = download(side == 1 ? gk : gv), &ref = side == 1 ? kc : vc;
        std::vector<double> got, exp;
        for (int b = 0; b < B; b++)
          for (size_t i = (size_t)b * context * w; i < ((size_t)b * context + len) * w; i++)
            got.push_back(all[i]), exp.push_back(ref[i]);
        EXPECT_TRUE(close_elementwise(got, exp, 1e-2, 1e-3, [&](size_t i) {
          return fmt::format("(b {}, position {}, number {})", i / ((size_t)len * w), i / w % len, i % w);
        })) << (side == 1 ? "k cache" : "v cache");
      }
      EXPECT_TRUE(close_elementwise(download(gout), want, 2e-2, 2e-2, [&](size_t i) {
        return fmt::format("(b {}, h {}, d {})", i / ((size_t)c.H * c.D), i / c.D % c.H, i % c.D);
      })) << "out";
    }
}

INSTANTIATE_TEST_SUITE_P(Caches, GpuDecode,
                         ::testing::Values(DecodeCase{"tpa_small", 34, 34, 2, 2, 64},
                                           DecodeCase{"tpa_flashtpa_shape", 32, 32, 1, 1, 64},
                                           DecodeCase{"tpa_mixed_ranks_d128", 8, 8, 3, 1, 128},
                                           DecodeCase{"gqa", 6, 2, 0, 0, 64},
                                           DecodeCase{"mha_d128", 4, 4, 0, 0, 128},
                                           DecodeCase{"mqa_d32", 5, 1, 0, 0, 32}),
                         [](const auto& info) { return std::string(info.param.name); });

// Generation on the GPU: the prompt through forward() into the cache, then one token at a time
// through decode(), gives the full forward pass's logits at every position (bf16 on both
// paths: relative error norm < 2e-2), for every variant, with prompts of length 1 and
// block_size − 1, two sequences at once.
class GpuGeneration : public Gpu, public ::testing::WithParamInterface<Attention> {};

TEST_P(GpuGeneration, CachedEqualsTheFullForward) {
  const ModelConfig c = small_model(GetParam(), 70);
  const int L = c.block_size;
  const std::vector<float> params = live_weights(c, 11);
  std::vector<std::vector<int32_t>> seqs(2, std::vector<int32_t>(L));
  for (auto& s : seqs)
    for (int32_t& t : s) t = (int32_t)(rng() % c.vocab_size);
  std::vector<std::unique_ptr<T6<bf16, float>>> full;
  for (int b = 0; b < 2; b++) {
    full.push_back(std::make_unique<T6<bf16, float>>(c, ctx, 1, L));
    full[b]->params_from_host(params);
    full[b]->forward(seqs[b].data(), nullptr);
  }
  for (const int prompt : {1, L - 1}) {
    for (int t = 0; t < prompt; t++) seqs[1][t] = seqs[0][t];  // both continue the same prompt
    full[1]->forward(seqs[1].data(), nullptr);
    T6<bf16, float> model(c, ctx, 1, prompt);
    model.params_from_host(params);
    model.forward(seqs[0].data(), nullptr);
    KvCache<bf16> cache = model.make_cache(2, L);
    model.store_prompt(cache);
    for (int t = prompt; t < L; t++) {
      const int32_t next[2] = {seqs[0][t], seqs[1][t]};
      const std::vector<double> got = model.decode(next, cache);
      for (int b = 0; b < 2; b++) {
        const std::vector<double> row(got.begin() + b * c.vocab_size, got.begin() + (b + 1) * c.vocab_size);
        EXPECT_LT(test::rel_error(row, full[b]->logits_at(t)), 2e-2)
            << "prompt " << prompt << ", position " << t << ", sequence " << b;
      }
    }
  }
}

// Recorded decode steps (T6::decode_step) follow one model through changes of batch: 2, then 1,
// then 2 again, each decoding across a block of 64 positions; every position's logits equal the
// full forward's. (The second batch-2 cache may reuse the first one's addresses while the
// decode buffers moved: a recording kept across the change would read freed memory.)
TEST_F(Gpu, DecodeReplaysFollowBatchChanges) {
  const ModelConfig c = small_model(Attention::tpa, 70);
  const int L = c.block_size;
  const std::vector<float> params = live_weights(c, 13);
  std::vector<int32_t> seq(L);
  for (int32_t& t : seq) t = (int32_t)(rng() % c.vocab_size);
  T6<bf16, float> full(c, ctx, 1, L);
  full.params_from_host(params);
  full.forward(seq.data(), nullptr);
  T6<bf16, float> model(c, ctx, 1, 1);
  model.params_from_host(params);
  model.forward(seq.data(), nullptr);
  for (const int batch : {2, 1, 2}) {
    KvCache<bf16> cache = model.make_cache(batch, L);
    model.store_prompt(cache);
    for (int t = 1; t < L; t++) {
      const std::vector<int32_t> next(batch, seq[t]);
      const std::vector<double> got = model.decode(next.data(), cache);
      for (int b = 0; b < batch; b++) {
        const std::vector<double> row(got.begin() + (size_t)b * c.vocab_size, got.begin() + (size_t)(b + 1) * c.vocab_size);
        EXPECT_LT(test::rel_error(row, full.logits_at(t)), 2e-2) << "batch " << batch << ", position " << t;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, GpuGeneration,
                         ::testing::Values(Attention::tpa, Attention::tpa_kvonly, Attention::mha, Attention::gqa,
                                           Attention::mqa),
                         [](const auto& info) { return std::string(attention_name(info.param)); });

// One training step of a small model of each variant: bf16 GPU against fp32 CPU on the same
// weights (random everywhere, so no gradient is trivially zero) and tokens.
class GpuModel : public Gpu, public ::testing::WithParamInterface<Attention> {};

TEST_P(GpuModel, OneStepMatchesTheCpu) {
  const ModelConfig c = small_model(GetParam(), 160);
  const int B = 3, T = 160;
  T6<float> ref(c, cpu, B, T);
  T6<bf16, float> gpu(c, ctx, B, T);
  const std::vector<float> params = live_weights(c, 7);
  ref.params_from_host(params);
  gpu.params_from_host(params);
  std::vector<int32_t> tokens(B * T), targets(B * T);
  for (int i = 0; i < B * T; i++) tokens[i] = (int32_t)(rng() % c.vocab_size), targets[i] = (int32_t)(rng() % c.vocab_size);
  targets[5] = -1;
  ref.zero_grads();
  gpu.zero_grads();
  const double want = ref.forward(tokens.data(), targets.data(), 1.0);
  const double got = gpu.forward(tokens.data(), targets.data(), 1.0);
  ref.backward();
  gpu.backward();
  EXPECT_NEAR(got, want, 1e-2 * want);
  const std::vector<float> gr = ref.grads_to_host(), gg = gpu.grads_to_host();
  EXPECT_LT(test::rel_error(gg, gr), 2e-2);
  for (const ParamInfo& p : ref.layout.params) {  // and each tensor on its own, loosely
    const std::vector<float> a(gg.begin() + p.offset, gg.begin() + p.offset + p.size),
        b(gr.begin() + p.offset, gr.begin() + p.offset + p.size);
    EXPECT_LT(test::rel_error(a, b), 5e-2) << p.name;
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, GpuModel,
                         ::testing::Values(Attention::tpa, Attention::tpa_kvonly, Attention::mha, Attention::gqa,
                                           Attention::mqa),
                         [](const auto& info) { return std::string(attention_name(info.param)); });

// t6-eval --device cuda: the same windows through the bf16 model give the fp32 CPU's loss
// within bf16's accuracy.
TEST_F(Gpu, EvaluationOnTheGpuMatchesTheCpu) {
  WeightsAndConfig w;
  w.config = load_config(test::source_path("configs/demo.yaml"));
  w.params = init_params(w.config.model, make_layout(w.config.model), 5);
  const std::vector<std::string> data = {test::source_path("data/sample/val_*.h5")};
  const EvalResult cpu_r = evaluate_data(w, data, 8), gpu_r = evaluate_data(w, data, 8, ctx);
  EXPECT_EQ(gpu_r.windows, cpu_r.windows);
  EXPECT_NEAR(gpu_r.loss, cpu_r.loss, 1e-2 * cpu_r.loss);
}

TEST_F(Gpu, RecomputationKeepsLessWithTheSameResults) {
  ModelConfig c;
  c.n_layer = 2, c.n_embd = 256, c.n_head = 4, c.head_dim = 64, c.vocab_size = 512, c.block_size = 128;
  const int B = 4, T = 128;
  T6<bf16, float> stored(c, ctx, B, T), recomputed(c, ctx, B, T, /*recompute=*/true);
  std::vector<float> params = init_params(c, stored.layout, 11);
  std::uniform_real_distribution<float> u(-0.02f, 0.02f);
  for (float& p : params) p += u(rng);
  stored.params_from_host(params);
  recomputed.params_from_host(params);
  std::vector<int32_t> tokens(B * T), targets(B * T);
  for (int i = 0; i < B * T; i++) tokens[i] = (int32_t)(rng() % 512), targets[i] = (int32_t)(rng() % 512);
  stored.zero_grads();
  recomputed.zero_grads();
  // The forward pass is deterministic, and so (in the default deterministic mode) is backward
  // on Hopper; elsewhere attention's dQ sums with atomics.
  EXPECT_EQ(stored.forward(tokens.data(), targets.data(), 1.0), recomputed.forward(tokens.data(), targets.data(), 1.0));
  stored.backward();
  recomputed.backward();
  EXPECT_LT(test::rel_error(recomputed.grads_to_host(), stored.grads_to_host()), 1e-3);
  EXPECT_LT(recomputed.activation_bytes(), 0.95 * stored.activation_bytes());
}

// Training runs through the real loop on the shipped sample.
Config sample_run(const std::string& out, const std::string& device, std::vector<std::string> extra = {}) {
  std::vector<std::string> o = {"train.out_dir=" + out, "train.device=" + device, "model.n_layer=2",
                                "model.n_embd=128",     "model.n_head=4",         "model.head_dim=32",
                                "model.block_size=128", "train.batch_size=8",     "train.max_iters=50",
                                "train.eval_interval=0", "optim.warmup_iters=5",  "train.log_interval=10",
                                "sample.max_new_tokens=0", "data.shuffle=false"};
  o.insert(o.end(), extra.begin(), extra.end());
  return load_config(test::source_path("configs/demo.yaml"), o);
}

TEST_F(Gpu, FiftyStepsTrackTheCpuCurve) {
  const TrainResult g = train(sample_run(test::temp_dir("gpu_curve"), "cuda"));
  const TrainResult c = train(sample_run(test::temp_dir("cpu_curve"), "cpu"));
  ASSERT_EQ(g.steps.size(), 50u);
  ASSERT_EQ(c.steps.size(), 50u);
  for (size_t i = 0; i < 50; i++)
    EXPECT_NEAR(g.steps[i].loss, c.steps[i].loss, 0.02 * c.steps[i].loss + 0.01) << "step " << i;
  EXPECT_LT(g.steps.back().loss, 0.75 * g.steps.front().loss);  // and it learns
  EXPECT_NEAR(g.final_val_loss, c.final_val_loss, 0.02 * c.final_val_loss);
}

// train.deterministic (the default): two runs of the same config give the same bits, step by
// step and in the final weights (on Hopper, where every reduction has a fixed order).
TEST_F(Gpu, DeterministicRunsRepeatBitwise) {
  int major = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
  if (major != 9) GTEST_SKIP() << "bitwise repeatable training needs Hopper's attention kernels (sm_90)";
  const std::string a = test::temp_dir("det_a"), b = test::temp_dir("det_b");
  const std::vector<std::string> extra = {"train.max_iters=20", "model.head_dim=64", "model.n_head=2"};
  const TrainResult ra = train(sample_run(a, "cuda", extra)), rb = train(sample_run(b, "cuda", extra));
  ASSERT_EQ(ra.steps.size(), 20u);
  ASSERT_EQ(rb.steps.size(), 20u);
  for (size_t i = 0; i < 20; i++) {
    EXPECT_EQ(ra.steps[i].loss, rb.steps[i].loss) << "step " << i;
    EXPECT_EQ(ra.steps[i].grad_norm, rb.steps[i].grad_norm) << "step " << i;
  }
  EXPECT_TRUE(test::flat_weights(a + "/model.safetensors") == test::flat_weights(b + "/model.safetensors"));
}

// A checkpoint's copy runs beside the work queued after it (Context::snapshot_to_host), and
// snapshot_fence orders what comes next after it: a buffer overwritten right after the fence
// (a fast memset behind a copy of tens of milliseconds) still reaches the host as it was. And
// the copy follows the work queued before it: behind a compute stream held for 200 ms, a
// memset queued before the snapshot is what the host gets.
TEST_F(Gpu, SnapshotsKeepTheirPlaceInTheStream) {
  const size_t n = size_t{128} << 20;  // 512 MB of floats
  std::vector<float> want(n);
  for (size_t i = 0; i < n; i++) want[i] = (float)(i % 1009 + 1);
  Buffer<float> x(ctx, n);
  x.from_host(want.data(), n);
  float* host = static_cast<float*>(ctx.alloc_pinned(n * sizeof(float)));
  ctx.snapshot_to_host(host, x.data(), n * sizeof(float));
  ctx.snapshot_fence();
  x.zero();
  ctx.snapshot_wait();
  size_t bad = 0;
  for (size_t i = 0; i < n; i++)
    if (host[i] != want[i] && bad++ < 5) ADD_FAILURE() << "element " << i << ": " << host[i] << ", want " << want[i];
  EXPECT_EQ(bad, 0u);
  std::vector<float> after(n);
  x.to_host(after.data(), n);  // and the memset did run after it
  EXPECT_EQ(*std::max_element(after.begin(), after.end()), 0.f);

  x.from_host(want.data(), n);
  auto hold = [](void*) { std::this_thread::sleep_for(std::chrono::milliseconds(200)); };
  ASSERT_EQ(cudaLaunchHostFunc(ctx.cuda->stream, hold, nullptr), cudaSuccess);
  x.zero();
  ctx.snapshot_to_host(host, x.data(), n * sizeof(float));
  ctx.snapshot_wait();
  bad = 0;
  for (size_t i = 0; i < n; i++)
    if (host[i] != 0.f && bad++ < 5) ADD_FAILURE() << "element " << i << ": " << host[i] << ", want 0 (the memset before)";
  EXPECT_EQ(bad, 0u);
  ctx.release_pinned(host);
}

// A checkpoint taken mid-run (copied beside the next step, whose update waits for the copy)
// holds exactly its step's state: resuming from it repeats the rest of the run bitwise. The
// copies start 300 ms late (T6_TEST_SNAPSHOT_DELAY_MS), long after the next step's update is
// queued: without the fence that update would overwrite the parameters first.
TEST_F(Gpu, ResumingAMidRunCheckpointRepeatsTheRunBitwise) {
  int major = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
  if (major != 9) GTEST_SKIP() << "bitwise repeatable training needs Hopper's attention kernels (sm_90)";
  const std::string a = test::temp_dir("mid_a"), b = test::temp_dir("mid_b");
  const std::vector<std::string> extra = {"train.max_iters=12", "model.head_dim=64", "model.n_head=2",
                                          "checkpoint.interval=4", "checkpoint.keep=0"};
  setenv("T6_TEST_SNAPSHOT_DELAY_MS", "300", 1);
  const TrainResult straight = train(sample_run(a, "cuda", extra));
  unsetenv("T6_TEST_SNAPSHOT_DELAY_MS");
  const TrainResult resumed = train(sample_run(b, "cuda", extra), a + "/ckpt_8");
  ASSERT_EQ(straight.steps.size(), 12u);
  ASSERT_EQ(resumed.steps.size(), 4u);
  for (size_t i = 0; i < 4; i++) {
    EXPECT_EQ(resumed.steps[i].loss, straight.steps[8 + i].loss) << "step " << 8 + i;
    EXPECT_EQ(resumed.steps[i].grad_norm, straight.steps[8 + i].grad_norm) << "step " << 8 + i;
  }
  EXPECT_TRUE(test::flat_weights(a + "/model.safetensors") == test::flat_weights(b + "/model.safetensors"));
}

TEST_F(Gpu, CheckpointsMoveBetweenGpuAndCpu) {
  // 8 steps on one device against 4 on one and 4 more, resumed, on the other: the resumed
  // steps track the straight run within bf16 tolerance, in both directions.
  for (const auto& [first, second] : {std::pair<std::string, std::string>{"cuda", "cpu"}, {"cpu", "cuda"}}) {
    const std::string straight = test::temp_dir("straight_" + second), split = test::temp_dir("split_" + first);
    const TrainResult want = train(sample_run(straight, second, {"train.max_iters=8"}));
    train(sample_run(split, first, {"train.max_iters=4"}));
    const TrainResult got = train(sample_run(split, second, {"train.max_iters=8"}), "auto");
    ASSERT_EQ(got.steps.size(), 4u) << first << " → " << second;
    for (size_t i = 0; i < 4; i++)
      EXPECT_NEAR(got.steps[i].loss, want.steps[4 + i].loss, 0.02 * want.steps[4 + i].loss)
          << first << " → " << second << ", step " << 4 + i;
  }
}

}  // namespace
}  // namespace t6
