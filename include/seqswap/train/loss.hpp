// Cross-entropy with label smoothing (torch.nn.functional.cross_entropy's definition):
//   q = (1 - ε) onehot(y) + ε / C,   loss = mean_b Σ_c -q_c log softmax(z_b)_c
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "seqswap/core/error.hpp"
#include "seqswap/core/tokens.hpp"

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
    const T mx = *std::max_element(z, z + C);
    double sum = 0;
    for (index_t c = 0; c < C; ++c) sum += std::exp(double(z[c] - mx));
    const double log_sum = std::log(sum) + double(mx);
    double l = 0;
    for (index_t c = 0; c < C; ++c) {
      const double q = (c == y ? 1.0 - smoothing : 0.0) + smoothing / double(C);
      const double logp = double(z[c]) - log_sum;
      l -= q * logp;
      if (dlogits) dlogits[b * C + c] = T((std::exp(logp) - q) / double(B));
    }
    r.loss += l / double(B);
    if (std::max_element(z, z + C) - z == y) ++r.correct;
  }
  return r;
}

}  // namespace seqswap::train
