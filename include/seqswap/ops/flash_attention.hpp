// Streamed masked softmax attention (FlashAttention's online softmax), one query row and head at
// a time: a row's scores are computed key by key and never stored; the forward keeps per row only
// its maximum logit and normaliser (RowStats), and the backward recomputes every score from them.
// Ragged batches (offsets), keep-masks (masked keys leave every softmax, masked queries give zero
// rows) and the three sparsity policies of attention/policies.hpp (dense, top-k, threshold) with
// the same selection rules as attention::SoftmaxAttentionCore, which is this code's reference
// (tests/test_flash_attention.cpp).
//
// The row and tile functions are host-and-device: the host executor below runs them on the CPU
// block by block and tile by tile (that is how the algorithm, tiling included, is tested on a
// machine without a GPU), and the CUDA kernels (ops/cuda/attention.cuh) run the very same
// functions, one thread per row of a block, a tile of keys (or queries) in shared memory.
//
// Input: qkv (rows, 3D) as SoftmaxAttentionCore's qkv projection writes it (Q | K | V, head h at
// columns h·d .. h·d+d-1 of each). Output: pre (rows, D) = concat_h softmax(Q_h K_hᵀ / √d) V_h.
// Backward: dpre (rows, D), zero at masked rows -> dqkv (rows, 3D), assigned.
//
// Policies need the whole row before they can select, so they cost extra passes over the keys:
// threshold two (the dense normaliser first), top-k one per bit of the logit (a bitwise search
// for the k-th largest logit: 32 passes in float) before the accumulating pass.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "seqswap/config.hpp"  // SEQSWAP_HD
#include "seqswap/ops/rows.hpp"  // rows::dot

