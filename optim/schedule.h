// Learning-rate schedules. All share a linear warmup from 0: lr·it/warmup for it < warmup.
#pragma once
#include <cstdint>
#include <string>

namespace t6 {

enum class Schedule { cosine, linear, constant, wsd };
bool parse_schedule(const std::string& s, Schedule* out);
const char* schedule_name(Schedule s);

struct LrSchedule {
  Schedule kind = Schedule::cosine;
  double lr = 6e-4;
  double min_lr = 6e-5;
  int64_t warmup_iters = 0;
  int64_t decay_iters = 0;           // schedule reaches min_lr here
  double wsd_decay_fraction = 0.2;   // wsd: share of decay_iters spent in the final decay

  // cosine:   min_lr + ½(1 + cos(π·p))·(lr − min_lr), p = (it − warmup)/(decay − warmup)
  // linear:   lr + p·(min_lr − lr)
  // constant: lr
  // wsd:      lr until decay_iters·(1 − wsd_decay_fraction), then linear down to min_lr
  // cosine, linear and wsd hold min_lr after decay_iters.
  double at(int64_t it) const;
};

}  // namespace t6
