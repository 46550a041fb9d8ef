// Streamed masked softmax attention (FlashAttention's online softmax), one query row and head at
// a time: a row's scores are computed key by key and never stored; the forward keeps per row only
// its maximum logit and normaliser (RowStats), and the backward recomputes every score from them.
// Ragged batches (offsets), keep-masks (masked keys leave every softmax, masked queries give zero
// rows) and the three sparsity policies of attention/policies.hpp (dense, top-k, threshold) with
// the same selection rules as attention::SoftmaxAttentionCore, which is this code's reference
// (tests/test_flash_attention.cpp).
//
// The row functions are host-and-device: the host executor below runs them on the CPU (that is
// how the algorithm is tested on a machine without a GPU), and the CUDA kernels
// (ops/cuda/attention.cuh) run the very same functions, one thread per (query row, head).
//
// Input: qkv (rows, 3D) as SoftmaxAttentionCore's qkv projection writes it (Q | K | V, head h at
// columns h·d .. h·d+d-1 of each). Output: pre (rows, D) = concat_h softmax(Q_h K_hᵀ / √d) V_h.
// Backward: dpre (rows, D), zero at masked rows -> dqkv (rows, 3D), assigned.
//
// Policies need the whole row before they can select, so they cost extra passes over the keys:
// threshold two (the dense normaliser first), top-k one per bit of the logit (a bitwise search
// for the k-th largest logit: 32 passes in float) before the accumulating pass.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "seqswap/config.hpp"  // SEQSWAP_HD
#include "seqswap/ops/rows.hpp"  // rows::dot

namespace seqswap::ops::flash {

using idx = std::int64_t;
inline constexpr int kMaxHeadDim = 128;  // a row's output accumulator lives in registers

enum class Rule : int { dense = 0, top_k = 1, threshold = 2 };

// One attention problem. On the device every pointer is a device pointer.
template <class T>
struct Problem {
  const T* qkv = nullptr;               // (rows, 3D)
  const idx* offsets = nullptr;         // (batch + 1)
  const std::uint8_t* keep = nullptr;   // (rows) or nullptr: every token kept
  idx batch = 0, dim = 0, heads = 1;
  Rule rule = Rule::dense;
  idx top_k = 0;           // Rule::top_k: keys kept per query row (0 or ≥ kept keys: all)
  double threshold = 0.0;  // Rule::threshold: drop p < τ / N_kept (0: none)
};

// Per (query row, head): what the backward needs to recompute the row's probabilities.
// p_j = exp(s_j − m) / l on the selected keys, 0 elsewhere.
template <class T>
struct RowStats {
  T m = 0;       // the largest logit of the kept keys (always selected)
  T l = 0;       // Σ over the selected keys of exp(s − m); 0 for a masked query
  T l_all = 0;   // threshold: the dense normaliser (over every kept key)
  T cut = 0;     // threshold: keep key j when exp(s_j − m) / l_all ≥ cut
  T kth = 0;     // top-k: the k-th largest logit
  idx ties = 0;  // top-k: keys equal to kth that are selected (the first ones by key index)
  int mode = 0;  // 0 every kept key, 1 top-k, 2 threshold
};

// The sequence holding global row t (offsets non-decreasing, offsets[0] = 0 ≤ t < offsets[batch]):
// binary search; empty sequences are skipped.
SEQSWAP_HD idx sequence_of(const idx* offsets, idx batch, idx t) {
  idx lo = 0, hi = batch - 1;  // invariant: offsets[lo] ≤ t < offsets[hi + 1]
  while (lo < hi) {
    const idx mid = (lo + hi + 1) / 2;
    if (offsets[mid] <= t) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// Order-preserving unsigned keys of floating-point values (for the top-k bitwise search).
template <class T>
using OrderedBits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
template <class T>
SEQSWAP_HD OrderedBits<T> bits_of(T v) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(T) == 4) return __float_as_uint(v);
  else return static_cast<std::uint64_t>(__double_as_longlong(v));
#else
  OrderedBits<T> u;
  std::memcpy(&u, &v, sizeof(T));
  return u;
#endif
}
template <class T>
SEQSWAP_HD T value_of(OrderedBits<T> u) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(T) == 4) return __uint_as_float(u);
  else return __longlong_as_double(static_cast<long long>(u));
