// AdamW, clipping and the schedules against values worked out by hand.
#include <gtest/gtest.h>

#include <cmath>

#include "optim/adamw.h"
#include "optim/schedule.h"

namespace t6 {
namespace {

TEST(AdamW, TwoStepsMatchTheHandComputation) {
  // p = 1, lr 0.1, wd 0.1, betas (0.9, 0.95), eps 1e-8; gradients 0.5 then −0.25.
  // Step 1: p = 1·(1 − 0.01) = 0.99; m = 0.05, v = 0.0125; m̂ = 0.5, √v̂ = 0.5;
  //         p = 0.99 − 0.1·0.5/(0.5 + 1e-8) = 0.890000002.
  // Step 2: p = 0.890000002·0.99 = 0.88110000198; m = 0.02, v = 0.015;
  //         m̂ = 0.02/0.19, √v̂ = √(0.015/0.0975) = 0.392232270; p = 0.88110000198 − 0.026836944 = 0.854263058.
  const Context ctx;
  AdamW<double> opt(ctx, 1, AdamWConfig{0.9, 0.95, 1e-8, 0.1});
  double p = 1.0, g = 0.5;
  opt.step(&p, &g, 0.1);
  EXPECT_NEAR(p, 0.890000002, 1e-12);
  g = -0.25;
  opt.step(&p, &g, 0.1);
  EXPECT_NEAR(p, 0.854263058, 1e-9);
  EXPECT_EQ(opt.steps, 2);
  double m, v;
  opt.m.to_host(&m, 1);
  opt.v.to_host(&v, 1);
  EXPECT_NEAR(m, 0.02, 1e-15);
  EXPECT_NEAR(v, 0.015, 1e-15);
}

TEST(AdamW, ZeroGradientOnlyDecays) {
  const Context ctx;
  AdamW<float> opt(ctx, 2, AdamWConfig{0.9, 0.95, 1e-8, 0.1});
  float p[2] = {2.0f, -4.0f}, g[2] = {0.0f, 0.0f};
  opt.step(p, g, 0.5);  // decay factor 1 − 0.5·0.1 = 0.95
  EXPECT_FLOAT_EQ(p[0], 1.9f);
  EXPECT_FLOAT_EQ(p[1], -3.8f);
}

TEST(Clip, ScalesByClipOverNormPlusEpsilonOnlyAboveTheThreshold) {
  const Context ctx;
  double g[2] = {3.0, 4.0};  // norm 5
  EXPECT_DOUBLE_EQ(clip_grad_norm(ctx, g, 2, 1.0), 5.0);
  EXPECT_NEAR(g[0], 3.0 / (5.0 + 1e-6), 1e-15);
  EXPECT_NEAR(g[1], 4.0 / (5.0 + 1e-6), 1e-15);

  double h[2] = {0.3, 0.4};  // norm 0.5 < 1: untouched
  EXPECT_DOUBLE_EQ(clip_grad_norm(ctx, h, 2, 1.0), 0.5);
  EXPECT_EQ(h[0], 0.3);
  double k[2] = {30.0, 40.0};  // clip 0 = off, the norm is still reported
  EXPECT_DOUBLE_EQ(clip_grad_norm(ctx, k, 2, 0.0), 50.0);
  EXPECT_EQ(k[1], 40.0);
}

LrSchedule schedule(Schedule kind) {
  LrSchedule s;
  s.kind = kind;
  s.lr = 1.0;
  s.min_lr = 0.1;
  s.warmup_iters = 10;
  s.decay_iters = 110;
  s.wsd_decay_fraction = 0.2;
  return s;
}

TEST(Schedule, WarmupIsLinearFromZero) {
  for (Schedule k : {Schedule::cosine, Schedule::linear, Schedule::constant, Schedule::wsd}) {
    const LrSchedule s = schedule(k);
    EXPECT_DOUBLE_EQ(s.at(0), 0.0) << schedule_name(k);
    EXPECT_DOUBLE_EQ(s.at(5), 0.5) << schedule_name(k);
    EXPECT_DOUBLE_EQ(s.at(10), 1.0) << schedule_name(k);
  }
}

TEST(Schedule, Cosine) {
  const LrSchedule s = schedule(Schedule::cosine);
  EXPECT_DOUBLE_EQ(s.at(60), 0.55);                                           // halfway: (lr + min_lr)/2
  EXPECT_NEAR(s.at(35), 0.1 + 0.5 * (1 + std::cos(M_PI / 4)) * 0.9, 1e-15);  // a quarter: 0.868198
  EXPECT_NEAR(s.at(35), 0.868198052, 1e-9);
  EXPECT_DOUBLE_EQ(s.at(110), 0.1);
  EXPECT_DOUBLE_EQ(s.at(500), 0.1);
}

TEST(Schedule, Linear) {
  const LrSchedule s = schedule(Schedule::linear);
  EXPECT_DOUBLE_EQ(s.at(35), 0.775);  // a quarter of the way from 1.0 to 0.1
  EXPECT_DOUBLE_EQ(s.at(60), 0.55);
  EXPECT_DOUBLE_EQ(s.at(111), 0.1);
}

TEST(Schedule, ConstantStaysAtLr) {
  const LrSchedule s = schedule(Schedule::constant);
  EXPECT_DOUBLE_EQ(s.at(60), 1.0);
  EXPECT_DOUBLE_EQ(s.at(5000), 1.0);
}

TEST(Schedule, WarmupStableDecay) {
  // Decay over the last 20% of 110 iterations: from 88 to 110.
  const LrSchedule s = schedule(Schedule::wsd);
  EXPECT_DOUBLE_EQ(s.at(50), 1.0);
  EXPECT_DOUBLE_EQ(s.at(88), 1.0);
  EXPECT_DOUBLE_EQ(s.at(99), 0.55);
  EXPECT_DOUBLE_EQ(s.at(110), 0.1);
  EXPECT_DOUBLE_EQ(s.at(200), 0.1);
}

}  // namespace
}  // namespace t6
