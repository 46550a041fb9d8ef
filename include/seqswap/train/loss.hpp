// Cross-entropy with label smoothing (torch.nn.functional.cross_entropy's definition):
//   q = (1 - ε) onehot(y) + ε / C,   loss = mean_b Σ_c -q_c log softmax(z_b)_c
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "seqswap/core/error.hpp"
#include "seqswap/core/tokens.hpp"
#include "seqswap/ops/rows.hpp"

namespace seqswap::train {

struct LossResult {
  double loss = 0;    // mean over the batch
  index_t correct = 0;  // argmax == label
};

// logits (B, C), labels (B) -> loss; dlogits (B, C) ASSIGNED = (softmax - q) / B if non-null.
template <class T>
LossResult cross_entropy(const T* logits, const std::int32_t* labels, index_t B, index_t C,
                         double smoothing, T* dlogits) {
  check(smoothing >= 0 && smoothing < 1, "cross_entropy: expected label smoothing in [0, 1), found ",
        smoothing);
  LossResult r;
  for (index_t b = 0; b < B; ++b) {
    const T* z = logits + b * C;
    const std::int32_t y = labels[b];
    check(y >= 0 && y < C, "cross_entropy: expected labels in [0, ", C, "), found ", y,
          " at batch index ", b);
    const auto row = ops::rows::cross_entropy_row(z, C, y, smoothing, B, dlogits ? dlogits + b * C : nullptr);
    r.loss += row.loss / double(B);
    r.correct += row.correct;
  }
  return r;
}

}  // namespace seqswap::train
