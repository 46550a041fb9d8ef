// Bidirectional retention's device math (mixers/retention.hpp on backend::Cuda) as
// host-and-device functors, f(i) doing element i (ops::device::for_each runs them one thread
// per element; the device emulation in a loop). The mixer's host path is the reference.
//
// Per (sequence, head) the host walks the kept tokens forwards, then backwards, with d×d states
// decayed by γ before each token: S_t = γ S_{t−1} + k_t v_tᵀ, G_t = γ G_{t−1} + q_t dô_tᵀ. Here
// one thread owns one row or one column of those states (d ≤ kMaxHead values in a local
// array) and walks the same tokens:
//   forward, column j:  pre_t[j] = (Σ_dir q_t · S_t[:, j] − (q_t·k_t) v_t[j]) / c_t
//   backward, row i:    dq_t[i] = Σ_dir S_t[i, :] · dô_t − (v_t·dô_t) k_t[i]
//                       dk_t[i] = Σ_dir G_t[i, :] · v_t  − (v_t·dô_t) q_t[i]
//   backward, column j: dv_t[j] = Σ_dir G_t[:, j] · k_t  − (q_t·k_t) dô_t[j]
// with c_t = Σ_dir Σ_s γ^{dist} − 1 (the diagonal counted once) and dô_t = dpre_t / c_t. q is
// already scaled by 1/√d. qkv (rows, 3D) [q | k | v]; head h's d columns at h·d of each.
#pragma once
#include <cmath>
#include <cstdint>

#include "seqswap/config.hpp"