#else
  T v;
  std::memcpy(&v, &u, sizeof(T));
  return v;
#endif
}
template <class T>
SEQSWAP_HD OrderedBits<T> ordered(T v) {
  using U = OrderedBits<T>;
  constexpr U sign = U(1) << (8 * sizeof(T) - 1);
  const U u = bits_of(v);
  return (u & sign) ? U(~u) : U(u | sign);
}
template <class T>
SEQSWAP_HD T from_ordered(OrderedBits<T> u) {
  using U = OrderedBits<T>;
  constexpr U sign = U(1) << (8 * sizeof(T) - 1);
  return value_of<T>((u & sign) ? U(u & ~sign) : U(~u));
}

// One (sequence, head) as the row functions see it.
template <class T>
struct Seq {
  const T* qkv;               // the sequence's first row
  const std::uint8_t* keep;   // its keep flags or nullptr
  idx n, D, d, h;
  T scale;
  SEQSWAP_HD const T* q(idx i) const { return qkv + i * 3 * D + h * d; }
  SEQSWAP_HD const T* k(idx j) const { return qkv + j * 3 * D + D + h * d; }
  SEQSWAP_HD const T* v(idx j) const { return qkv + j * 3 * D + 2 * D + h * d; }
  SEQSWAP_HD bool kept(idx j) const { return !keep || keep[j]; }
  SEQSWAP_HD T score(idx i, idx j) const {
    const T* a = q(i);
    const T* b = k(j);
    T s = 0;
    for (idx e = 0; e < d; ++e) s += a[e] * b[e];
    return s * scale;
  }
};

template <class T>
SEQSWAP_HD Seq<T> sequence(const Problem<T>& p, idx b, idx h) {
  const idx t0 = p.offsets[b], d = p.dim / p.heads;
  return {p.qkv + t0 * 3 * p.dim, p.keep ? p.keep + t0 : nullptr, p.offsets[b + 1] - t0, p.dim, d, h,
          T(1) / std::sqrt(T(d))};
}

// Is key j in query i's selection (key j kept; s = its logit)?
template <class T>
SEQSWAP_HD bool selected(const Seq<T>& sq, const RowStats<T>& st, idx i, idx j, T s) {
  if (st.mode == 1) {
    if (s != st.kth) return s > st.kth;
    idx before = 0;  // ties broken by key index, as the host's selection does
    for (idx j2 = 0; j2 < j; ++j2)
      if (sq.kept(j2) && sq.score(i, j2) == st.kth) ++before;
    return before < st.ties;
  }
  if (st.mode == 2) return std::exp(s - st.m) * (T(1) / st.l_all) >= st.cut;
  return true;
}

