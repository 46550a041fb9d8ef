// Learning-rate schedule: linear warm-up then cosine decay to `min_lr` (per optimizer step).
#pragma once
#include <algorithm>
#include <cmath>
#include <numbers>

namespace seqswap::train {

struct CosineSchedule {
  double base_lr = 1e-3;
  double min_lr = 1e-5;
  long warmup_steps = 0;
  long total_steps = 1;

  double at(long step) const {
    if (warmup_steps > 0 && step < warmup_steps)
      return base_lr * double(step + 1) / double(warmup_steps);
    const double span = double(std::max(1L, total_steps - warmup_steps));
    const double t = std::clamp(double(step - warmup_steps) / span, 0.0, 1.0);
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + std::cos(std::numbers::pi * t));
  }
};

}  // namespace seqswap::train
