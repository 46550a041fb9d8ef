// The fused selective scan (Mamba's selective_scan_fwd, on the CPU): per (sequence, channel e)
// with a state of S values,
//   h_t = exp(Δ_t[e] A[e]) ⊙ h_{t-1} + Δ_t[e] u_t[e] B_t,   y_t[e] = C_t · h_t + D[e] u_t[e]
// in one pass over the tokens, the state in a small per-thread vector: exp(ΔA) and ΔBu are
// never materialised for all tokens. Optionally it saves the state entering every `chunk`
// tokens (the backward pass recomputes h from those checkpoints).
//
// Layout (all row-major, rows = tokens of a ragged batch, offsets (batch+1)):
//   delta, u   (T, E)
//   bc         (T, ldbc): B_t at bc + t·ldbc, C_t right after it (S values each)
//   A          (E, S);  Dskip (E)
//   y          (T, E): assigned, or added to when `accumulate` (a second direction)
//   ckpt       (ck_offs[batch], E, S) when not null: the state entering tokens k = 0, chunk, ...
// `reverse` walks each sequence from its last token to its first (the backward direction of a
// bidirectional mixer). The mixer's materialised reference (a, b through ops::linear_scan)
// must agree with it (tests/test_mixer_ssm_selective.cpp).
#pragma once
#include <Eigen/Core>
#include <algorithm>

#include "seqswap/backend/host.hpp"
#include "seqswap/core/error.hpp"

namespace seqswap::ops {

inline constexpr index_t kSelectiveScanMaxState = 256;

template <class T>
struct SelectiveScanArgs {
  const T* delta = nullptr;
  const T* u = nullptr;
  const T* bc = nullptr;
  index_t ldbc = 0;
  const T* A = nullptr;
  const T* Dskip = nullptr;
  const index_t* offsets = nullptr;
  index_t batch = 0;
  index_t E = 0;
  index_t S = 0;
  bool reverse = false;
  bool accumulate = false;
  T* y = nullptr;
  T* ckpt = nullptr;                 // optional
  const index_t* ck_offs = nullptr;  // (batch+1), with ckpt
  index_t chunk = 0;                 // tokens between checkpoints, with ckpt
};

namespace detail {
// One (sequence, channel) item; kS = S at compile time (Eigen::Dynamic otherwise), so the
// common state sizes run fully unrolled in vector registers.
template <int kS, class T>
void selective_scan_item(const SelectiveScanArgs<T>& a, index_t b, index_t e) {
  using CMap = host::CArrMap<T, kS>;
  const index_t E = a.E, S = a.S, t0 = a.offsets[b], n = a.offsets[b + 1] - t0;
  alignas(64) T state[kSelectiveScanMaxState];
  host::ArrMap<T, kS> H(state, S);
  H.setZero();
  const CMap Ae(a.A + e * S, S);
  for (index_t k = 0; k < n; ++k) {
    if (a.ckpt && k % a.chunk == 0)
      std::copy(state, state + S, a.ckpt + ((a.ck_offs[b] + k / a.chunk) * E + e) * S);
    const index_t t = t0 + (a.reverse ? n - 1 - k : k);
    const T dl = a.delta[t * E + e], uu = a.u[t * E + e];
    const CMap Bt(a.bc + t * a.ldbc, S), Ct(a.bc + t * a.ldbc + S, S);
    H = (dl * Ae).exp() * H + (dl * uu) * Bt;  // Eigen's vectorised exp over the S states
    const T yv = (Ct * H).sum() + a.Dskip[e] * uu;
    a.y[t * E + e] = a.accumulate ? a.y[t * E + e] + yv : yv;
  }
}
}  // namespace detail

template <class T>
void selective_scan_forward(const SelectiveScanArgs<T>& a) {
  const index_t E = a.E, S = a.S;
  check(S > 0 && S <= kSelectiveScanMaxState, "selective_scan_forward: expected a state size in [1, ",
        kSelectiveScanMaxState, "], found ", S);
  check(!a.ckpt || (a.ck_offs && a.chunk > 0),
        "selective_scan_forward: checkpoints need ck_offs and chunk > 0, found chunk ", a.chunk);
  const index_t items = a.batch * E;
#pragma omp parallel for schedule(static) if (items > 1)
  for (index_t i = 0; i < items; ++i) {
    const index_t b = i / E, e = i % E;
    if (S == 16) detail::selective_scan_item<16>(a, b, e);
    else if (S == 8) detail::selective_scan_item<8>(a, b, e);
    else detail::selective_scan_item<Eigen::Dynamic>(a, b, e);
  }
}

}  // namespace seqswap::ops