namespace seqswap::ops::retention {

using idx = std::int64_t;

inline constexpr idx kMaxHead = 128;  // head width the device path holds per thread

SEQSWAP_HD bool kept(const std::uint8_t* keep, idx t) { return !keep || keep[t]; }

struct Dims {
  idx batch, H, d;
  const idx* offsets;  // device (batch+1)
  double decay_offset;  // γ_h = 1 − 2^{−(decay_offset + h)}
};
template <class T>
SEQSWAP_HD T gamma(const Dims& s, idx h) {
  return T(1.0 - std::exp2(-(s.decay_offset + double(h))));
}
// The kept tokens of rows [t0, t1) forwards (dir 0), then backwards (dir 1).
SEQSWAP_HD idx walk_row(idx t0, idx t1, idx k, int dir) { return dir == 0 ? t0 + k : t1 - 1 - k; }

// 1 / c_t per (kept row t, head h) of (sequence, head) i = b·H + h, into inv_c (rows, H).
template <class T>
struct InvC {
  Dims s;
  const std::uint8_t* keep;
  T* inv_c;
  SEQSWAP_HD void operator()(idx i) const {
    const idx b = i / s.H, h = i % s.H, t0 = s.offsets[b], t1 = s.offsets[b + 1];
    const T g = gamma<T>(s, h);
    for (int dir = 0; dir < 2; ++dir) {
      T n = 0;
      for (idx k = 0; k < t1 - t0; ++k) {
        const idx t = walk_row(t0, t1, k, dir);
        if (!kept(keep, t)) continue;
        n = g * n + T(1);
        inv_c[t * s.H + h] = dir == 0 ? n : T(1) / (inv_c[t * s.H + h] + n - T(1));
      }
    }
  }
};
// q *= scale over the q columns: i = t·D + c.
template <class T>
struct ScaleQ {
  idx D;
  T scale;
  T* qkv;
  SEQSWAP_HD void operator()(idx i) const { qkv[(i / D) * 3 * D + i % D] *= scale; }
};

// Forward, one (sequence, head, column j) per element, i = (b·H + h)·d + j: pre ASSIGNED
// (masked rows 0).
template <class T>
struct Forward {
  Dims s;
  const T* qkv;
  const T* inv_c;
  const std::uint8_t* keep;
  T* pre;  // (rows, D)
  SEQSWAP_HD void operator()(idx i) const {
    const idx d = s.d, D = s.H * d, bh = i / d, j = i % d, b = bh / s.H, h = bh % s.H;
    const idx t0 = s.offsets[b], t1 = s.offsets[b + 1], c0 = h * d;
    const T g = gamma<T>(s, h);
    T S[kMaxHead];
    for (int dir = 0; dir < 2; ++dir) {
      for (idx r = 0; r < d; ++r) S[r] = T(0);
      for (idx k = 0; k < t1 - t0; ++k) {
        const idx t = walk_row(t0, t1, k, dir);
        T* out = pre + t * D + c0 + j;
        if (!kept(keep, t)) {
          *out = T(0);
          continue;
        }
        const T* q = qkv + t * 3 * D + c0;
        const T* kk = q + D;
        const T vj = q[2 * D + j];
        T acc = 0;
        for (idx r = 0; r < d; ++r) {
          S[r] = g * S[r] + kk[r] * vj;
          acc += q[r] * S[r];
        }
        *out = dir == 0 ? acc : *out + acc;
      }
    }
    for (idx t = t0; t < t1; ++t) {  // the diagonal was counted twice
      if (!kept(keep, t)) continue;
      const T* q = qkv + t * 3 * D + c0;
      T qk = 0;
      for (idx r = 0; r < d; ++r) qk += q[r] * q[D + r];
      T* out = pre + t * D + c0 + j;
      *out = (*out - qk * q[2 * D + j]) * inv_c[t * s.H + h];
    }
  }
};

// Backward, one (sequence, head, row r) per element, i = (b·H + h)·d + r: dq, dk ASSIGNED
// into dqkv (masked rows 0); dô from dpre and inv_c.
template <class T>
struct BackwardRows {
  Dims s;
  const T *qkv, *inv_c, *dpre;
  const std::uint8_t* keep;
  T* dqkv;
  SEQSWAP_HD void operator()(idx i) const {
    const idx d = s.d, D = s.H * d, bh = i / d, r = i % d, b = bh / s.H, h = bh % s.H;
    const idx t0 = s.offsets[b], t1 = s.offsets[b + 1], c0 = h * d;
    const T g = gamma<T>(s, h);
    T S[kMaxHead], G[kMaxHead];
    for (int dir = 0; dir < 2; ++dir) {
      for (idx j = 0; j < d; ++j) S[j] = G[j] = T(0);
      for (idx k = 0; k < t1 - t0; ++k) {
        const idx t = walk_row(t0, t1, k, dir);
        T* dq = dqkv + t * 3 * D + c0 + r;
        if (!kept(keep, t)) {
          dq[0] = dq[D] = T(0);
          continue;
        }
        const T* q = qkv + t * 3 * D + c0;
        const T* v = q + 2 * D;
        const T* dp = dpre + t * D + c0;
        const T ic = inv_c[t * s.H + h], kr = q[D + r], qr = q[r];
        T aq = 0, ak = 0;
        for (idx j = 0; j < d; ++j) {
          const T o = dp[j] * ic;
          S[j] = g * S[j] + kr * v[j];
          G[j] = g * G[j] + qr * o;
          aq += S[j] * o;
          ak += G[j] * v[j];
        }
        dq[0] = dir == 0 ? aq : dq[0] + aq;
        dq[D] = dir == 0 ? ak : dq[D] + ak;
      }
    }
    for (idx t = t0; t < t1; ++t) {  // the diagonal was counted twice
      if (!kept(keep, t)) continue;
      const T* q = qkv + t * 3 * D + c0;
      const T ic = inv_c[t * s.H + h];
      T vo = 0;
      for (idx j = 0; j < d; ++j) vo += q[2 * D + j] * dpre[t * D + c0 + j] * ic;
      T* dq = dqkv + t * 3 * D + c0 + r;
      dq[0] -= vo * q[D + r];
      dq[D] -= vo * q[r];
    }
  }
};
// Backward, one (sequence, head, column j) per element: dv ASSIGNED into dqkv.
template <class T>
struct BackwardColumns {
  Dims s;
  const T *qkv, *inv_c, *dpre;
  const std::uint8_t* keep;
  T* dqkv;
  SEQSWAP_HD void operator()(idx i) const {
    const idx d = s.d, D = s.H * d, bh = i / d, j = i % d, b = bh / s.H, h = bh % s.H;
    const idx t0 = s.offsets[b], t1 = s.offsets[b + 1], c0 = h * d;
    const T g = gamma<T>(s, h);
    T G[kMaxHead];
    for (int dir = 0; dir < 2; ++dir) {
      for (idx r = 0; r < d; ++r) G[r] = T(0);
      for (idx k = 0; k < t1 - t0; ++k) {
        const idx t = walk_row(t0, t1, k, dir);
        T* dv = dqkv + t * 3 * D + 2 * D + c0 + j;
        if (!kept(keep, t)) {
          *dv = T(0);
          continue;
        }
        const T* q = qkv + t * 3 * D + c0;
        const T o = dpre[t * D + c0 + j] * inv_c[t * s.H + h];
        T acc = 0;
        for (idx r = 0; r < d; ++r) {
          G[r] = g * G[r] + q[r] * o;
          acc += G[r] * q[D + r];
        }
        *dv = dir == 0 ? acc : *dv + acc;
      }
    }
    for (idx t = t0; t < t1; ++t) {
      if (!kept(keep, t)) continue;
      const T* q = qkv + t * 3 * D + c0;
      T qk = 0;
      for (idx r = 0; r < d; ++r) qk += q[r] * q[D + r];
      dqkv[t * 3 * D + 2 * D + c0 + j] -= qk * dpre[t * D + c0 + j] * inv_c[t * s.H + h];
    }
  }
};

}  // namespace seqswap::ops::retention