// Query row i of head h: out (d values, the row's slice of pre) and its stats.
template <class T>
SEQSWAP_HD void forward_row(const Problem<T>& p, const Seq<T>& sq, idx i, T* out, RowStats<T>& st) {
  st = RowStats<T>{};
  if (!sq.kept(i)) {
    for (idx e = 0; e < sq.d; ++e) out[e] = T(0);
    return;
  }
  idx n_kept = 0;
  for (idx j = 0; j < sq.n; ++j) n_kept += sq.kept(j);
  if (p.rule == Rule::top_k && p.top_k > 0 && p.top_k < n_kept) {
    st.mode = 1;
    // The k-th largest logit: the largest key u with #{j : ordered(s_j) ≥ u} ≥ k, bit by bit.
    using U = OrderedBits<T>;
    U ans = 0;
    for (int bit = int(8 * sizeof(T)) - 1; bit >= 0; --bit) {
      const U cand = ans | (U(1) << bit);
      idx count = 0;
      for (idx j = 0; j < sq.n; ++j)
        if (sq.kept(j) && ordered(sq.score(i, j)) >= cand) ++count;
      if (count >= p.top_k) ans = cand;
    }
    st.kth = from_ordered<T>(ans);
    idx above = 0;
    for (idx j = 0; j < sq.n; ++j)
      if (sq.kept(j) && sq.score(i, j) > st.kth) ++above;
    st.ties = p.top_k - above;
  } else if (p.rule == Rule::threshold && p.threshold > 0) {
    st.mode = 2;
    T m = -std::numeric_limits<T>::infinity(), l = 0;
    for (idx j = 0; j < sq.n; ++j) {
      if (!sq.kept(j)) continue;
      const T s = sq.score(i, j);
      if (s > m) {
        l *= std::exp(m - s);
        m = s;
      }
      l += std::exp(s - m);
    }
    st.l_all = l;
    st.m = m;
    const T inv = T(1) / l, tau = T(p.threshold / double(n_kept));
    st.cut = tau < inv ? tau : inv;  // the row's largest probability (1 / l) always stays
  }
  // The accumulating pass: online softmax over the selected keys.
  T acc[kMaxHeadDim];
  for (idx e = 0; e < sq.d; ++e) acc[e] = T(0);
  // Threshold selects against the dense row's maximum (always selected), so its pass starts there.
  T m = st.mode == 2 ? st.m : -std::numeric_limits<T>::infinity(), l = 0;
  idx ties_seen = 0;
  for (idx j = 0; j < sq.n; ++j) {
    if (!sq.kept(j)) continue;
    const T s = sq.score(i, j);
    bool in = true;
    if (st.mode == 1) {
      in = s > st.kth || (s == st.kth && ties_seen++ < st.ties);
    } else if (st.mode == 2) {
      in = std::exp(s - m) * (T(1) / st.l_all) >= st.cut;
    }
    if (!in) continue;
    if (s > m) {  // a new maximum rescales what is accumulated
      const T c = std::exp(m - s);
      l *= c;
      for (idx e = 0; e < sq.d; ++e) acc[e] *= c;
      m = s;
    }
    const T w = std::exp(s - m);
    l += w;
    const T* vj = sq.v(j);
    for (idx e = 0; e < sq.d; ++e) acc[e] += w * vj[e];
  }
  st.m = m;
  st.l = l;
  const T inv = T(1) / l;
  for (idx e = 0; e < sq.d; ++e) out[e] = acc[e] * inv;
}

// delta_i = dO_i · O_i (Σ_j p_ij dP_ij) of query row i, head h.
template <class T>
SEQSWAP_HD T row_delta(const T* dout, const T* out, idx d) {
  return rows::dot(dout, out, d);
}

// dQ_i (d values): Σ_j dS_ij K_j with dS_ij = p_ij (dO_i·V_j − delta_i) · scale.
template <class T>
SEQSWAP_HD void dq_row(const Seq<T>& sq, const RowStats<T>& st, idx i, const T* dout, T delta, T* dq) {
  for (idx e = 0; e < sq.d; ++e) dq[e] = T(0);
  if (!sq.kept(i) || st.l == T(0)) return;
  const T inv = T(1) / st.l;
  for (idx j = 0; j < sq.n; ++j) {
    if (!sq.kept(j)) continue;
    const T s = sq.score(i, j);
    if (!selected(sq, st, i, j, s)) continue;
    const T pr = std::exp(s - st.m) * inv;
    const T* vj = sq.v(j);
    T dp = 0;
    for (idx e = 0; e < sq.d; ++e) dp += dout[e] * vj[e];
    const T ds = pr * (dp - delta) * sq.scale;
    const T* kj = sq.k(j);
    for (idx e = 0; e < sq.d; ++e) dq[e] += ds * kj[e];
  }
}

