// Small helpers shared by every mixer: keep-mask row operations and stable activations.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "seqswap/core/tokens.hpp"

namespace seqswap::ops {

// y (rows, D): rows of masked tokens (keep[t] == 0) set to exactly 0.
template <class T>
void zero_masked_rows(T* y, index_t rows, index_t D, const std::uint8_t* keep) {
  if (!keep) return;
  for (index_t t = 0; t < rows; ++t)
    if (!keep[t]) std::fill(y + t * D, y + (t + 1) * D, T(0));
}

// dst = src with masked rows zeroed (dst may equal src). Both (rows, D).
template <class T>
void copy_kept_rows(const T* src, T* dst, index_t rows, index_t D, const std::uint8_t* keep) {
  if (src != dst) std::copy(src, src + rows * D, dst);
  zero_masked_rows(dst, rows, D, keep);
}

// σ(v) without overflow: exp of a non-positive number only.
template <class T>
T sigmoid(T v) {
  if (v >= T(0)) return T(1) / (T(1) + std::exp(-v));
  const T e = std::exp(v);
  return e / (T(1) + e);
}
// SiLU(v) = v σ(v) and its derivative σ(v) (1 + v (1 − σ(v))).
template <class T>
T silu(T v) { return v * sigmoid(v); }
template <class T>
T dsilu(T v) {
  const T s = sigmoid(v);
  return s * (T(1) + v * (T(1) - s));
}

}  // namespace seqswap::ops
