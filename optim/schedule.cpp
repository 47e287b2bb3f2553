#include "optim/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace t6 {

const char* schedule_name(Schedule s) {
  switch (s) {
    case Schedule::cosine: return "cosine";
    case Schedule::linear: return "linear";
    case Schedule::constant: return "constant";
    case Schedule::wsd: return "wsd";
  }
  return "?";
}

bool parse_schedule(const std::string& s, Schedule* out) {
  for (Schedule k : {Schedule::cosine, Schedule::linear, Schedule::constant, Schedule::wsd}) {
    if (s == schedule_name(k)) { *out = k; return true; }
  }
  return false;
}

double LrSchedule::at(int64_t it) const {
  if (it < warmup_iters) return lr * (double)it / (double)warmup_iters;
  if (kind == Schedule::constant) return lr;
  if (it > decay_iters) return min_lr;
  if (kind == Schedule::wsd) {
    const double decay_start = (double)decay_iters * (1.0 - wsd_decay_fraction);
    const double start = std::max(decay_start, (double)warmup_iters);
    if (it <= start) return lr;
    const double p = (it - start) / std::max(1.0, (double)decay_iters - start);
    return lr + p * (min_lr - lr);
  }
  const double span = std::max<int64_t>(1, decay_iters - warmup_iters);
  const double p = (double)(it - warmup_iters) / span;
  if (kind == Schedule::linear) return lr + p * (min_lr - lr);
  return min_lr + 0.5 * (1.0 + std::cos(std::numbers::pi * p)) * (lr - min_lr);
}

}  // namespace t6