namespace seqswap::ops::flash {

using idx = std::int64_t;
inline constexpr int kMaxHeadDim = 128;  // the largest head width (a row's accumulators' size)

// Head width DH fixed at compile time, or 0: the sequence's d at run time. The host executor
// passes 0; the kernels specialise d = 16, 32 and 64 (float), where the loops over a row unroll
// and a row's accumulators (and query) stay in registers instead of local memory.
template <int DH>
SEQSWAP_HD idx width_or(idx d) {
  return DH > 0 ? idx(DH) : d;
}

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

// A score: q · k over d values, times the scale. Every pass that compares logits (the top-k
// search, the selection, the accumulation) computes them with this one function, so the equal
// logits of a tie stay equal wherever they are recomputed.
template <int DH = 0, class T>
SEQSWAP_HD T score_of(const T* q, const T* k, idx d, T scale) {
  T s = 0;
  for (idx e = 0; e < width_or<DH>(d); ++e) s += q[e] * k[e];
  return s * scale;
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
  SEQSWAP_HD T score(idx i, idx j) const { return score_of(q(i), k(j), d, scale); }
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

// ---- Tiles ----
// The work of one (sequence, head) is cut into blocks of query rows (forward, dQ) or key rows
// (dK, dV); a block walks the other side of the sequence a tile at a time. A tile's rows are
// copied once into block-local memory (shared memory on the device, a small buffer on the host)
// and read there by every row of the block: the keys and values of a query block, or the
// queries, output gradients, statistics and deltas of a key block. The functions below are the
// whole algorithm; the host executor and the kernels differ only in who runs a block's rows
// (a loop, or one thread each) and in the barriers around a tile's copy.

// The key tile [j0, j0 + len) of sq: keys and values (len × d each, contiguous) and keep flags.
// Copied element by element, lane, lane + lanes, ... (the device's threads share the copy; the
// host copies it as lane 0 of 1).
template <class T>
SEQSWAP_HD void load_key_tile(const Seq<T>& sq, idx j0, idx len, T* k, T* v, std::uint8_t* kp, idx lane, idx lanes) {
  const idx d = sq.d;
  for (idx x = lane; x < len * d; x += lanes) {
    const idx j = j0 + x / d, e = x % d;
    k[x] = sq.k(j)[e];
    v[x] = sq.v(j)[e];
  }
  for (idx j = lane; j < len; j += lanes) kp[j] = sq.kept(j0 + j);
}

// The query tile [i0, i0 + len) for the dK, dV blocks: queries and output gradients (len × d),
// each row's statistics and delta, keep flags.
template <class T>
SEQSWAP_HD void load_query_tile(const Seq<T>& sq, idx i0, idx len, const T* dout_rows, idx dout_stride,
                                const RowStats<T>* stats_rows, const T* delta_rows, idx stats_stride, T* q, T* dout,
                                RowStats<T>* st, T* delta, std::uint8_t* kp, idx lane, idx lanes) {
  const idx d = sq.d;
  for (idx x = lane; x < len * d; x += lanes) {
    const idx i = x / d, e = x % d;
    q[x] = sq.q(i0 + i)[e];
    dout[x] = dout_rows[(i0 + i) * dout_stride + e];
  }
  for (idx i = lane; i < len; i += lanes) {
    st[i] = stats_rows[(i0 + i) * stats_stride];
    delta[i] = delta_rows[(i0 + i) * stats_stride];
    kp[i] = sq.kept(i0 + i);
  }
}

// A query row's running state over the tiles: the online softmax's maximum and normaliser, the
// unnormalised output, and (top-k) how many tied keys it has taken.
template <class T>
struct RowAcc {
  T acc[kMaxHeadDim];
  T m, l;
  idx ties_seen;
};

// The passes before the accumulating one (a row's selection needs the whole row first): the
// top-k search for the k-th largest logit, one pass over the keys per bit; or the threshold's
// dense normaliser. Reads the keys in place (they are tiled only in the accumulating pass).
// Returns false for a masked query (its output is zero and its stats stay zero).
template <int DH = 0, class T>
SEQSWAP_HD bool forward_begin(const Problem<T>& p, const Seq<T>& sq, idx i, RowStats<T>& st, RowAcc<T>& a) {
  st = RowStats<T>{};
  for (idx e = 0; e < width_or<DH>(sq.d); ++e) a.acc[e] = T(0);
  a.m = -std::numeric_limits<T>::infinity();
  a.l = 0;
  a.ties_seen = 0;
  if (!sq.kept(i)) return false;
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
    a.m = m;  // threshold selects against the dense row's maximum (always selected): start there
  }
  return true;
}

// The accumulating pass over one key tile (k, v: len × d; kp: keep flags), in key order: the
// online softmax over the selected keys. q: the row's query (d values).
template <int DH = 0, class T>
SEQSWAP_HD void forward_tile(const Seq<T>& sq, const RowStats<T>& st, const T* q, const T* k, const T* v,
                             const std::uint8_t* kp, idx len, RowAcc<T>& a) {
  const idx d = width_or<DH>(sq.d);
  for (idx j = 0; j < len; ++j) {
    if (!kp[j]) continue;
    const T s = score_of<DH>(q, k + j * d, d, sq.scale);
    bool in = true;
    if (st.mode == 1) {
      in = s > st.kth || (s == st.kth && a.ties_seen++ < st.ties);
    } else if (st.mode == 2) {
      in = std::exp(s - a.m) * (T(1) / st.l_all) >= st.cut;
    }
    if (!in) continue;
    if (s > a.m) {  // a new maximum rescales what is accumulated
      const T c = std::exp(a.m - s);
      a.l *= c;
      for (idx e = 0; e < d; ++e) a.acc[e] *= c;
      a.m = s;
    }
    const T w = std::exp(s - a.m);
    a.l += w;
    const T* vj = v + j * d;
    for (idx e = 0; e < d; ++e) a.acc[e] += w * vj[e];
  }
}

// The row's output (d values) and the stats its backward needs; a masked query (kept false)
// gets zeros.
template <int DH = 0, class T>
SEQSWAP_HD void forward_end(const Seq<T>& sq, bool kept, const RowAcc<T>& a, RowStats<T>& st, T* out) {
  const idx d = width_or<DH>(sq.d);
  if (!kept) {
    for (idx e = 0; e < d; ++e) out[e] = T(0);
    return;
  }
  st.m = a.m;
  st.l = a.l;
  const T inv = T(1) / a.l;
  for (idx e = 0; e < d; ++e) out[e] = a.acc[e] * inv;
}

// delta_i = dO_i · O_i (Σ_j p_ij dP_ij) of query row i, head h.
template <class T>
SEQSWAP_HD T row_delta(const T* dout, const T* out, idx d) {
  return rows::dot(dout, out, d);
}

// dQ_i over one key tile [j0, j0 + len) (k, v, kp as forward_tile's): dq (d values, zeroed by
// the caller) += Σ_j dS_ij K_j with dS_ij = p_ij (dO_i·V_j − delta_i) · scale; q = Q_i and
// dout = dO_i (sq.q(i) and the row of dpre, or the caller's copies of them). The caller skips
// masked queries and rows with l = 0.
template <int DH = 0, class T>
SEQSWAP_HD void dq_tile(const Seq<T>& sq, const RowStats<T>& st, idx i, const T* q, const T* dout, T delta,
                        const T* k, const T* v, const std::uint8_t* kp, idx j0, idx len, T* dq) {
  const idx d = width_or<DH>(sq.d);
  const T inv = T(1) / st.l;
  for (idx j = 0; j < len; ++j) {
    if (!kp[j]) continue;
    const T* kj = k + j * d;
    const T s = score_of<DH>(q, kj, d, sq.scale);
    if (!selected(sq, st, i, j0 + j, s)) continue;
    const T pr = std::exp(s - st.m) * inv;
    const T* vj = v + j * d;
    T dp = 0;
    for (idx e = 0; e < d; ++e) dp += dout[e] * vj[e];
    const T ds = pr * (dp - delta) * sq.scale;
    for (idx e = 0; e < d; ++e) dq[e] += ds * kj[e];
  }
}

// dK_j, dV_j over one query tile [i0, i0 + len) (load_query_tile's q, dout, st, delta, kp):
// dk += Σ_i dS_ij Q_i, dv += Σ_i p_ij dO_i (zeroed by the caller; it skips masked keys). kj and
// vj: K_j and V_j, sq.k(j) and sq.v(j) or the caller's copies of them.
template <int DH = 0, class T>
SEQSWAP_HD void dkv_tile(const Seq<T>& sq, idx j, const T* kj, const T* vj, const T* q, const T* dout,
                         const RowStats<T>* st, const T* delta, const std::uint8_t* kp, idx i0, idx len, T* dk,
                         T* dv) {
  const idx d = width_or<DH>(sq.d);
  for (idx i = 0; i < len; ++i) {
    if (!kp[i] || st[i].l == T(0)) continue;
    const T* qi = q + i * d;
    const T s = score_of<DH>(qi, kj, d, sq.scale);
    if (!selected(sq, st[i], i0 + i, j, s)) continue;
    const T pr = std::exp(s - st[i].m) / st[i].l;
    const T* doi = dout + i * d;
    T dp = 0;
    for (idx e = 0; e < d; ++e) {
      dv[e] += pr * doi[e];
      dp += doi[e] * vj[e];
    }
    const T ds = pr * (dp - delta[i]) * sq.scale;
    for (idx e = 0; e < d; ++e) dk[e] += ds * qi[e];
  }
}

// Tile sizes: rows per block and rows per tile. The kernels use kDeviceTiles (a block of 64
// threads; a float tile of 32 keys at head width 128 is 32 KB of shared memory).
struct Tiles {
  idx rows = 64;
  idx tile = 32;
};
inline constexpr Tiles kDeviceTiles{64, 32};

// The block-th (sequence, row block) of the batch in sequence order, each sequence cut into
// ceil(n / rows) blocks (empty sequences have none): false past the last. Each device block
// finds its own work this way (a loop over the batch, cheap beside the block's work).
SEQSWAP_HD bool locate_block(const idx* offsets, idx batch, idx rows, idx block, idx& b, idx& r0) {
  idx before = 0;
  for (idx s = 0; s < batch; ++s) {
    const idx nb = (offsets[s + 1] - offsets[s] + rows - 1) / rows;
    if (block < before + nb) {
      b = s;
      r0 = (block - before) * rows;
      return true;
    }
    before += nb;
  }
  return false;
}

// An upper bound on the number of blocks (the launch's grid): Σ ceil(n_b / rows) ≤ total / rows + batch.
inline idx max_blocks(idx total_rows, idx batch, idx rows) { return total_rows / rows + batch; }

// Refuses what the row functions cannot do; returns an empty string when the problem is fine.
template <class T>
inline const char* unsupported(const Problem<T>& p) {
  if (p.heads <= 0 || p.dim % p.heads != 0) return "width not divisible by heads";
  if (p.dim / p.heads > kMaxHeadDim) return "head width above flash::kMaxHeadDim (128)";
  if (p.top_k < 0 || p.threshold < 0 || p.threshold > 1) return "top_k < 0 or threshold outside [0, 1]";
  return "";
}

// ---- The host executor: the device kernels' algorithm, block by block on the CPU. ----

// DH: as the row functions' (0, or the head width fixed at compile time, as the kernels
// specialise it: tests/test_flash_attention.cpp checks that both give the same bits).
inline void check_fixed_width(int DH, idx d) {
  if (DH > 0 && idx(DH) != d)
    throw std::invalid_argument("flash: a fixed head width of " + std::to_string(DH) + " for a problem of head width " +
                                std::to_string(d));
}

// pre (rows, D), stats (rows · heads, row-major by row then head).
template <int DH = 0, class T>
void forward_host(const Problem<T>& p, T* pre, RowStats<T>* stats, Tiles tl = kDeviceTiles) {
  const idx D = p.dim, H = p.heads, d = D / H;
  check_fixed_width(DH, d);
  std::vector<T> k(std::size_t(tl.tile * d)), v(k.size());
  std::vector<std::uint8_t> kp(std::size_t(tl.tile));
  std::vector<RowAcc<T>> acc(std::size_t(tl.rows));
  std::vector<char> live(std::size_t(tl.rows));
  for (idx b = 0; b < p.batch; ++b)
    for (idx h = 0; h < H; ++h) {
      const Seq<T> sq = sequence(p, b, h);
      const idx t0 = p.offsets[b];
      for (idx i0 = 0; i0 < sq.n; i0 += tl.rows) {
        const idx rows = std::min(tl.rows, sq.n - i0);
        for (idx r = 0; r < rows; ++r)
          live[std::size_t(r)] = forward_begin<DH>(p, sq, i0 + r, stats[(t0 + i0 + r) * H + h], acc[std::size_t(r)]);
        for (idx j0 = 0; j0 < sq.n; j0 += tl.tile) {
          const idx len = std::min(tl.tile, sq.n - j0);
          load_key_tile(sq, j0, len, k.data(), v.data(), kp.data(), 0, 1);
          for (idx r = 0; r < rows; ++r)
            if (live[std::size_t(r)])
              forward_tile<DH>(sq, stats[(t0 + i0 + r) * H + h], sq.q(i0 + r), k.data(), v.data(), kp.data(), len,
                               acc[std::size_t(r)]);
        }
        for (idx r = 0; r < rows; ++r)
          forward_end<DH>(sq, bool(live[std::size_t(r)]), acc[std::size_t(r)], stats[(t0 + i0 + r) * H + h],
                          pre + (t0 + i0 + r) * D + h * d);
      }
    }
}

// dqkv (rows, 3D) assigned; delta (rows · heads) scratch.
template <int DH = 0, class T>
void backward_host(const Problem<T>& p, const RowStats<T>* stats, const T* pre, const T* dpre, T* delta, T* dqkv,
                   Tiles tl = kDeviceTiles) {
  const idx D = p.dim, H = p.heads, d = D / H, total = p.offsets[p.batch];
  check_fixed_width(DH, d);
  for (idx t = 0; t < total; ++t)
    for (idx h = 0; h < H; ++h) delta[t * H + h] = row_delta(dpre + t * D + h * d, pre + t * D + h * d, d);
  std::vector<T> a(std::size_t(tl.tile * d)), c(a.size()), dl(std::size_t(tl.tile));
  std::vector<std::uint8_t> kp(std::size_t(tl.tile));
  std::vector<RowStats<T>> st(std::size_t(tl.tile));
  for (idx b = 0; b < p.batch; ++b)
    for (idx h = 0; h < H; ++h) {
      const Seq<T> sq = sequence(p, b, h);
      const idx t0 = p.offsets[b];
      const auto dq = [&](idx i) { return dqkv + (t0 + i) * 3 * D + h * d; };
      const auto dk = [&](idx j) { return dqkv + (t0 + j) * 3 * D + D + h * d; };
      const auto dv = [&](idx j) { return dqkv + (t0 + j) * 3 * D + 2 * D + h * d; };
      for (idx i = 0; i < sq.n; ++i)
        for (idx e = 0; e < d; ++e) dq(i)[e] = dk(i)[e] = dv(i)[e] = T(0);
      // dQ: query blocks over key tiles (a, c = the tile's keys and values).
      for (idx i0 = 0; i0 < sq.n; i0 += tl.rows) {
        const idx rows = std::min(tl.rows, sq.n - i0);
        for (idx j0 = 0; j0 < sq.n; j0 += tl.tile) {
          const idx len = std::min(tl.tile, sq.n - j0);
          load_key_tile(sq, j0, len, a.data(), c.data(), kp.data(), 0, 1);
          for (idx i = i0; i < i0 + rows; ++i) {
            const RowStats<T>& s = stats[(t0 + i) * H + h];
            if (!sq.kept(i) || s.l == T(0)) continue;
            dq_tile<DH>(sq, s, i, sq.q(i), dpre + (t0 + i) * D + h * d, delta[(t0 + i) * H + h], a.data(), c.data(),
                        kp.data(), j0, len, dq(i));
          }
        }
      }
      // dK, dV: key blocks over query tiles (a, c = the tile's queries and output gradients).
      for (idx j0 = 0; j0 < sq.n; j0 += tl.rows) {
        const idx rows = std::min(tl.rows, sq.n - j0);
        for (idx i0 = 0; i0 < sq.n; i0 += tl.tile) {
          const idx len = std::min(tl.tile, sq.n - i0);
          load_query_tile(sq, i0, len, dpre + t0 * D + h * d, D, stats + t0 * H + h, delta + t0 * H + h, H, a.data(),
                          c.data(), st.data(), dl.data(), kp.data(), 0, 1);
          for (idx j = j0; j < j0 + rows; ++j)
            if (sq.kept(j))
              dkv_tile<DH>(sq, j, sq.k(j), sq.v(j), a.data(), c.data(), st.data(), dl.data(), kp.data(), i0, len,
                           dk(j), dv(j));
        }
      }
    }
}

}  // namespace seqswap::ops::flash
