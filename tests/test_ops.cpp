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
  embedding_backward(ctx, dwte.data(), w.data(), tokens.data(), N, C, V);
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
  matmul_backward_input(ctx, dx.data(), w.data(), W.data(), M, K, N);
  matmul_backward_weight(ctx, dW.data(), w.data(), x.data(), M, K, N);
  EXPECT_LT(test::rel_error(dx, numeric_grad(x, f)), kTol);
  EXPECT_LT(test::rel_error(dW, numeric_grad(W, f)), kTol);
}

TEST(OpsGradient, ResidualRmsNorm) {
  std::mt19937_64 rng(12);
  const int N = 3, C = 7;
  Vec x = random_vec(N * C, rng), br = random_vec(N * C, rng), w = random_vec(N * C, rng), wx = random_vec(N * C, rng);
  Vec xo(N * C), out(N * C), rstd(N);
  // Both outputs feed the objective: the stream x_out and its normalization.
  auto f = [&] {
    residual_rmsnorm_forward(ctx, xo.data(), out.data(), rstd.data(), x.data(), br.data(), N, C, 1e-6);
    return dot(out, w) + dot(xo, wx);
  };
  f();
  Vec dx = wx;  // the stream's own gradient, into which backward accumulates
  rmsnorm_backward(ctx, dx.data(), w.data(), xo.data(), rstd.data(), N, C);
  EXPECT_LT(test::rel_error(dx, numeric_grad(x, f)), kTol);
  EXPECT_LT(test::rel_error(dx, numeric_grad(br, f)), kTol);  // the branch gets the same gradient
}

// A projection row holding every kind of section: factored q (rank 3, 2 heads), dense k
// (2 heads), factored v (rank 2); columns deliberately out of order.
QkvLayout mixed_layout(int D) {
  QkvLayout L;
  L.D = D;
  L.heads[0] = 2, L.rank[0] = 3, L.a[0] = 0, L.b[0] = 6;
  L.heads[1] = 2, L.rank[1] = 0, L.dense[1] = 6 + 3 * D;
  L.heads[2] = 2, L.rank[2] = 2, L.b[2] = 6 + 5 * D, L.a[2] = 6 + 7 * D;
  L.width = L.pitch = 6 + 7 * D + 4;
  return L;
}

TEST(OpsGradient, QkvFactorsDenseAndRope) {
  std::mt19937_64 rng(4);
  const int B = 2, T = 3, D = 4;
  const QkvLayout L = mixed_layout(D);
  const int N = B * T, Hd = 2 * D;
  Vec proj = random_vec((size_t)N * L.width, rng), wq = random_vec(N * Hd, rng), wk = random_vec(N * Hd, rng),
      wv = random_vec(N * Hd, rng), q(N * Hd), k(N * Hd), v(N * Hd);
  auto f = [&] {
    qkv_forward(ctx, q.data(), k.data(), v.data(), proj.data(), L, B, T);
    return dot(q, wq) + dot(k, wk) + dot(v, wv);
  };
  Vec dproj(proj.size(), 1e9);  // every column must be written
  qkv_backward(ctx, dproj.data(), wq.data(), wk.data(), wv.data(), proj.data(), L, B, T);
  EXPECT_LT(test::rel_error(dproj, numeric_grad(proj, f)), kTol);
}

TEST(Ops, QkvContractsFactorsAndRotatesWithTheSpecConvention) {
  // Position t = 3, D = 4. Dense q (one head) rotates pair i by θ = 3·10000^(−2i/4), as
  // (x1·cos + x2·sin, −x1·sin + x2·cos). Factored k, rank 2: (1/2)·Σ_r A[r]·rope(B[r]).
  // Dense v is copied unrotated.
  const int D = 4, T = 4;
  QkvLayout L;
  L.D = D;
  L.heads[0] = L.heads[1] = L.heads[2] = 1;
  L.dense[0] = 0;
  L.rank[1] = 2, L.a[1] = D, L.b[1] = D + 2;
  L.dense[2] = 3 * D + 2;
  L.width = L.pitch = 4 * D + 2;
  Vec proj((size_t)T * L.width, 0.0);
  double* row = proj.data() + 3 * L.width;
  const Vec x = {1, 2, 3, 4}, b0 = {0.5, -1, 2, 1}, b1 = {1, 1, -1, 3}, a = {2, -3};
  for (int d = 0; d < D; d++) row[d] = x[d], row[D + 2 + d] = b0[d], row[2 * D + 2 + d] = b1[d], row[3 * D + 2 + d] = x[d];
  row[D] = a[0], row[D + 1] = a[1];
  Vec q(T * D), k(T * D), v(T * D);
  qkv_forward(ctx, q.data(), k.data(), v.data(), proj.data(), L, 1, T);
  const double t0 = 3.0, t1 = 3.0 / 100.0;
  auto rope = [&](const Vec& y) {
    return Vec{y[0] * std::cos(t0) + y[2] * std::sin(t0), y[1] * std::cos(t1) + y[3] * std::sin(t1),
               -y[0] * std::sin(t0) + y[2] * std::cos(t0), -y[1] * std::sin(t1) + y[3] * std::cos(t1)};
  };
  const Vec rq = rope(x), r0 = rope(b0), r1 = rope(b1);
  for (int d = 0; d < D; d++) {
    EXPECT_NEAR(q[3 * D + d], rq[d], 1e-12);
    EXPECT_NEAR(k[3 * D + d], (a[0] * r0[d] + a[1] * r1[d]) / 2, 1e-12);
    EXPECT_EQ(v[3 * D + d], x[d]);
  }
}