// dK_j, dV_j (d values each) of key row j: Σ_i dS_ij Q_i and Σ_i p_ij dO_i. dout(i), stats(i),
// delta(i): the sequence's query rows' (callables, so the host and the device index alike).
template <class T, class DOut, class Stats, class Delta>
SEQSWAP_HD void dkv_row(const Seq<T>& sq, idx j, DOut dout, Stats stats, Delta delta, T* dk, T* dv) {
  for (idx e = 0; e < sq.d; ++e) dk[e] = dv[e] = T(0);
  if (!sq.kept(j)) return;
  const T* vj = sq.v(j);
  for (idx i = 0; i < sq.n; ++i) {
    const RowStats<T>& st = stats(i);
    if (!sq.kept(i) || st.l == T(0)) continue;
    const T s = sq.score(i, j);
    if (!selected(sq, st, i, j, s)) continue;
    const T pr = std::exp(s - st.m) / st.l;
    const T* doi = dout(i);
    T dp = 0;
    for (idx e = 0; e < sq.d; ++e) {
      dv[e] += pr * doi[e];
      dp += doi[e] * vj[e];
    }
    const T ds = pr * (dp - delta(i)) * sq.scale;
    const T* qi = sq.q(i);
    for (idx e = 0; e < sq.d; ++e) dk[e] += ds * qi[e];
  }
}

// Refuses what the row functions cannot do; returns an empty string when the problem is fine.
template <class T>
inline const char* unsupported(const Problem<T>& p) {
  if (p.heads <= 0 || p.dim % p.heads != 0) return "width not divisible by heads";
  if (p.dim / p.heads > kMaxHeadDim) return "head width above flash::kMaxHeadDim (128)";
  if (p.top_k < 0 || p.threshold < 0 || p.threshold > 1) return "top_k < 0 or threshold outside [0, 1]";
  return "";
}

// ---- The host executor: the device kernels' algorithm, row by row on the CPU. ----

// pre (rows, D), stats (rows · heads, row-major by row then head).
template <class T>
void forward_host(const Problem<T>& p, T* pre, RowStats<T>* stats) {
  const idx d = p.dim / p.heads;
  for (idx b = 0; b < p.batch; ++b)
    for (idx h = 0; h < p.heads; ++h) {
      const Seq<T> sq = sequence(p, b, h);
      const idx t0 = p.offsets[b];
      for (idx i = 0; i < sq.n; ++i)
        forward_row(p, sq, i, pre + (t0 + i) * p.dim + h * d, stats[(t0 + i) * p.heads + h]);
    }
}

// dqkv (rows, 3D) assigned; delta (rows · heads) scratch.
template <class T>
void backward_host(const Problem<T>& p, const RowStats<T>* stats, const T* pre, const T* dpre, T* delta, T* dqkv) {
  const idx D = p.dim, H = p.heads, d = D / H, rows = p.offsets[p.batch];
  for (idx t = 0; t < rows; ++t)
    for (idx h = 0; h < H; ++h) delta[t * H + h] = row_delta(dpre + t * D + h * d, pre + t * D + h * d, d);
  for (idx b = 0; b < p.batch; ++b)
    for (idx h = 0; h < H; ++h) {
      const Seq<T> sq = sequence(p, b, h);
      const idx t0 = p.offsets[b];
      const auto dout = [&](idx i) { return dpre + (t0 + i) * D + h * d; };
      const auto st = [&](idx i) -> const RowStats<T>& { return stats[(t0 + i) * H + h]; };
      const auto dl = [&](idx i) { return delta[(t0 + i) * H + h]; };
      for (idx i = 0; i < sq.n; ++i) {
        T* row = dqkv + (t0 + i) * 3 * D;
        dq_row(sq, st(i), i, dout(i), dl(i), row + h * d);
        dkv_row(sq, i, dout, st, dl, row + D + h * d, row + 2 * D + h * d);
      }
    }
}

}  // namespace seqswap::ops::flash
