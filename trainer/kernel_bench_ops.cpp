// t6-kernel-bench for the op families besides attention, qkv and decode: each op checked element
// by element against the CPU backend in double on the same bf16-rounded inputs, at a size the
// CPU reference computes quickly (--check rows), then timed at the config's full size (B·T rows
// of T6-small by default) with its GB/s (each input read once, each output written once) or
// TFLOP/s. Outputs start poisoned (NaN), so an element a kernel does not write fails the check.
#include <fmt/format.h>

#include "kernels/ops.h"
#include "model/t6.h"
#include "trainer/config.h"
#include "trainer/kernel_bench.h"

namespace t6::bench {
namespace {

// The config's sizes, the rows checked and the timing repetitions.
struct Sizes {
  int N, C, F, V, check, reps;
  std::string gpu;
};

Sizes sizes(const Context& ctx, const BenchArgs& args) {
  const Config cfg = load_config(args.str("config", "configs/t6-small-tpa.yaml"));
  const int B = args.get("B", cfg.train.batch_size), T = args.get("T", cfg.model.block_size);
  return {B * T, cfg.model.n_embd, cfg.model.mlp_hidden(), cfg.model.vocab_size, args.get("check", 256),
          args.get("reps", 20), gpu_name(ctx)};
}

std::function<std::string(size_t)> at_matrix(size_t cols) {
  return [cols](size_t i) { return fmt::format("(row {}, column {})", i / cols, i % cols); };
}

// One table row per timed kernel; returns the exit code.
struct Report {
  explicit Report(std::string op) : op(std::move(op)) {}
  std::string op;
  double worst = 0;
  std::vector<std::string> rows;
  void check(const std::string& what, const Vec& got, const Vec& want, size_t cols, double tol = 1e-2) {
    worst = std::max(worst, compare(what, got, want, tol, tol, at_matrix(cols)));
  }
  void gbs(const std::string& kernel, double ms, double bytes) {
    rows.push_back(fmt::format("| {} | {:.3f} | {:.0f} GB/s |", kernel, ms, bytes / ms / 1e6));
  }
  void tflops(const std::string& kernel, double ms, double flops) {
    rows.push_back(fmt::format("| {} | {:.3f} | {:.0f} TFLOP/s |", kernel, ms, flops / ms / 1e9));
  }
  int finish() const {
    fmt::print("\n| {} | ms | rate |\n|---|---|---|\n", op);
    for (const std::string& r : rows) fmt::print("{}\n", r);
    fmt::print("(worst error / bound {:.2f}: {})\n", worst, worst <= 1 ? "pass" : "FAIL");
    return worst <= 1 ? 0 : 1;
  }
};

std::vector<int32_t> random_tokens(Rng& rng, int n, int V) {
  std::vector<int32_t> t(n);
  for (int32_t& x : t) x = (int32_t)(rng.gen() % V);
  return t;
}

int embedding(const Context& ctx, const Sizes& s) {
  Report r("embedding");
  Rng rng;
  const Context cpu;
  const Vec wte = rng.bf16_values((size_t)s.V * s.C, 1.0);
  auto g_wte = upload(ctx, wte);
  for (bool checking : {true, false}) {
    const int N = checking ? s.check : s.N;
    const std::vector<int32_t> tokens = random_tokens(rng, N, s.V);
    const Vec dout = rng.bf16_values((size_t)N * s.C, 1.0);
    Buffer<int32_t> t(ctx, N);
    t.from_host(tokens.data(), N);
    auto g_out = poisoned(ctx, (size_t)N * s.C), g_dout = upload(ctx, dout);
    Buffer<float> g_dwte(ctx, (size_t)s.V * s.C);
    if (checking) {
      Vec out((size_t)N * s.C), dwte((size_t)s.V * s.C, 0.0);
      embedding_forward(cpu, out.data(), tokens.data(), wte.data(), N, s.C);
      embedding_backward(cpu, dwte.data(), dout.data(), tokens.data(), N, s.C, s.V);
      embedding_forward(ctx, g_out.data(), t.data(), g_wte.data(), N, s.C);
      embedding_backward(ctx, g_dwte.data(), g_dout.data(), t.data(), N, s.C, s.V);
      r.check("out", download(g_out), out, s.C);
      r.check("dwte", download(g_dwte), dwte, s.C, 1e-5);
      continue;
    }
    const double rows = (double)N * s.C;
    r.gbs("forward", median_ms(ctx, s.reps, [&] { embedding_forward(ctx, g_out.data(), t.data(), g_wte.data(), N, s.C); }),
          rows * 2 * 2);
    r.gbs("backward", median_ms(ctx, s.reps, [&] {
            embedding_backward(ctx, g_dwte.data(), g_dout.data(), t.data(), N, s.C, s.V);
          }), rows * (2 + 4 + 4));
  }
  return r.finish();
}

int rmsnorm(const Context& ctx, const Sizes& s) {
  Report r("rmsnorm");
  Rng rng;
  const Context cpu;
  for (bool checking : {true, false}) {
    const int N = checking ? s.check : s.N;
    const size_t n = (size_t)N * s.C;
    const Vec x = rng.bf16_values(n, 3.0), branch = rng.bf16_values(n, 1.0), dy = rng.bf16_values(n, 1.0),
              dx0 = rng.bf16_values(n, 1.0);
    auto gx = upload(ctx, x), gbr = upload(ctx, branch), gdy = upload(ctx, dy), gdx = upload(ctx, dx0);
    auto gxo = poisoned(ctx, n), gh = poisoned(ctx, n);
    Buffer<float> grstd(ctx, N);
    if (checking) {
      Vec xo(n), h(n), rstd(N), dx = dx0;
      residual_rmsnorm_forward(cpu, xo.data(), h.data(), rstd.data(), x.data(), branch.data(), N, s.C, kRmsEps);
      residual_rmsnorm_forward(ctx, gxo.data(), gh.data(), grstd.data(), gx.data(), gbr.data(), N, s.C, kRmsEps);
      r.check("x + branch", download(gxo), xo, s.C);
      r.check("normalized", download(gh), h, s.C);
      // Backward from the GPU's own stored stream and statistics, as the model runs it.
      const Vec xs = download(gxo);
      Vec rstd_gpu = download(grstd);
      rmsnorm_backward(cpu, dx.data(), dy.data(), xs.data(), rstd_gpu.data(), N, s.C);
      rmsnorm_backward(ctx, gdx.data(), gdy.data(), gxo.data(), grstd.data(), N, s.C);
      r.check("dx", download(gdx), dx, s.C);
      // The final norm has no residual: the same rows normalized on their own.
      Vec h0(n), rstd0(N);
      rmsnorm_forward(cpu, h0.data(), rstd0.data(), x.data(), N, s.C, kRmsEps);
      auto gh0 = poisoned(ctx, n);
      rmsnorm_forward(ctx, gh0.data(), grstd.data(), gx.data(), N, s.C, kRmsEps);
      r.check("normalized, no residual", download(gh0), h0, s.C);
      r.check("rstd, no residual", download(grstd), rstd0, 1);
      continue;
    }
    r.gbs("residual forward", median_ms(ctx, s.reps, [&] {
            residual_rmsnorm_forward(ctx, gxo.data(), gh.data(), grstd.data(), gx.data(), gbr.data(), N, s.C, kRmsEps);
          }), (double)n * 2 * 4);
    r.gbs("backward", median_ms(ctx, s.reps, [&] {
            rmsnorm_backward(ctx, gdx.data(), gdy.data(), gxo.data(), grstd.data(), N, s.C);
          }), (double)n * 2 * 4);
  }
  return r.finish();
}

// The MLP's first product (C → 2F, fc1‖fc2 stacked) and its backward: the step's largest.
int matmul(const Context& ctx, const Sizes& s) {
  Report r("matmul");
  Rng rng;
  const Context cpu;
  const int K = s.C, Nout = 2 * s.F;
  const Vec W = rng.bf16_values((size_t)Nout * K, 0.05);
  auto gW = upload(ctx, W);
  for (bool checking : {true, false}) {
    const int M = checking ? s.check : s.N;
    const Vec x = rng.bf16_values((size_t)M * K, 1.0), dy = rng.bf16_values((size_t)M * Nout, 1.0);
    auto gx = upload(ctx, x), gdy = upload(ctx, dy), gout = poisoned(ctx, (size_t)M * Nout),
         gdx = poisoned(ctx, (size_t)M * K);
    Buffer<float> gdW(ctx, (size_t)Nout * K);
    if (checking) {
      Vec out((size_t)M * Nout), dx((size_t)M * K), dW((size_t)Nout * K, 0.0);
      matmul_forward(cpu, out.data(), x.data(), W.data(), M, K, Nout);
      matmul_backward_input(cpu, dx.data(), dy.data(), W.data(), M, K, Nout);
      matmul_backward_weight(cpu, dW.data(), dy.data(), x.data(), M, K, Nout);
      matmul_forward(ctx, gout.data(), gx.data(), gW.data(), M, K, Nout);
      matmul_backward_input(ctx, gdx.data(), gdy.data(), gW.data(), M, K, Nout);
      matmul_backward_weight(ctx, gdW.data(), gdy.data(), gx.data(), M, K, Nout);
      r.check("out", download(gout), out, Nout);
      r.check("dx", download(gdx), dx, K);
      r.check("dW", download(gdW), dW, K);
      continue;
    }
    const double flops = 2.0 * M * K * Nout;
    const std::string shape = fmt::format(" {}×{}×{}", M, K, Nout);
    r.tflops("forward" + shape,
             median_ms(ctx, s.reps, [&] { matmul_forward(ctx, gout.data(), gx.data(), gW.data(), M, K, Nout); }), flops);
    r.tflops("backward input" + shape, median_ms(ctx, s.reps, [&] {
               matmul_backward_input(ctx, gdx.data(), gdy.data(), gW.data(), M, K, Nout);
             }), flops);
    r.tflops("backward weight" + shape, median_ms(ctx, s.reps, [&] {
               matmul_backward_weight(ctx, gdW.data(), gdy.data(), gx.data(), M, K, Nout);
             }), flops);
  }
  return r.finish();
}

int swiglu(const Context& ctx, const Sizes& s) {
  Report r("swiglu");
  Rng rng;
  const Context cpu;
  for (bool checking : {true, false}) {
    const int N = checking ? s.check : s.N;
    const size_t n = (size_t)N * s.F;
    const Vec fc = rng.bf16_values(2 * n, 4.0), dout = rng.bf16_values(n, 1.0);
    auto gfc = upload(ctx, fc), gdo = upload(ctx, dout), gout = poisoned(ctx, n), gdfc = poisoned(ctx, 2 * n);
    if (checking) {
      Vec out(n), dfc(2 * n);
      swiglu_forward(cpu, out.data(), fc.data(), N, s.F);
      swiglu_backward(cpu, dfc.data(), dout.data(), fc.data(), N, s.F);
      swiglu_forward(ctx, gout.data(), gfc.data(), N, s.F);
      swiglu_backward(ctx, gdfc.data(), gdo.data(), gfc.data(), N, s.F);
      r.check("out", download(gout), out, s.F);
      r.check("dfc", download(gdfc), dfc, 2 * s.F);
      continue;
    }
    r.gbs("forward", median_ms(ctx, s.reps, [&] { swiglu_forward(ctx, gout.data(), gfc.data(), N, s.F); }),
          (double)n * 2 * 3);
    r.gbs("backward", median_ms(ctx, s.reps, [&] { swiglu_backward(ctx, gdfc.data(), gdo.data(), gfc.data(), N, s.F); }),
          (double)n * 2 * 5);
  }
  return r.finish();
}

// Softmax cross-entropy over the vocabulary and its gradient, in place over the logits. The
// timed call rewrites its own input (logits → gradients), which costs the same every time.
int classifier(const Context& ctx, const Sizes& s) {
  Report r("classifier");
  Rng rng;
  const Context cpu;
  const int N = std::min(s.check, 64), Nt = std::min(s.N, 8192);  // (the model runs it in chunks)
  for (bool checking : {true, false}) {
    const int rows = checking ? N : Nt;
    std::vector<int32_t> targets = random_tokens(rng, rows, s.V);
    targets[rows - 1] = -1;  // an ignored position
    const Vec logits = rng.bf16_values((size_t)rows * s.V, 8.0);
    Buffer<int32_t> gt(ctx, rows);
    gt.from_host(targets.data(), rows);
    auto gl = upload(ctx, logits);
    Buffer<float> gloss(ctx, rows);
    if (checking) {
      Vec dlogits = logits, losses(rows);
      classifier_forward_backward(cpu, dlogits.data(), losses.data(), targets.data(), rows, s.V, rows - 1, 1.0);
      classifier_forward_backward(ctx, gl.data(), gloss.data(), gt.data(), rows, s.V, rows - 1, 1.0);
      r.check("losses", download(gloss), losses, 1, 1e-5);
      r.check("dlogits", download(gl), dlogits, s.V);
      continue;
    }
    r.gbs(fmt::format("forward + backward, {} rows", rows), median_ms(ctx, s.reps, [&] {
            classifier_forward_backward(ctx, gl.data(), gloss.data(), gt.data(), rows, s.V, rows - 1, 1.0);
          }), (double)rows * s.V * 2 * 2);
  }
  return r.finish();
}

// AdamW over fp32 parameters, gradients and moments, writing the bf16 copy too.
int adamw(const Context& ctx, const Sizes& s) {
  Report r("adamw");
  Rng rng;
  const Context cpu;
  const size_t full = (size_t)12 * s.C * s.C * 12;  // about a T6-small's weights (12 layers of 12·C²)
  for (bool checking : {true, false}) {
    const size_t n = checking ? (size_t)s.check * 1024 : full;
    Vec p = rng.bf16_values(n, 1.0), g = rng.bf16_values(n, 0.01), m = rng.bf16_values(n, 0.001),
        v = rng.bf16_values(n, 1e-4);
    for (double& x : v) x = std::fabs(x);
    auto gp = upload_f32(ctx, p), gg = upload_f32(ctx, g), gm = upload_f32(ctx, m), gv = upload_f32(ctx, v);
    auto w = poisoned(ctx, n);
    if (checking) {
      adamw_update(cpu, p.data(), g.data(), m.data(), v.data(), n, 1e-3, 0.9, 0.95, 1e-8, 0.1, 0.19, 0.0975, 0.7);
      adamw_update(ctx, gp.data(), gg.data(), gm.data(), gv.data(), n, 1e-3, 0.9, 0.95, 1e-8, 0.1, 0.19, 0.0975, 0.7,
                   w.data());
      r.check("params", download(gp), p, 1024, 1e-5);
      r.check("m", download(gm), m, 1024, 1e-5);
      r.check("v", download(gv), v, 1024, 1e-5);
      r.check("bf16 weights", download(w), p, 1024);
      continue;
    }
    r.gbs(fmt::format("update, {:.0f}M parameters", n / 1e6), median_ms(ctx, s.reps, [&] {
            adamw_update(ctx, gp.data(), gg.data(), gm.data(), gv.data(), n, 1e-3, 0.9, 0.95, 1e-8, 0.1, 0.19, 0.0975,
                         0.7, w.data());
          }), (double)n * (4 * 4 + 3 * 4 + 2));
  }
  return r.finish();
}

// The small ops: a weight into its padded bf16 compute copy and the padded gradient back
// (a matrix of C + 3 columns, its pitch rounded up to 8, as mlp.c_proj's copy is where F is not
// a multiple of 8), and gradient clipping's scale, sum and sum of squares over a T6-small's
// worth of fp32 numbers.
int elementwise(const Context& ctx, const Sizes& s) {
  Report r("elementwise");
  Rng rng;
  const Context cpu;
  const int cols = s.C + 3, pitch = (cols + 7) / 8 * 8;
  for (bool checking : {true, false}) {
    const int rows = checking ? s.check : 4 * s.C;
    const size_t dense = (size_t)rows * cols, padded = (size_t)rows * pitch;
    const Vec w = rng.bf16_values(dense, 1.0), g = rng.bf16_values(padded, 1.0), acc0 = rng.bf16_values(dense, 1.0);
    auto gw = upload_f32(ctx, w), gg = upload_f32(ctx, g), gacc = upload_f32(ctx, acc0);
    auto gcopy = poisoned(ctx, padded);
    if (checking) {
      Vec copy(padded, 0.0), acc = acc0;
      copy_to_pitch(cpu, copy.data(), w.data(), rows, cols, pitch);
      add_from_pitch(cpu, acc.data(), g.data(), rows, cols, pitch);
      copy_to_pitch(ctx, gcopy.data(), gw.data(), rows, cols, pitch);
      add_from_pitch(ctx, gacc.data(), gg.data(), rows, cols, pitch);
      // Only the columns inside each row are the copy's (its padding is the layout's, zero).
      Vec got = download(gcopy), used_got, used_want;
      for (int row = 0; row < rows; row++)
        for (int c = 0; c < cols; c++)
          used_got.push_back(got[(size_t)row * pitch + c]), used_want.push_back(copy[(size_t)row * pitch + c]);
      r.check("copy to pitch", used_got, used_want, cols);
      r.check("add from pitch", download(gacc), acc, cols, 1e-5);
      continue;
    }
    r.gbs(fmt::format("copy to pitch, {} × {}", rows, cols),
          median_ms(ctx, s.reps, [&] { copy_to_pitch(ctx, gcopy.data(), gw.data(), rows, cols, pitch); }),
          (double)dense * (4 + 2));
    r.gbs(fmt::format("add from pitch, {} × {}", rows, cols),
          median_ms(ctx, s.reps, [&] { add_from_pitch(ctx, gacc.data(), gg.data(), rows, cols, pitch); }),
          (double)dense * (4 + 4 + 4));
  }
  for (bool checking : {true, false}) {
    const size_t n = checking ? (size_t)s.check * 1024 + 7 : (size_t)12 * s.C * s.C * 12;
    const Vec x = rng.bf16_values(n, 1.0);
    auto gx = upload_f32(ctx, x);
    if (checking) {
      Vec scaled = x;
      scale(cpu, scaled.data(), -0.5, n);
      scale(ctx, gx.data(), -0.5, n);
      r.check("scale", download(gx), scaled, 1024, 1e-6);
      // Sums of n numbers in fp32 pieces, added in double: within 1e-6 of the sum of |x|.
      double abs_sum = 0;
      for (double v : scaled) abs_sum += std::fabs(v);
      r.check("sum", {sum(ctx, gx.data(), n) / abs_sum}, {sum(cpu, scaled.data(), n) / abs_sum}, 1, 1e-6);
      r.check("sum of squares", {sum_squares(ctx, gx.data(), n)}, {sum_squares(cpu, scaled.data(), n)}, 1, 1e-6);
      continue;
    }
    const std::string size = fmt::format("{:.0f}M numbers", n / 1e6);
    r.gbs("scale, " + size, median_ms(ctx, s.reps, [&] { scale(ctx, gx.data(), 1.0, n); }), (double)n * 8);
    r.gbs("sum of squares, " + size, median_ms(ctx, s.reps, [&] { sum_squares(ctx, gx.data(), n); }), (double)n * 4);
  }
  return r.finish();
}

}  // namespace

int bench_op(const Context& ctx, const std::string& op, const BenchArgs& args) {
  const Sizes s = sizes(ctx, args);
  fmt::print("{}: N {} (B·T), C {}, F {}, V {}; checked on {} rows; {}\n", op, s.N, s.C, s.F, s.V, s.check, s.gpu);
  if (op == "embedding") return embedding(ctx, s);
  if (op == "rmsnorm") return rmsnorm(ctx, s);
  if (op == "matmul") return matmul(ctx, s);
  if (op == "swiglu") return swiglu(ctx, s);
  if (op == "classifier") return classifier(ctx, s);
  if (op == "adamw") return adamw(ctx, s);
  if (op == "elementwise") return elementwise(ctx, s);
  throw std::invalid_argument("unknown op " + op);
}

}  // namespace t6::bench
