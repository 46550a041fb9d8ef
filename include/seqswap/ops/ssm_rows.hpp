// The selective SSM's device math (mixers/ssm_selective.hpp on backend::Cuda) as host-and-device
// functions: the CUDA kernels (ops/cuda/ssm.cuh) run them one thread per element, per
// (sequence, channel) or per warp of channels, and the device emulation that tests the layers'
// device paths on a machine without a GPU (tests/device_emulation.hpp) runs the very same
// functions in loops. The mixer's host path (Eigen, per-thread partial sums) is the reference
// both are compared with (tests/device_model_checks.hpp).
//
// Layout, as in the mixer: rows are the kept tokens in compact storage (each sequence's kept
// tokens in scan order; offsets (batch+1) over them); a direction walks its sequence forwards
// or, when `reverse`, from the end. Channels e < E; S states per channel.
//
//   conv:  v_k = b[e] + Σ_j w[e, j] u_{k-(K-1)+j}[e]   (causal along the direction), u'_k = SiLU(v_k)
//   scan:  h_k = exp(Δ_k A[e]) ⊙ h_{k-1} + Δ_k u'_k B_k,  y_k = C_k · h_k + D[e] u'_k
//
// The device scan keeps the state of one channel in registers (S ≤ kDeviceMaxState) and saves
// it every `chunk` ≤ kDeviceChunk tokens; its backward recomputes each chunk's states from that
// checkpoint into a (chunk, S) local array and walks the chunk backwards. dB and dC of a token
// are sums over channels: each group of kGroup channels (a warp on the device) reduces its
// share, then the groups are added in order (no atomics: deterministic). dA_log and dD are sums
// over sequences: one partial per (sequence, channel), added in order afterwards.
#pragma once
#include <cmath>
#include <cstdint>

#include "seqswap/config.hpp"  // SEQSWAP_HD
#include "seqswap/ops/rows.hpp"

