// The masked softmax of one attention row, in place: row <- softmax(row) over the kept keys
// (and, with `chosen`, only over keys j with chosen[j] != 0); a masked query's row becomes all
// zeros. Vectorised exp (Eigen's packet exp) over the whole row; left-out keys are zeroed after
// it (Eigen's exp(-inf) is not 0).
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>

#include "seqswap/backend/host.hpp"

namespace seqswap::ops {

// row (n) logits of query i; keep (n, nullable) the sequence's keep-mask; chosen (n, nullable).
template <class T>
void masked_softmax_row(T* row, index_t n, const std::uint8_t* keep, index_t i, const T* chosen = nullptr) {
  if (keep && !keep[i]) {
    std::fill(row, row + n, T(0));
    return;
  }
  host::ArrMap<T> a(row, n);
  const auto in = [&](index_t j) { return (!keep || keep[j]) && (!chosen || chosen[j] != T(0)); };
  T mx = -std::numeric_limits<T>::infinity();
  if (keep || chosen) {
    for (index_t j = 0; j < n; ++j)
      if (in(j)) mx = std::max(mx, row[j]);
  } else {
    mx = a.maxCoeff();
  }
  a = (a - mx).exp();
  if (keep || chosen)
    for (index_t j = 0; j < n; ++j)
      if (!in(j)) row[j] = T(0);
  a *= T(1) / a.sum();
}

}  // namespace seqswap::ops
