// Non-causal linear attention's device math (mixers/linear_attention.hpp on backend::Cuda) as
// host-and-device functors, f(i) doing element i: the CUDA definition of ops::device::for_each
// runs them one thread per element, the device emulation (tests/device_emulation.hpp) in a
// loop. The mixer's host path (Eigen) is the reference both are compared with.
//
// Layout, as in the mixer: qkv (rows, 3D) [q | k | v], head h's d columns at h·d of each;
// φ(q), φ(k) (rows, H·m), m = expansion·d; per (sequence b, head h): S (m, d), z (m), at bh =
// b·H + h; den (H, rows). Every sum over tokens runs in token order (deterministic).
//   S = Σ_j φ(k_j) v_jᵀ,  z = Σ_j φ(k_j),  y_i = φ(q_i)ᵀ S / (φ(q_i)ᵀ z + eps_i)
// Hedgehog's features are shifted so that nothing overflows (see the mixer): keys by b (m) per
// (sequence, head), queries by a_i per row, with eps_i = eps·e^{−a_i}.
#pragma once
#include <cmath>
#include <cstdint>

#include "seqswap/config.hpp"
#include "seqswap/ops/ssm_rows.hpp"  // sequence_of, kept_row

namespace seqswap::ops::linattn {

using idx = std::int64_t;
using ssm::kept_row;
using ssm::sequence_of;

// Shapes shared by the functors.
struct Dims {
  idx rows, batch, H, d, m;
  const idx* offsets;  // device (batch+1)
  SEQSWAP_HD idx D() const { return H * d; }
};

// Elementwise features (Elu1, Relu): φ(q), φ(k) of row t, head h, entry e; masked rows 0.
// i = (t·H + h)·d + e. Phi(x) is the feature's value.
template <class T, class Phi>
struct Features {
  Dims s;
  const T* qkv;
  const std::uint8_t* keep;
  T *pq, *pk;
  SEQSWAP_HD void operator()(idx i) const {
    const idx D = s.D(), t = i / D, c = i % D;  // c = h·d + e, and m = d
    const bool k = kept_row(keep, t);
    pq[t * D + c] = k ? Phi::value(qkv[t * 3 * D + c]) : T(0);
    pk[t * D + c] = k ? Phi::value(qkv[t * 3 * D + D + c]) : T(0);
  }
};

// Hedgehog, step 1: u = x W_h for the queries and keys of row t, head h, column e (into the
// first d of each m = 2d features). i = (t·H + h)·d + e; W_h (d, d) row-major per head.
template <class T>
struct HedgehogProject {
  Dims s;
  const T *qkv, *w;
  T *pq, *pk;
  SEQSWAP_HD void operator()(idx i) const {
    const idx D = s.D(), d = s.d, t = i / D, h = (i % D) / d, e = i % d;
    const T* wh = w + h * d * d;
    const T* q = qkv + t * 3 * D + h * d;
    const T* k = q + D;
    T uq = 0, uk = 0;
    for (idx j = 0; j < d; ++j) {
      uq += q[j] * wh[j * d + e];
      uk += k[j] * wh[j * d + e];
    }
    pq[t * s.H * s.m + h * s.m + e] = uq;
    pk[t * s.H * s.m + h * s.m + e] = uk;
  }
};
// Step 2: the keys' shift b (m) of sequence b, head h: b_c = max over kept keys of [u, −u]_c
// (0 when none is kept). i = (b·H + h)·d + e; writes b_e and b_(d+e).
template <class T>
struct HedgehogKeyShift {
  Dims s;
  const T* pk;  // u in the first d columns
  const std::uint8_t* keep;
  T* shift;  // (B H, m)
  SEQSWAP_HD void operator()(idx i) const {
    const idx d = s.d, bh = i / d, e = i % d, b = bh / s.H, h = bh % s.H;
    bool any = false;
    T hi = 0, lo = 0;
    for (idx t = s.offsets[b]; t < s.offsets[b + 1]; ++t) {
      if (!kept_row(keep, t)) continue;
      const T u = pk[t * s.H * s.m + h * s.m + e];
      hi = any ? (u > hi ? u : hi) : u;
      lo = any ? (-u > lo ? -u : lo) : -u;
      any = true;
    }
    shift[bh * s.m + e] = any ? hi : T(0);
    shift[bh * s.m + d + e] = any ? lo : T(0);
  }
};
// Step 3, one (row t, head h) per element, i = t·H + h: the keys' features
// [e^{u − b₊}, e^{−u − b₋}], the query's shift a = max_c ([u, −u]_c + b_c) into den (H, rows)
// and its features [e^{u + b₊ − a}, e^{−u + b₋ − a}]; masked rows 0 (shift 0).
template <class T>
struct HedgehogExp {
  Dims s;
  const std::uint8_t* keep;
  const T* shift;  // (B H, m)
  T *pq, *pk, *den;
  SEQSWAP_HD void operator()(idx i) const {
    const idx d = s.d, m = s.m, t = i / s.H, h = i % s.H, b = sequence_of(s.offsets, s.batch, t);
    const T* bs = shift + (b * s.H + h) * m;
    T* q = pq + t * s.H * m + h * m;
    T* k = pk + t * s.H * m + h * m;
    if (!kept_row(keep, t)) {
      for (idx c = 0; c < m; ++c) q[c] = k[c] = T(0);
      den[h * s.rows + t] = T(0);
      return;
    }
    for (idx e = 0; e < d; ++e) {
      const T u = k[e];
      k[d + e] = std::exp(-u - bs[d + e]);
      k[e] = std::exp(u - bs[e]);
    }
    T a = q[0] + bs[0];
    for (idx e = 0; e < d; ++e) {
      const T up = q[e] + bs[e], um = -q[e] + bs[d + e];
      a = up > a ? up : a;
      a = um > a ? um : a;
    }
    den[h * s.rows + t] = a;
    for (idx e = 0; e < d; ++e) {
      const T u = q[e];
      q[d + e] = std::exp(-u + bs[d + e] - a);
      q[e] = std::exp(u + bs[e] - a);
    }
  }
};

// S (m, d) and z (m) of (sequence b, head h): i = (b·H + h)·m·d + c·d + j; z by the j = 0 one.
// Masked keys have φ(k) = 0, so they add nothing.
template <class T>
struct State {
  Dims s;
  const T *qkv, *pk;
  T *S, *z;
  SEQSWAP_HD void operator()(idx i) const {
    const idx m = s.m, d = s.d, D = s.D(), bh = i / (m * d), c = (i / d) % m, j = i % d;
    const idx b = bh / s.H, h = bh % s.H;
    T acc = 0, zs = 0;
    for (idx t = s.offsets[b]; t < s.offsets[b + 1]; ++t) {
      const T p = pk[t * s.H * m + h * m + c];
      acc += p * qkv[t * 3 * D + 2 * D + h * d + j];
      zs += p;
    }
    S[i] = acc;
    if (j == 0) z[bh * m + c] = zs;
  }
};
// y_i (d) and den_i of (row t, head h), i = t·H + h: den = φ(q)ᵀ z + eps_t (Hedgehog: den holds
// the shift a on entry, eps_t = eps e^{−a}); y = φ(q)ᵀ S / den; masked rows y = 0, den = 1.
template <class T>
struct Output {
  Dims s;
  const T *pq, *S, *z;
  const std::uint8_t* keep;
  T eps;
  bool shifted;  // Hedgehog
  T *den, *out;  // out (rows, D)
  SEQSWAP_HD void operator()(idx i) const {
    const idx m = s.m, d = s.d, D = s.D(), t = i / s.H, h = i % s.H;
    T* y = out + t * D + h * d;
    if (!kept_row(keep, t)) {
      for (idx j = 0; j < d; ++j) y[j] = T(0);
      den[h * s.rows + t] = T(1);
      return;
    }
    const idx bh = sequence_of(s.offsets, s.batch, t) * s.H + h;
    const T* q = pq + t * s.H * m + h * m;
    const T* Sb = S + bh * m * d;
    const T* zb = z + bh * m;
    T dn = shifted ? eps * std::exp(-den[h * s.rows + t]) : eps;
    for (idx c = 0; c < m; ++c) dn += q[c] * zb[c];
    den[h * s.rows + t] = dn;
    for (idx j = 0; j < d; ++j) {
      T acc = 0;
      for (idx c = 0; c < m; ++c) acc += q[c] * Sb[c * d + j];
      y[j] = acc / dn;
    }
  }
};

// Backward. y = num / den  =>  dnum = dy / den, dden = −dy·y / den (masked: 0). i = t·H + h;
// dnum (rows, D), dden (H, rows).
template <class T>
struct DNum {
  Dims s;
  const T *dy, *out, *den;
  const std::uint8_t* keep;
  T *dnum, *dden;
  SEQSWAP_HD void operator()(idx i) const {
    const idx d = s.d, D = s.D(), t = i / s.H, h = i % s.H;
    const bool k = kept_row(keep, t);
    const T dn = den[h * s.rows + t];
    T dot = 0;
    for (idx j = 0; j < d; ++j) {
      const T g = dy[t * D + h * d + j];
      dnum[t * D + h * d + j] = k ? g / dn : T(0);
      dot += g * out[t * D + h * d + j];
    }
    dden[h * s.rows + t] = k ? -dot / dn : T(0);
  }
};
// dφ(q_t) = S dnum_t + z dden_t: i = (t·H + h)·m + c.
template <class T>
struct DPhiQ {
  Dims s;
  const T *dnum, *dden, *S, *z;
  T* dpq;
  SEQSWAP_HD void operator()(idx i) const {
    const idx m = s.m, d = s.d, D = s.D(), t = i / (s.H * m), h = (i / m) % s.H, c = i % m;
    const idx bh = sequence_of(s.offsets, s.batch, t) * s.H + h;
    const T* Sb = S + bh * m * d + c * d;
    T acc = dden[h * s.rows + t] * z[bh * m + c];
    for (idx j = 0; j < d; ++j) acc += Sb[j] * dnum[t * D + h * d + j];
    dpq[i] = acc;
  }
};
// dS = Σ_t φ(q_t) dnum_tᵀ, dz = Σ_t φ(q_t) dden_t per (sequence, head): i as in State.
template <class T>
struct DState {
  Dims s;
  const T *pq, *dnum, *dden;
  T *dS, *dz;
  SEQSWAP_HD void operator()(idx i) const {
    const idx m = s.m, d = s.d, D = s.D(), bh = i / (m * d), c = (i / d) % m, j = i % d;
    const idx b = bh / s.H, h = bh % s.H;
    T acc = 0, zs = 0;
    for (idx t = s.offsets[b]; t < s.offsets[b + 1]; ++t) {
      const T p = pq[t * s.H * m + h * m + c];
      acc += p * dnum[t * D + h * d + j];
      zs += p * dden[h * s.rows + t];
    }
    dS[i] = acc;
    if (j == 0) dz[bh * m + c] = zs;
  }
};
// dφ(k_t) = dS v_t + dz (masked keys: 0), i = (t·H + h)·m + c; dv_t = dSᵀ φ(k_t) into dqkv's v
// columns, i = (t·H + h)·d + j.
template <class T>
struct DPhiK {
  Dims s;
  const T *qkv, *dS, *dz;
  const std::uint8_t* keep;
  T* dpk;
  SEQSWAP_HD void operator()(idx i) const {
    const idx m = s.m, d = s.d, D = s.D(), t = i / (s.H * m), h = (i / m) % s.H, c = i % m;
    if (!kept_row(keep, t)) {
      dpk[i] = T(0);
      return;
    }
    const idx bh = sequence_of(s.offsets, s.batch, t) * s.H + h;
    const T* dSb = dS + bh * m * d + c * d;
    T acc = dz[bh * m + c];
    for (idx j = 0; j < d; ++j) acc += dSb[j] * qkv[t * 3 * D + 2 * D + h * d + j];
    dpk[i] = acc;
  }
};
template <class T>
struct DV {
  Dims s;
  const T *pk, *dS;
  T* dqkv;
  SEQSWAP_HD void operator()(idx i) const {
    const idx m = s.m, d = s.d, D = s.D(), t = i / D, h = (i % D) / d, j = i % d;
    const idx bh = sequence_of(s.offsets, s.batch, t) * s.H + h;
    const T* p = pk + t * s.H * m + h * m;
    T acc = 0;
    for (idx c = 0; c < m; ++c) acc += p[c] * dS[bh * m * d + c * d + j];
    dqkv[t * 3 * D + 2 * D + h * d + j] = acc;
  }
};
// Elementwise features: dq = dφ(q) φ'(q), dk = dφ(k) φ'(k) into dqkv, i = t·D + h·d + e (m = d);
// Phi::slope(φ) is φ' from φ.
template <class T, class Phi>
struct DFeatures {
  Dims s;
  const T *pq, *pk, *dpq, *dpk;
  T* dqkv;
  SEQSWAP_HD void operator()(idx i) const {
    const idx D = s.D(), t = i / D, c = i % D;
    dqkv[t * 3 * D + c] = dpq[i] * Phi::slope(pq[i]);
    dqkv[t * 3 * D + D + c] = dpk[i] * Phi::slope(pk[i]);
  }
};
// Hedgehog: du = dφ₊ φ₊ − dφ₋ φ₋ in place over the first d of dφ (queries and keys),
// i = (t·H + h)·d + e.
template <class T>
struct HedgehogExponentGrad {
  Dims s;
  const T *pq, *pk;
  T *dpq, *dpk;
  SEQSWAP_HD void operator()(idx i) const {
    const idx d = s.d, m = s.m, th = i / d, e = i % d, o = th * m;
    dpq[o + e] = dpq[o + e] * pq[o + e] - dpq[o + d + e] * pq[o + d + e];
    dpk[o + e] = dpk[o + e] * pk[o + e] - dpk[o + d + e] * pk[o + d + e];
  }
};
// dq = du_q W_hᵀ, dk = du_k W_hᵀ into dqkv: i = (t·H + h)·d + k.
template <class T>
struct HedgehogDx {
  Dims s;
  const T *w, *dpq, *dpk;
  T* dqkv;
  SEQSWAP_HD void operator()(idx i) const {
    const idx d = s.d, m = s.m, D = s.D(), th = i / d, t = th / s.H, h = th % s.H, k = i % d;
    const T* wh = w + h * d * d + k * d;  // row k of W_h
    T aq = 0, ak = 0;
    for (idx e = 0; e < d; ++e) {
      aq += dpq[th * m + e] * wh[e];
      ak += dpk[th * m + e] * wh[e];
    }
    dqkv[t * 3 * D + h * d + k] = aq;
    dqkv[t * 3 * D + D + h * d + k] = ak;
  }
};
// dW_h[k, e] += Σ_t q_t[k] du_q,t[e] + k_t[k] du_k,t[e] over every row in order (masked rows
// have du = 0): i = (h·d + k)·d + e.
template <class T>
struct HedgehogDw {
  Dims s;
  const T *qkv, *dpq, *dpk;
  T* dw;
  SEQSWAP_HD void operator()(idx i) const {
    const idx d = s.d, m = s.m, D = s.D(), h = i / (d * d), k = (i / d) % d, e = i % d;
    T acc = 0;
    for (idx t = 0; t < s.rows; ++t) {
      const idx o = t * s.H * m + h * m + e;
      acc += qkv[t * 3 * D + h * d + k] * dpq[o] + qkv[t * 3 * D + D + h * d + k] * dpk[o];
    }
    dw[i] += acc;
  }
};

}  // namespace seqswap::ops::linattn