struct AttentionShape { int B, T, H, Hkv, D; };
class AttentionGradient : public ::testing::TestWithParam<AttentionShape> {};

TEST_P(AttentionGradient, MatchesFiniteDifferences) {
  const auto [B, T, H, Hkv, D] = GetParam();
  std::mt19937_64 rng(6);
  Vec q = random_vec(B * T * H * D, rng), k = random_vec(B * T * Hkv * D, rng), v = random_vec(k.size(), rng);
  Vec w = random_vec(q.size(), rng), out(q.size()), lse((size_t)B * H * T);
  auto f = [&] {
    attention_forward(ctx, out.data(), lse.data(), q.data(), k.data(), v.data(), B, T, H, Hkv, D);
    return dot(out, w);
  };
  f();
  Vec dq(q.size()), dk(k.size()), dv(v.size());
  attention_backward(ctx, dq.data(), dk.data(), dv.data(), w.data(), q.data(), k.data(), v.data(), out.data(),
                     lse.data(), B, T, H, Hkv, D);
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
  Vec out(q.size()), out2(q.size()), lse((size_t)B * H * T);
  attention_forward(ctx, out.data(), lse.data(), q.data(), k.data(), v.data(), B, T, H, Hkv, D);
  for (int d = 0; d < D; d++) v[((T - 1) * Hkv + 1) * D + d] += 1.0;  // last position, KV head 1
  attention_forward(ctx, out2.data(), lse.data(), q.data(), k.data(), v.data(), B, T, H, Hkv, D);
  for (int t = 0; t < T; t++)
    for (int h = 0; h < H; h++) {
      const bool affected = t == T - 1 && h >= 2;  // heads 2 and 3 share KV head 1
      const double delta = std::abs(out2[(t * H + h) * D] - out[(t * H + h) * D]);
      if (affected) EXPECT_GT(delta, 1e-6) << "t " << t << " h " << h;
      else EXPECT_EQ(delta, 0.0) << "t " << t << " h " << h;
    }
}

// Generation: keys and values stored in the cache (factored or dense, written in pieces at
// their positions) and one query decoded against them give the full causal attention's row.
class AttentionDecode : public ::testing::TestWithParam<int> {};

TEST_P(AttentionDecode, EqualsTheFullForwardRow) {
  std::mt19937_64 rng(9);
  const int D = 8, B = 2, T = 11, context = 16;
  QkvLayout L;
  L.D = D;
  if (GetParam() == 0) {
    L = mixed_layout(D);  // factored q and v, dense k
  } else if (GetParam() == 1) {  // TPA: all factored, ranks 3 / 2 / 1, 4 heads
    const int H = 4, R[3] = {3, 2, 1};
    int col = 0;
    for (int s = 0; s < 3; s++) L.heads[s] = H, L.rank[s] = R[s], L.a[s] = col, col += H * R[s];
    for (int s = 0; s < 3; s++) L.b[s] = col, col += R[s] * D;
    L.width = L.pitch = col;
  } else {  // GQA: dense, 6 query heads over 2 KV heads
    L.heads[0] = 6, L.heads[1] = L.heads[2] = 2;
    L.dense[0] = 0, L.dense[1] = 6 * D, L.dense[2] = 8 * D;
    L.width = L.pitch = 10 * D;
  }
  const int H = L.heads[0], Hkv = L.heads[1];
  Vec proj = random_vec((size_t)B * T * L.pitch, rng, 2.0), q((size_t)B * T * H * D), k((size_t)B * T * Hkv * D),
      v(k.size()), out(q.size()), lse((size_t)B * H * T);
  qkv_forward(ctx, q.data(), k.data(), v.data(), proj.data(), L, B, T);
  attention_forward(ctx, out.data(), lse.data(), q.data(), k.data(), v.data(), B, T, H, Hkv, D);

  Vec kc((size_t)B * context * kv_record(L, 1), 7.0), vc((size_t)B * context * kv_record(L, 2), 7.0);
  Vec kc_at = kc, vc_at = vc;
  for (int t = 0; t < T; t++) {  // one position at a time, as decoding appends them
    Vec rows((size_t)B * L.pitch);
    for (int b = 0; b < B; b++)
      std::copy_n(proj.begin() + ((size_t)b * T + t) * L.pitch, L.pitch, rows.begin() + (size_t)b * L.pitch);
    kv_cache_store(ctx, kc.data(), vc.data(), rows.data(), L, B, 1, t, context);
    // The new position's q, made at its position, against the cache so far.
    Vec qt((size_t)B * H * D), kt((size_t)B * Hkv * D), vt(kt.size()), got((size_t)B * H * D), want(got.size());
    qkv_forward(ctx, qt.data(), kt.data(), vt.data(), rows.data(), L, B, 1, t);
    attention_decode(ctx, got.data(), qt.data(), kc.data(), vc.data(), L, B, t + 1, context);
    for (int b = 0; b < B; b++)
      std::copy_n(out.begin() + ((size_t)b * T + t) * H * D, H * D, want.begin() + (size_t)b * H * D);
    EXPECT_LT(test::rel_error(got, want), 1e-12) << "position " << t;
    // The same with the position read through `at`, as a recorded decode step reads it: the
    // host values (0, 1) are then ignored.
    Vec qa(qt.size()), ka(kt.size()), va(vt.size()), got_at(got.size());
    kv_cache_store(ctx, kc_at.data(), vc_at.data(), rows.data(), L, B, 1, 0, context, &t);
    qkv_forward(ctx, qa.data(), ka.data(), va.data(), rows.data(), L, B, 1, 0, &t);
    attention_decode(ctx, got_at.data(), qa.data(), kc_at.data(), vc_at.data(), L, B, 1, context, &t);
    EXPECT_EQ(got_at, got) << "position " << t;
  }
  EXPECT_EQ(kc_at, kc);
  EXPECT_EQ(vc_at, vc);
  // Storing all positions at once writes the same cache.
  Vec kc2(kc.size(), 7.0), vc2(vc.size(), 7.0);
  kv_cache_store(ctx, kc2.data(), vc2.data(), proj.data(), L, B, T, 0, context);
  EXPECT_EQ(kc2, kc);
  EXPECT_EQ(vc2, vc);
}