namespace seqswap::ops::ssm {

using idx = std::int64_t;

inline constexpr idx kDeviceMaxState = 64;  // states per channel on the device
inline constexpr idx kDeviceChunk = 16;     // tokens between the device scan's checkpoints, at most
inline constexpr idx kGroup = 32;           // channels whose dB, dC one warp reduces

// The sequence of row r: the last b with offsets[b] <= r (an empty sequence is skipped).
SEQSWAP_HD idx sequence_of(const idx* offsets, idx batch, idx r) {
  idx lo = 0, hi = batch;
  while (hi - lo > 1) {
    const idx mid = (lo + hi) / 2;
    if (offsets[mid] <= r) lo = mid;
    else hi = mid;
  }
  return lo;
}
// The row of the k-th token of the sequence starting at t0 with n tokens, in a direction.
SEQSWAP_HD idx row_at(idx t0, idx n, idx k, bool reverse) { return t0 + (reverse ? n - 1 - k : k); }

template <class T>
SEQSWAP_HD T silu(T v) {
  return v * rows::sigmoid(v);
}
// SiLU'(v) = σ(v) (1 + v (1 − σ(v)))
template <class T>
SEQSWAP_HD T silu_grad(T v) {
  const T s = rows::sigmoid(v);
  return s * (T(1) + v * (T(1) - s));
}
// softplus(v) = max(v, 0) + log1p(exp(−|v|)): no overflow.
template <class T>
SEQSWAP_HD T softplus(T v) {
  return (v > T(0) ? v : T(0)) + std::log1p(std::exp(-std::fabs(v)));
}

// Element-wise steps, f(i) does element i.
template <class T>
struct NegExp {  // A = −exp(A_log)
  const T* x;
  T* y;
  SEQSWAP_HD void operator()(idx i) const { y[i] = -std::exp(x[i]); }
};
template <class T>
struct Softplus {  // Δ = softplus(dtp)
  const T* x;
  T* y;
  SEQSWAP_HD void operator()(idx i) const { y[i] = softplus(x[i]); }
};
template <class T>
struct Gate {  // pre = (y_fwd + y_bwd) ⊙ SiLU(z)
  const T *ys, *z;
  T* out;
  SEQSWAP_HD void operator()(idx i) const { out[i] = ys[i] * silu(z[i]); }
};
template <class T>
struct GateBackward {  // dy = dpre ⊙ SiLU(z), dz = dpre ⊙ ys ⊙ SiLU'(z)
  const T *dp, *z, *ys;
  T *dys, *dz;
  SEQSWAP_HD void operator()(idx i) const {
    const T d = dp[i];
    dys[i] = d * silu(z[i]);
    dz[i] = d * ys[i] * silu_grad(z[i]);
  }
};
template <class T>
struct SiluBackward {  // d *= SiLU'(v)
  const T* v;
  T* d;
  SEQSWAP_HD void operator()(idx i) const { d[i] *= silu_grad(v[i]); }
};
template <class T>
struct CopyBlock {  // dst (rows, cols; leading dimension ld_dst) <- src (rows, cols; ld_src)
  const T* src;
  idx ld_src, cols;
  T* dst;
  idx ld_dst;
  SEQSWAP_HD void operator()(idx i) const { dst[(i / cols) * ld_dst + i % cols] = src[(i / cols) * ld_src + i % cols]; }
};

// The causal depthwise conv of one direction. offsets are the compact offsets.
template <class T>
struct Conv {
  const T* u;              // (Tk, E)
  const idx* offsets;      // (batch+1)
  idx batch, E, K;
  const T *w, *bias;       // (E, K), (E)
  bool reverse;
};
// v, u' of compact row t, channel e: one element i = t·E + e.
template <class T>
struct ConvForward {
  Conv<T> c;
  T *v, *up;
  SEQSWAP_HD void operator()(idx i) const {
    const idx t = i / c.E, e = i % c.E, b = sequence_of(c.offsets, c.batch, t);
    const idx t0 = c.offsets[b], n = c.offsets[b + 1] - t0;
    const idx k = c.reverse ? n - 1 - (t - t0) : t - t0;
    T acc = c.bias[e];
    for (idx j = (c.K - 1 - k > 0 ? c.K - 1 - k : 0); j < c.K; ++j)
      acc += c.w[e * c.K + j] * c.u[row_at(t0, n, k - (c.K - 1) + j, c.reverse) * c.E + e];
    v[i] = acc;
    up[i] = silu(acc);
  }
};
// Backward of one (sequence b, channel e), item i = b·E + e: du += (rows of b, channel e, owned
// by this item alone); partial (batch, E, K+1) ASSIGNED: [dw_0 .. dw_(K−1), db] of this sequence.
template <class T>
struct ConvBackward {
  Conv<T> c;
  const T* dv;  // (Tk, E)
  T *partial, *du;
  SEQSWAP_HD void operator()(idx i) const {
    const idx b = i / c.E, e = i % c.E, t0 = c.offsets[b], n = c.offsets[b + 1] - t0, K = c.K;
    T* pw = partial + i * (K + 1);
    for (idx j = 0; j <= K; ++j) pw[j] = T(0);
    for (idx k = 0; k < n; ++k) {
      const T d = dv[row_at(t0, n, k, c.reverse) * c.E + e];
      pw[K] += d;
      for (idx j = (K - 1 - k > 0 ? K - 1 - k : 0); j < K; ++j) {
        const idx tt = row_at(t0, n, k - (K - 1) + j, c.reverse) * c.E + e;
        pw[j] += d * c.u[tt];
        du[tt] += c.w[e * K + j] * d;
      }
    }
  }
};
// Per-sequence partials (batch, E, W + 1) added in sequence order and ACCUMULATED into a
// (E, W) and an (E) gradient: the conv's [dw, db] (W = K), the scan's [dA_log, dD] (W = S).
// i = e·(W+1) + j.
template <class T>
struct SumOverSequences {
  const T* partial;
  idx batch, E, W;
  T *g_wide, *g_last;
  SEQSWAP_HD void operator()(idx i) const {
    const idx e = i / (W + 1), j = i % (W + 1);
    T s = 0;
    for (idx b = 0; b < batch; ++b) s += partial[(b * E + e) * (W + 1) + j];
    if (j < W) g_wide[e * W + j] += s;
    else g_last[e] += s;
  }
};

// The scan of one direction.
template <class T>
struct Scan {
  const T *delta, *u;   // (Tk, E): Δ and u'
  const T* bc;          // B_t at bc + t·ldbc, C_t right after it (S values each)
  idx ldbc;
  const T *A, *Dskip;   // (E, S), (E)
  const idx* offsets;   // (batch+1) compact offsets
  idx batch, E, S;
  bool reverse;
  idx chunk;            // tokens between checkpoints, ≤ kDeviceChunk
  const idx* ck_offs;   // (batch+1): the first checkpoint of each sequence
};

// Forward of one (sequence b, channel e): y ASSIGNED (or added to when `accumulate`), the state
// entering tokens 0, chunk, 2·chunk, ... saved in ckpt (checkpoints, E, S). kS ≥ S; when
// `exact` (S == kS) the loops have a compile-time trip count and the state stays in registers.
template <int kS, bool exact, class T>
SEQSWAP_HD void scan_forward_item(const Scan<T>& a, idx b, idx e, T* y, bool accumulate, T* ckpt) {
  const idx E = a.E, S = exact ? idx(kS) : a.S, t0 = a.offsets[b], n = a.offsets[b + 1] - t0;
  T h[kS];
  for (idx j = 0; j < S; ++j) h[j] = T(0);
  const T* Ae = a.A + e * S;
  for (idx k = 0; k < n; ++k) {
    if (k % a.chunk == 0) {
      T* c = ckpt + ((a.ck_offs[b] + k / a.chunk) * E + e) * S;
      for (idx j = 0; j < S; ++j) c[j] = h[j];
    }
    const idx t = row_at(t0, n, k, a.reverse);
    const T dl = a.delta[t * E + e], du = dl * a.u[t * E + e];
    const T* Bt = a.bc + t * a.ldbc;
    const T* Ct = Bt + S;
    T yv = 0;
    for (idx j = 0; j < S; ++j) {
      h[j] = std::exp(dl * Ae[j]) * h[j] + du * Bt[j];
      yv += Ct[j] * h[j];
    }
    yv += a.Dskip[e] * a.u[t * E + e];
    y[t * E + e] = accumulate ? y[t * E + e] + yv : yv;
  }
}

template <class T>
struct ScanGrads {
  const T* ckpt;  // the forward's checkpoints
  const T* dy;    // (Tk, E) dL/dy of this direction
  const T* dtp;   // (Tk, E) the pre-softplus Δ
  T* du;          // (Tk, E) ASSIGNED: dL/du' through the scan and the skip
  T* ddtp;        // (Tk, E) ASSIGNED: dL/d dtp (softplus' included)
  T* part;        // (groups, Tk, 2S): [dB, dC] of each token, summed over a group's channels
  T* pgrad;       // (batch, E, S+1): [dA_log, dD] of each (sequence, channel), ASSIGNED
};

// Backward of one (sequence b, channel e), the formulas of the mixer's fused host backward:
//   G_t = dL/dh_t = dy_t C_t + a_{t+1} ⊙ G_{t+1},   a_t = exp(Δ_t A)
//   dC_t += dy_t h_t,  dB_t += G_t Δ_t u'_t,  du'_t = D dy_t + Δ_t Σ G_t B_t
//   dΔ_t = Σ G_t h_{t−1} a_t A + u'_t Σ G_t B_t,  dA_log += Δ_t G_t h_{t−1} a_t A,  dD += dy_t u'_t
// `active` false (a padding lane of a warp: e clamped to a real channel) contributes zeros and
// writes nothing, but runs the same loop so that the warp's reductions stay in step.
// sink(t, dB, dC) receives the channel's [dB, dC] of token t (S values each), every lane at the
// same t at the same time.
template <int kS, bool exact, class T, class Sink>
SEQSWAP_HD void scan_backward_item(const Scan<T>& a, const ScanGrads<T>& g, idx b, idx e, bool active,
                                   const Sink& sink) {
  constexpr idx kC = kDeviceChunk;
  const idx E = a.E, S = exact ? idx(kS) : a.S, t0 = a.offsets[b], n = a.offsets[b + 1] - t0, chunk = a.chunk;
  T G[kS], pA[kS], dB[kS], dC[kS], hs[kC][kS];
  T pD = 0;
  for (idx j = 0; j < S; ++j) G[j] = pA[j] = T(0);
  const T* Ae = a.A + e * S;
  for (idx ch = (n + chunk - 1) / chunk - 1; ch >= 0; --ch) {
    const idx k0 = ch * chunk, k1 = (k0 + chunk < n ? k0 + chunk : n);
    const T* h0 = g.ckpt + ((a.ck_offs[b] + ch) * E + e) * S;  // the state entering the chunk
    for (idx k = k0; k < k1; ++k) {  // recompute the chunk's states exactly as the forward did
      const idx t = row_at(t0, n, k, a.reverse);
      const T dl = a.delta[t * E + e], du = dl * a.u[t * E + e];
      const T* Bt = a.bc + t * a.ldbc;
      const T* prev = k > k0 ? hs[k - k0 - 1] : h0;
      for (idx j = 0; j < S; ++j) hs[k - k0][j] = std::exp(dl * Ae[j]) * prev[j] + du * Bt[j];
    }
    for (idx k = k1 - 1; k >= k0; --k) {
      const idx t = row_at(t0, n, k, a.reverse);
      const T dl = a.delta[t * E + e], uu = a.u[t * E + e], dyv = active ? g.dy[t * E + e] : T(0);
      const T* Bt = a.bc + t * a.ldbc;
      const T* Ct = Bt + S;
      const T* hk = hs[k - k0];
      const T* hp = k > k0 ? hs[k - k0 - 1] : h0;
      pD += dyv * uu;
      T gB = 0, gA = 0;
      for (idx j = 0; j < S; ++j) {
        G[j] += dyv * Ct[j];
        dC[j] = dyv * hk[j];
        const T aj = std::exp(dl * Ae[j]);
        const T x = G[j] * hp[j] * aj * Ae[j];
        gA += x;
        pA[j] += dl * x;
        gB += G[j] * Bt[j];
        dB[j] = dl * uu * G[j];
        G[j] *= aj;  // carried to h_{t−1}
      }
      sink(t, dB, dC);
      if (active) {
        g.du[t * E + e] = dyv * a.Dskip[e] + dl * gB;
        g.ddtp[t * E + e] = (gA + gB * uu) * rows::sigmoid(g.dtp[t * E + e]);
      }
    }
  }
  if (active) {
    T* pg = g.pgrad + (b * E + e) * (S + 1);
    for (idx j = 0; j < S; ++j) pg[j] = pA[j];
    pg[S] = pD;
  }
}

// dxdbl[t, R + j] ASSIGNED = Σ over channel groups of part (t, j), j < 2S; i = t·2S + j.
template <class T>
struct ReduceBC {
  const T* part;
  idx groups, Tk, S;
  T* dxdbl;
  idx ld, R;
  SEQSWAP_HD void operator()(idx i) const {
    const idx t = i / (2 * S), j = i % (2 * S);
    T s = 0;
    for (idx gi = 0; gi < groups; ++gi) s += part[(gi * Tk + t) * 2 * S + j];
    dxdbl[t * ld + R + j] = s;
  }
};
inline idx groups(idx E) { return (E + kGroup - 1) / kGroup; }

}  // namespace seqswap::ops::ssm

