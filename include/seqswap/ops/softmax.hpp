// The masked softmax of one attention row, in place: row <- softmax(row) over the kept keys
// (and, with `chosen`, only over keys j with chosen[j] != 0); a masked query's row becomes all
// zeros. Vectorised exp (Eigen's packet exp) over the whole row; left-out keys are zeroed after
// it (Eigen's exp(-inf) is not 0, and a left-out logit may be anything).
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>

#include "seqswap/backend/host.hpp"
#include "seqswap/ops/packet_exp.hpp"

namespace seqswap::ops {

// row[j] <- exp(row[j] - shift) for j < n, through the packet exp of non-positive values
// (ops/packet_exp.hpp: shift is the row's max over its kept keys; a left-out key's logit above
// it comes out as 1, and the caller zeroes it) on unaligned loads; the last n mod packet values
// go through a padded local packet, so no value takes the scalar libm exp (an Eigen expression
// over a row that starts unaligned peels up to a packet of scalar exps at each end: 8% of the
// teacher's attention forward, perf). Returns the sum (callers with left-out keys re-sum).
template <class T>
T exp_shifted_row(T* row, index_t n, T shift) {
  using namespace Eigen::internal;
  using P = typename packet_traits<T>::type;
  constexpr index_t S = unpacket_traits<P>::size;
  const P sh = pset1<P>(shift);
  P acc = pset1<P>(T(0));
  index_t j = 0;
  for (; j + S <= n; j += S) {
    const P v = pexp_nonpositive(psub(ploadu<P>(row + j), sh));
    pstoreu(row + j, v);
    acc = padd(acc, v);
  }
  T sum = predux(acc);
  if (j < n) {
    alignas(64) T tail[S];
    for (index_t q = 0; q < S; ++q) tail[q] = j + q < n ? row[j + q] : shift;
    pstore(tail, pexp_nonpositive(psub(pload<P>(tail), sh)));
    for (index_t q = 0; j + q < n; ++q) {
      row[j + q] = tail[q];
      sum += tail[q];
    }
  }
  return sum;
}

// row (n) logits of query i; keep (n, nullable) the sequence's keep-mask; chosen (n, nullable).
template <class T>
void masked_softmax_row(T* row, index_t n, const std::uint8_t* keep, index_t i, const T* chosen = nullptr) {
  if (keep && !keep[i]) {
    std::fill(row, row + n, T(0));
    return;
  }
  host::ArrMap<T> a(row, n);
  const auto in = [&](index_t j) { return (!keep || keep[j]) && (!chosen || chosen[j] != T(0)); };
  T sum;
  if (keep || chosen) {
    T mx = -std::numeric_limits<T>::infinity();
    for (index_t j = 0; j < n; ++j)
      if (in(j)) mx = std::max(mx, row[j]);
    exp_shifted_row(row, n, mx);
    sum = T(0);
    for (index_t j = 0; j < n; ++j) {
      if (!in(j)) row[j] = T(0);
      sum += row[j];
    }
  } else {
    sum = exp_shifted_row(row, n, a.maxCoeff());
  }
  a *= T(1) / sum;
}

}  // namespace seqswap::ops