INSTANTIATE_TEST_SUITE_P(Layouts, AttentionDecode, ::testing::Values(0, 1, 2),
                         [](const auto& info) { return std::string(info.param == 0 ? "mixed" : info.param == 1 ? "tpa" : "gqa"); });

TEST(Ops, KvRecordHoldsFactorsNotHeads) {
  QkvLayout L;  // T6-small's TPA: 34 heads, D 64, R_k = R_v = 2
  L.D = 64, L.heads[1] = L.heads[2] = 34, L.rank[1] = L.rank[2] = 2;
  // (34 + 64)·4 = 392 numbers per token and layer, plus A's 68 numbers per side rounded up to 72.
  EXPECT_EQ(kv_b_offset(L, 1), 72);
  EXPECT_EQ(kv_record(L, 1) + kv_record(L, 2), (34 + 64) * 4 + 2 * 4);
  L.heads[1] = L.heads[2] = 4;  // A of 8 numbers: no padding
  EXPECT_EQ(kv_record(L, 1) + kv_record(L, 2), (4 + 64) * 4);
  L.heads[1] = L.heads[2] = 34, L.rank[1] = L.rank[2] = 0;
  EXPECT_EQ(kv_record(L, 1) + kv_record(L, 2), 2 * 34 * 64);
}

TEST(OpsGradient, SwiGLU) {
  std::mt19937_64 rng(8);
  const int N = 3, F = 5;
  Vec fc = random_vec(N * 2 * F, rng, 3.0), w = random_vec(N * F, rng), out(N * F);
  auto f = [&] { swiglu_forward(ctx, out.data(), fc.data(), N, F); return dot(out, w); };
  Vec dfc(fc.size());
  swiglu_backward(ctx, dfc.data(), w.data(), fc.data(), N, F);
  EXPECT_LT(test::rel_error(dfc, numeric_grad(fc, f)), kTol);
  // silu(a)·b against the definition, for row 1, column 2.
  const double a = fc[1 * 2 * F + 2], b = fc[1 * 2 * F + F + 2];
  EXPECT_NEAR(out[1 * F + 2], a / (1 + std::exp(-a)) * b, 1e-12);
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
  Vec x = {1, -2, 3};
  EXPECT_DOUBLE_EQ(sum(ctx, x.data(), 3), 2.0);
  EXPECT_DOUBLE_EQ(sum_squares(ctx, x.data(), 3), 14.0);
  scale(ctx, x.data(), -0.5, 3);
  EXPECT_EQ(x, (Vec{-0.5, 1.0, -1.5}));
}

#ifdef T6_WITH_CUDA
// Each op dispatches once, by the context's backend (kernels/dispatch.cpp): an element type the
// backend does not compute in is an error naming the op, the backend and the type, not a call
// into the other backend's kernels.
TEST(Ops, ABackendWithoutTheElementTypeSaysSo) {
  std::vector<bf16> x(4), y(8);
  EXPECT_NE(test::error_of([&] { swiglu_forward(ctx, x.data(), y.data(), 1, 4); })
                .find("swiglu_forward: the CPU backend has no bf16 version"),
            std::string::npos);
  std::vector<float> f(4);
  EXPECT_NO_THROW(scale(ctx, f.data(), 2.0, 4));  // fp32 is the CPU's own type
}
#endif

}  // namespace
}  // namespace t6
