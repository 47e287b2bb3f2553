// Every op's backward against central finite differences of its forward, in double.
// The scalar objective is L = Σ out ⊙ w for fixed random w, so dL/dout = w.
#include <gtest/gtest.h>

#include <functional>
#include <random>

#include "kernels/ops.h"
#include "test_util.h"

namespace t6 {
namespace {

using Vec = std::vector<double>;
const Context ctx;

Vec random_vec(size_t n, std::mt19937_64& rng, double scale = 1.0) {
  std::uniform_real_distribution<double> u(-scale, scale);
  Vec v(n);
  for (double& x : v) x = u(rng);
  return v;
}

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); i++) s += a[i] * b[i];
  return s;
}

// Central differences of objective() with respect to every element of x.
Vec numeric_grad(Vec& x, const std::function<double()>& objective, double h = 1e-6) {
  Vec g(x.size());
  for (size_t i = 0; i < x.size(); i++) {
    const double saved = x[i];
    x[i] = saved + h;
    const double up = objective();
    x[i] = saved - h;
    const double down = objective();
    x[i] = saved;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

constexpr double kTol = 1e-6;

TEST(OpsGradient, Embedding) {
  std::mt19937_64 rng(1);
  const int N = 7, C = 5, V = 4;
  std::vector<int32_t> tokens = {0, 3, 1, 3, 3, 2, 0};  // repeats must add up
  Vec wte = random_vec(V * C, rng), w = random_vec(N * C, rng), out(N * C);
  auto f = [&] { embedding_forward(ctx, out.data(), tokens.data(), wte.data(), N, C); return dot(out, w); };
  Vec dwte(V * C, 0.0);
  embedding_backward(ctx, dwte.data(), w.data(), tokens.data(), N, C);
  EXPECT_LT(test::rel_error(dwte, numeric_grad(wte, f)), kTol);
}

TEST(OpsGradient, RmsNorm) {
  std::mt19937_64 rng(2);
  const int N = 4, C = 9;
  Vec x = random_vec(N * C, rng), w = random_vec(N * C, rng), out(N * C), rstd(N);
  auto f = [&] { rmsnorm_forward(ctx, out.data(), rstd.data(), x.data(), N, C, 1e-6); return dot(out, w); };
  f();
  Vec dx(N * C, 0.0);
  rmsnorm_backward(ctx, dx.data(), w.data(), x.data(), rstd.data(), N, C);
  EXPECT_LT(test::rel_error(dx, numeric_grad(x, f)), kTol);
}

TEST(OpsGradient, Matmul) {
  std::mt19937_64 rng(3);
  const int M = 5, K = 6, N = 3;
  Vec x = random_vec(M * K, rng), W = random_vec(N * K, rng), w = random_vec(M * N, rng), out(M * N);
  auto f = [&] { matmul_forward(ctx, out.data(), x.data(), W.data(), M, K, N); return dot(out, w); };
  Vec dx(M * K, 0.0), dW(N * K, 0.0);
  matmul_backward(ctx, dx.data(), dW.data(), w.data(), x.data(), W.data(), M, K, N, false);
  EXPECT_LT(test::rel_error(dx, numeric_grad(x, f)), kTol);
  EXPECT_LT(test::rel_error(dW, numeric_grad(W, f)), kTol);
}

TEST(OpsGradient, FactorContraction) {
  std::mt19937_64 rng(4);
  const int N = 3, H = 5, R = 3, D = 4;
  Vec a = random_vec(N * H * R, rng), b = random_vec(N * R * D, rng), w = random_vec(N * H * D, rng), out(N * H * D);
  auto f = [&] { factor_contract_forward(ctx, out.data(), a.data(), b.data(), N, H, R, D); return dot(out, w); };
  Vec da(a.size()), db(b.size());
  factor_contract_backward(ctx, da.data(), db.data(), w.data(), a.data(), b.data(), N, H, R, D);
  EXPECT_LT(test::rel_error(da, numeric_grad(a, f)), kTol);
  EXPECT_LT(test::rel_error(db, numeric_grad(b, f)), kTol);
}

TEST(OpsGradient, Rope) {
  std::mt19937_64 rng(5);
  const int B = 2, T = 5, rows = 3, D = 8;
  Vec x = random_vec(B * T * rows * D, rng), w = random_vec(x.size(), rng);
  auto f = [&] {
    Vec y = x;
    rope_forward(ctx, y.data(), B, T, rows, D);
    return dot(y, w);
  };
  Vec dx = w;
  rope_backward(ctx, dx.data(), B, T, rows, D);
  EXPECT_LT(test::rel_error(dx, numeric_grad(x, f)), kTol);
}

TEST(Ops, RopeMatchesTheSpecConvention) {
  // Position t = 3, D = 4: pair i rotates by θ = 3·10000^(−2i/4), as (x1·cos + x2·sin, −x1·sin + x2·cos).
  const int D = 4;
  Vec x(4 * D, 0.0);
  for (int d = 0; d < D; d++) x[3 * D + d] = d + 1.0;  // position 3 holds (1, 2, 3, 4)
  rope_forward(ctx, x.data(), 1, 4, 1, D);
  const double t0 = 3.0, t1 = 3.0 / 100.0;
  EXPECT_NEAR(x[3 * D + 0], 1 * std::cos(t0) + 3 * std::sin(t0), 1e-12);
  EXPECT_NEAR(x[3 * D + 1], 2 * std::cos(t1) + 4 * std::sin(t1), 1e-12);
  EXPECT_NEAR(x[3 * D + 2], -1 * std::sin(t0) + 3 * std::cos(t0), 1e-12);
  EXPECT_NEAR(x[3 * D + 3], -2 * std::sin(t1) + 4 * std::cos(t1), 1e-12);
}

struct AttentionShape { int B, T, H, Hkv, D; };
class AttentionGradient : public ::testing::TestWithParam<AttentionShape> {};

TEST_P(AttentionGradient, MatchesFiniteDifferences) {
  const auto [B, T, H, Hkv, D] = GetParam();
  std::mt19937_64 rng(6);
  Vec q = random_vec(B * T * H * D, rng), k = random_vec(B * T * Hkv * D, rng), v = random_vec(k.size(), rng);
  Vec w = random_vec(q.size(), rng), out(q.size()), att((size_t)B * H * T * T);
  auto f = [&] {
    attention_forward(ctx, out.data(), att.data(), q.data(), k.data(), v.data(), B, T, H, Hkv, D);
    return dot(out, w);
  };
  f();
  Vec dq(q.size()), dk(k.size()), dv(v.size());
  attention_backward(ctx, dq.data(), dk.data(), dv.data(), w.data(), q.data(), k.data(), v.data(), att.data(), B, T, H,
                     Hkv, D);
  EXPECT_LT(test::rel_error(dq, numeric_grad(q, f)), kTol);
  EXPECT_LT(test::rel_error(dk, numeric_grad(k, f)), kTol);
  EXPECT_LT(test::rel_error(dv, numeric_grad(v, f)), kTol);
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionGradient,
                         ::testing::Values(AttentionShape{2, 5, 3, 3, 4},   // MHA
                                           AttentionShape{1, 6, 4, 2, 4},   // GQA, 2 query heads per KV head
                                           AttentionShape{2, 4, 3, 1, 2},   // MQA
                                           AttentionShape{2, 16, 4, 2, 16})); // large enough to run threaded (kParallelWork)

TEST(Ops, AttentionIsCausalWithConsecutiveHeadsSharingKV) {
  // Changing a future key/value must not change earlier outputs; query head h reads KV head h / (H/Hkv).
  const int B = 1, T = 4, H = 4, Hkv = 2, D = 2;
  std::mt19937_64 rng(7);
  Vec q = random_vec(B * T * H * D, rng), k = random_vec(B * T * Hkv * D, rng), v = random_vec(k.size(), rng);
  Vec out(q.size()), out2(q.size()), att((size_t)B * H * T * T);
  attention_forward(ctx, out.data(), att.data(), q.data(), k.data(), v.data(), B, T, H, Hkv, D);
  for (int d = 0; d < D; d++) v[((T - 1) * Hkv + 1) * D + d] += 1.0;  // last position, KV head 1
  attention_forward(ctx, out2.data(), att.data(), q.data(), k.data(), v.data(), B, T, H, Hkv, D);
  for (int t = 0; t < T; t++)
    for (int h = 0; h < H; h++) {
      const bool affected = t == T - 1 && h >= 2;  // heads 2 and 3 share KV head 1
      const double delta = std::abs(out2[(t * H + h) * D] - out[(t * H + h) * D]);
      if (affected) EXPECT_GT(delta, 1e-6) << "t " << t << " h " << h;
      else EXPECT_EQ(delta, 0.0) << "t " << t << " h " << h;
    }
}

TEST(OpsGradient, SwiGLU) {
  std::mt19937_64 rng(8);
  const size_t n = 20;
  Vec a = random_vec(n, rng, 3.0), b = random_vec(n, rng), w = random_vec(n, rng), out(n);
  auto f = [&] { swiglu_forward(ctx, out.data(), a.data(), b.data(), n); return dot(out, w); };
  Vec da(n), db(n);
  swiglu_backward(ctx, da.data(), db.data(), w.data(), a.data(), b.data(), n);
  EXPECT_LT(test::rel_error(da, numeric_grad(a, f)), kTol);
  EXPECT_LT(test::rel_error(db, numeric_grad(b, f)), kTol);
}

TEST(OpsGradient, ClassifierIgnoresTargetMinusOne) {
  std::mt19937_64 rng(9);
  const int N = 5, V = 7;
  const std::vector<int32_t> targets = {3, -1, 0, 6, -1};
  const int n_valid = 3;
  const double dloss = 0.5;
  Vec logits = random_vec(N * V, rng, 2.0), losses(N);
  auto mean_loss = [&] {
    Vec scratch = logits;
    classifier_forward_backward(ctx, scratch.data(), losses.data(), targets.data(), N, V, n_valid, dloss);
    double s = 0;
    for (double l : losses) s += l;
    return dloss * s / n_valid;
  };
  Vec dlogits = logits;
  classifier_forward_backward(ctx, dlogits.data(), losses.data(), targets.data(), N, V, n_valid, dloss);
  EXPECT_LT(test::rel_error(dlogits, numeric_grad(logits, mean_loss)), kTol);
  EXPECT_EQ(losses[1], 0.0);
  // The loss itself against the definition −log softmax[target].
  double z = 0;
  for (int v = 0; v < V; v++) z += std::exp(logits[v]);
  EXPECT_NEAR(losses[0], std::log(z) - logits[3], 1e-12);
}

TEST(Ops, ReductionsAndElementwise) {
  Vec x = {1, -2, 3}, y = {0.5, 0.5, 0.5}, out(3);
  add(ctx, out.data(), x.data(), y.data(), 3);
  EXPECT_EQ(out, (Vec{1.5, -1.5, 3.5}));
  EXPECT_DOUBLE_EQ(sum(ctx, x.data(), 3), 2.0);
  EXPECT_DOUBLE_EQ(sum_squares(ctx, x.data(), 3), 14.0);
  scale(ctx, x.data(), -0.5, 3);
  EXPECT_EQ(x, (Vec{-0.5, 1.0, -1.5}));
}

}  // namespace
}  // namespace t6
