// Sparsity policies of the one softmax attention. The keep-mask (halting) is carried by the
// token view itself and always honoured; a policy tag chooses what else is dropped from each
// attention row, and selects its row rule — a delegate class, one per tag (CUB style), so a new
// policy is a new tag and a new RowRule specialisation, not a branch inside the attention.
// Sizes (k, τ) are runtime options in SoftmaxAttentionOptions, so one tag serves every k, τ.
//
// A sparse policy selects, per query row, a subset S of the kept keys from the dense softmax
// p, and the row becomes p restricted to S and renormalised (= softmax over S). Backward
// treats S as fixed: the gradient flows through the kept entries of the renormalised softmax
// only (a dropped entry is 0 in the stored row, so the dense softmax backward is already the
// right one).
#pragma once
#include <algorithm>
#include <functional>

#include "seqswap/core/backend.hpp"
#include "seqswap/core/error.hpp"
#include "seqswap/ops/softmax.hpp"

namespace seqswap::sparse {

struct Dense {};      // every kept key takes part
struct TopK {};       // the top_k largest logits per query (top_k = 0 or ≥ kept keys: all)
struct Threshold {};  // keys whose dense probability is ≥ threshold / N_kept (0: all)

// The sizes a rule reads (SoftmaxAttentionOptions' top_k and threshold).
struct RowRuleSizes {
  index_t top_k = 0;
  double threshold = 0.0;
};

// RowRule<Tag>::apply(row, n, keep, i, n_kept, sel, sizes): row (n) logits of query i -> its
// probabilities, in place. n_kept = kept keys of the sequence; sel (n) scratch when
// kNeedsScratch. name: the policy's name in messages and reports.
template <class Policy>
struct RowRule {
  static_assert(dependent_false<Policy>,
                "SoftmaxAttention: unknown sparsity policy; use a tag from attention/policies.hpp");
};

template <>
struct RowRule<Dense> {
  static constexpr const char* name = "dense";
  static constexpr bool kNeedsScratch = false;
  template <class T>
  static void apply(T* row, index_t n, const std::uint8_t* keep, index_t i, index_t, T*, const RowRuleSizes&) {
    ops::masked_softmax_row(row, n, keep, i);
  }
};

template <>
struct RowRule<TopK> {
  static constexpr const char* name = "top_k";
  static constexpr bool kNeedsScratch = true;
  template <class T>
  static void apply(T* row, index_t n, const std::uint8_t* keep, index_t i, index_t n_kept, T* sel,
                    const RowRuleSizes& s) {
    const index_t k = s.top_k;
    if (k <= 0 || k >= n_kept || (keep && !keep[i])) {
      ops::masked_softmax_row(row, n, keep, i);
      return;
    }
    // Keep the k largest logits (ties: lower key index first); the rest leave the softmax
    // like masked keys.
    index_t m = 0;
    for (index_t j = 0; j < n; ++j)
      if (!keep || keep[j]) sel[m++] = row[j];
    std::nth_element(sel, sel + (k - 1), sel + m, std::greater<T>());
    const T kth = sel[k - 1];
    index_t above = 0;
    for (index_t j = 0; j < m; ++j) above += sel[j] > kth;
    index_t ties = k - above;
    // sel[j] <- 1 for the chosen keys, else 0.
    for (index_t j = 0; j < n; ++j) {
      bool chosen = false;
      if (!keep || keep[j]) {
        chosen = row[j] > kth;
        if (!chosen && row[j] == kth && ties > 0) {
          --ties;
          chosen = true;
        }
      }
      sel[j] = chosen ? T(1) : T(0);
    }
    ops::masked_softmax_row(row, n, keep, i, sel);
  }
};

template <>
struct RowRule<Threshold> {
  static constexpr const char* name = "threshold";
  static constexpr bool kNeedsScratch = false;
  template <class T>
  static void apply(T* row, index_t n, const std::uint8_t* keep, index_t i, index_t n_kept, T*,
                    const RowRuleSizes& s) {
    ops::masked_softmax_row(row, n, keep, i);
    if (s.threshold <= 0.0 || (keep && !keep[i])) return;
    // Drop p < τ / N_kept; the row's largest entry always stays (rounding at τ = 1).
    T mx = 0;
    for (index_t j = 0; j < n; ++j) mx = std::max(mx, row[j]);
    const T cut = std::min(T(s.threshold / double(n_kept)), mx);
    T sum = 0;
    for (index_t j = 0; j < n; ++j) {
      if (row[j] < cut) row[j] = T(0);
      sum += row[j];
    }
    const T inv = T(1) / sum;
    for (index_t j = 0; j < n; ++j) row[j] *= inv;
  }
};

}  // namespace seqswap::sparse