// The diagonal SSM (mixers/ssm_diag.hpp) on the device: Ā, B̄ per (channel c, state n), the
// recurrence h_t = Ā h_{t−1} + B̄ u_t[c] through the linear-recurrence scan over the D·N_s
// columns (a masked token: a = 1, b = 0, the identity step), and the sums of its backward as
// column reductions over the rows in order (deterministic). j = c·N + n throughout.
namespace seqswap::ops::ssm {

SEQSWAP_HD bool kept_row(const std::uint8_t* keep, idx t) { return !keep || keep[t]; }

// Ā = exp(Δ A), φ = expm1(Δ A)/A, B̄ = φ B, Δ = exp(log_dt[c]), A = −exp(A_log): i = j.
template <class T>
struct DiagDiscretise {
  const T *A_log, *Bm, *log_dt;
  idx N;
  T *abar, *phi, *bbar;
  SEQSWAP_HD void operator()(idx j) const {
    const T dt = std::exp(log_dt[j / N]), A = -std::exp(A_log[j]);
    abar[j] = std::exp(dt * A);
    phi[j] = std::expm1(dt * A) / A;
    bbar[j] = phi[j] * Bm[j];
  }
};
// The scan's inputs a, b (rows, D·N): i = t·D·N + j.
template <class T>
struct DiagInputs {
  const T *abar, *bbar, *u;
  const std::uint8_t* keep;
  idx D, N;
  T *a, *b;
  SEQSWAP_HD void operator()(idx i) const {
    const idx DN = D * N, t = i / DN, j = i % DN;
    const bool k = kept_row(keep, t);
    a[i] = k ? abar[j] : T(1);
    b[i] = k ? bbar[j] * u[t * D + j / N] : T(0);
  }
};
// pre[t, c] = keep_t (D[c] u_t[c] + Σ_n C0[j] h0_t[j] + Σ_n C1[j] h1_t[j]) (h1 null: one
// direction): i = t·D + c.
template <class T>
struct DiagOutput {
  const T *u, *skip, *C0, *h0, *C1, *h1;
  const std::uint8_t* keep;
  idx D, N;
  T* pre;
  SEQSWAP_HD void operator()(idx i) const {
    const idx t = i / D, c = i % D, DN = D * N;
    if (!kept_row(keep, t)) {
      pre[i] = T(0);
      return;
    }
    T s = skip[c] * u[i];
    for (idx n = 0; n < N; ++n) s += C0[c * N + n] * h0[t * DN + c * N + n];
    if (h1)
      for (idx n = 0; n < N; ++n) s += C1[c * N + n] * h1[t * DN + c * N + n];
    pre[i] = s;
  }
};
// du = D ∘ dpre (ASSIGNED), dD[c] += Σ_t dpre u: i = c (the rows summed in order).
template <class T>
struct DiagSkipBackward {
  const T *dpre, *u, *skip;
  idx rows, D;
  T *du, *dskip;
  SEQSWAP_HD void operator()(idx c) const {
    T acc = 0;
    for (idx t = 0; t < rows; ++t) {
      du[t * D + c] = skip[c] * dpre[t * D + c];
      acc += dpre[t * D + c] * u[t * D + c];
    }
    dskip[c] += acc;
  }
};
// dL/dh_t[j] = dpre_t[c] C[j] (dpre is zero at masked rows): i = t·D·N + j.
template <class T>
struct DiagStateGrad {
  const T *dpre, *C;
  idx D, N;
  T* dh;
  SEQSWAP_HD void operator()(idx i) const {
    const idx DN = D * N, t = i / DN, j = i % DN;
    dh[i] = dpre[t * D + j / N] * C[j];
  }
};
// Over the rows, in order, for column j: dC[j] += Σ dpre h (ACCUMULATED); dĀ[j] = Σ_kept da,
// dB̄[j] = Σ_kept db u (ASSIGNED).
template <class T>
struct DiagParamSums {
  const T *da, *db, *h, *dpre, *u;
  const std::uint8_t* keep;
  idx rows, D, N;
  T *dC, *dabar, *dbbar;
  SEQSWAP_HD void operator()(idx j) const {
    const idx DN = D * N, c = j / N;
    T sc = 0, sa = 0, sb = 0;
    for (idx t = 0; t < rows; ++t) {
      sc += dpre[t * D + c] * h[t * DN + j];
      if (kept_row(keep, t)) {
        sa += da[t * DN + j];
        sb += db[t * DN + j] * u[t * D + c];
      }
    }
    dC[j] += sc;
    dabar[j] = sa;
    dbbar[j] = sb;
  }
};
// du_t[c] += Σ_n db_t[j] B̄[j] on kept rows: i = t·D + c.
template <class T>
struct DiagInputGrad {
  const T *db, *bbar;
  const std::uint8_t* keep;
  idx D, N;
  T* du;
  SEQSWAP_HD void operator()(idx i) const {
    const idx t = i / D, c = i % D;
    if (!kept_row(keep, t)) return;
    T s = 0;
    for (idx n = 0; n < N; ++n) s += db[t * D * N + c * N + n] * bbar[c * N + n];
    du[i] += s;
  }
};
// Through the discretisation, per channel (i = c): dB += dB̄ φ; with dφ = dB̄ B,
//   dA = dĀ Δ Ā + dφ (Δ Ā − φ)/A,  dΔ = Σ_n dĀ A Ā + dφ Ā;  dA_log += dA A, dlog_dt += dΔ Δ.
template <class T>
struct DiagDiscretiseBackward {
  const T *A_log, *Bm, *log_dt, *abar, *phi, *dabar, *dbbar;
  idx N;
  T *dA_log, *dB, *dlog_dt;
  SEQSWAP_HD void operator()(idx c) const {
    const T dt = std::exp(log_dt[c]);
    T ddt = 0;
    for (idx n = 0; n < N; ++n) {
      const idx j = c * N + n;
      const T A = -std::exp(A_log[j]);
      dB[j] += dbbar[j] * phi[j];
      const T dphi = dbbar[j] * Bm[j];
      const T dA = dabar[j] * dt * abar[j] + dphi * (dt * abar[j] - phi[j]) / A;
      ddt += dabar[j] * A * abar[j] + dphi * abar[j];
      dA_log[j] += dA * A;
    }
    dlog_dt[c] += ddt * dt;
  }
};

}  // namespace seqswap::ops::ssm
