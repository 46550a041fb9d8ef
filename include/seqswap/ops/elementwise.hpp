// The element-wise steps of the device ops (ops/device.hpp) as host-and-device functors: f(i)
// does element i. The CUDA definitions (ops/cuda/device_ops.cuh) run them one thread per
// element; the device emulation that tests the layers' device paths on a machine without a GPU
// (tests/device_emulation.hpp) runs the very same functors in a loop.
#pragma once
#include <cstdint>

#include "seqswap/config.hpp"  // SEQSWAP_HD
#include "seqswap/ops/rows.hpp"

namespace seqswap::ops::elementwise {

SEQSWAP_HD bool kept(const std::uint8_t* keep, long long row) { return !keep || keep[row]; }

template <class T>
struct ResidualAdd {
  const T *x, *f;
  const std::uint8_t* keep;
  long long D;
  T* y;
  SEQSWAP_HD void operator()(long long i) const { y[i] = x[i] + (kept(keep, i / D) ? f[i] : T(0)); }
};
template <class T>
struct AddKept {  // y += keep ∘ x
  T* y;
  const T* x;
  const std::uint8_t* keep;
  long long D;
  SEQSWAP_HD void operator()(long long i) const {
    if (kept(keep, i / D)) y[i] += x[i];
  }
};
template <class T>
struct CopyKept {  // dst = keep ∘ src (dst may be src)
  const T* src;
  T* dst;
  const std::uint8_t* keep;
  long long D;
  SEQSWAP_HD void operator()(long long i) const { dst[i] = kept(keep, i / D) ? src[i] : T(0); }
};
// The pixel of image element k of patch rows (B, G·G, C·p·p): both directions share it.
struct PatchIndex {
  long long C, S, p;
  SEQSWAP_HD long long pixel(long long k) const {
    const long long K = C * p * p, G = S / p;
    const long long row = k / K, e = k % K, b = row / (G * G), g = row % (G * G);
    const long long ch = e / (p * p), ky = (e / p) % p, kx = e % p;
    return ((b * C + ch) * S + (g / G) * p + ky) * S + (g % G) * p + kx;
  }
};
template <class T>
struct Unfold {
  PatchIndex at;
  const T* img;
  T* cols;
  SEQSWAP_HD void operator()(long long k) const { cols[k] = img[at.pixel(k)]; }
};
template <class T>
struct Fold {
  PatchIndex at;
  const T* cols;
  T* img;
  SEQSWAP_HD void operator()(long long k) const { img[at.pixel(k)] = cols[k]; }
};
template <class T>
struct ClsPosForward {  // y (B, P+1, D)
  const T *x, *cls, *pos;
  long long P, D;
  T* y;
  SEQSWAP_HD void operator()(long long i) const {
    const long long per = (P + 1) * D, b = i / per, t = i % per;
    y[i] = (t < D ? cls[t] : x[b * P * D + t - D]) + pos[t];
  }
};
template <class T>
struct ClsPosParams {  // one thread per column t of (P+1)·D, summing the batch in order
  const T* dy;
  long long batch, P, D;
  T *dcls, *dpos;
  SEQSWAP_HD void operator()(long long t) const {
    const long long per = (P + 1) * D;
    T s = dpos[t];
    for (long long b = 0; b < batch; ++b) s += dy[b * per + t];
    dpos[t] = s;
    if (t < D) {
      T c = dcls[t];
      for (long long b = 0; b < batch; ++b) c += dy[b * per + t];
      dcls[t] = c;
    }
  }
};
template <class T>
struct ClsPosDx {  // dx (B, P, D) = dy without each image's CLS row
  const T* dy;
  long long P, D;
  T* dx;
  SEQSWAP_HD void operator()(long long i) const {
    const long long b = i / (P * D), t = i % (P * D);
    dx[i] = dy[b * (P + 1) * D + D + t];
  }
};
template <class T>
struct MinGruGates {
  const T* zh;
  const std::uint8_t* keep;
  long long E;
  T *a, *b;
  SEQSWAP_HD void operator()(long long i) const {
    const long long t = i / E, e = i % E;
    rows::min_gru_gate(zh[t * 2 * E + e], zh[t * 2 * E + E + e], kept(keep, t), a[i], b[i]);
  }
};
template <class T>
struct MinGruGatesBackward {
  const T *zh, *da, *db;
  const std::uint8_t* keep;
  long long E;
  T* dzh;
  SEQSWAP_HD void operator()(long long i) const {
    const long long t = i / E, e = i % E;
    rows::min_gru_gate_backward(zh[t * 2 * E + e], zh[t * 2 * E + E + e], da[i], db[i], kept(keep, t),
                                dzh[t * 2 * E + e], dzh[t * 2 * E + E + e]);
  }
};
template <class T>
struct CombineDirections {
  const T *h0, *h1;
  const std::uint8_t* keep;
  long long E;
  bool concat;
  T* pre;
  SEQSWAP_HD void operator()(long long i) const {  // i over (rows, E)
    const long long t = i / E, e = i % E;
    const bool k = kept(keep, t);
    if (concat) {
      pre[t * 2 * E + e] = k ? h0[i] : T(0);
      pre[t * 2 * E + E + e] = k ? h1[i] : T(0);
    } else {
      pre[i] = k ? (h1 ? h0[i] + h1[i] : h0[i]) : T(0);
    }
  }
};
template <class T>
struct CopyColumns {
  const T* src;
  long long width, off, E;
  T* dst;
  SEQSWAP_HD void operator()(long long i) const { dst[i] = src[(i / E) * width + off + i % E]; }
};
template <class T>
struct Scale {
  T* x;
  T s;
  SEQSWAP_HD void operator()(long long i) const { x[i] *= s; }
};

// A-ViT halting (model/halting.hpp). o += w ∘ t over rows (w per row: 0 where inactive).
template <class T>
struct AddWeightedRows {
  T* y;
  const T *w, *t;
  long long D;
  SEQSWAP_HD void operator()(long long i) const { y[i] += w[i / D] * t[i]; }
};
// out_k = <a_k, b_k> in double, one row per element.
template <class T>
struct RowDots {
  const T *a, *b;
  long long D;
  double* out;
  SEQSWAP_HD void operator()(long long k) const {
    double s = 0;
    for (long long j = 0; j < D; ++j) s += double(a[k * D + j]) * double(b[k * D + j]);
    out[k] = s;
  }
};
// dL/dt^l = w^l do + carry, plus du^l on channel 0, on the rows active at l; zero elsewhere.
template <class T>
struct HaltingGrad {
  const T *w, *dout, *carry, *du;
  const std::uint8_t* act;
  long long D;
  T* dt;
  SEQSWAP_HD void operator()(long long i) const {
    const long long k = i / D;
    dt[i] = act[k] ? w[k] * dout[i] + carry[i] + (i % D == 0 ? du[k] : T(0)) : T(0);
  }
};

}  // namespace seqswap::ops::elementwise
