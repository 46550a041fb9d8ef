// The depthwise convolution mixer's device math (mixers/conv.hpp on backend::Cuda) as
// host-and-device functors, f(i) doing element i (ops::device::for_each runs them one thread
// per element; the device emulation in a loop). The mixer's host path is the reference.
//
// The neighbourhoods are the host's (conv::Filter<Kind>::for_taps / for_taps_transposed) as
// functions of one tap: tap q of output row t reads row tap_source(...) (−1: off the grid or
// the sequence), and row t is read by output row tap_dest(...) through tap q. Grid2d: each
// sequence is CLS (row t0) plus a G×G patch grid, G = √(n − 1) (the host checked the lengths);
// tap q = u·k + v of patch (i, j) reads patch (i+u−r, j+v−r). Seq1d: tap q of position m reads
// position m + q − r. r = k / 2. Every sum over rows runs in row order (deterministic).
// x, z, dz (rows, D); w (D, K) as stored ("dw.weight"), bias (D), then Grid2d's cls_weight and
// cls_mix (D each).
#pragma once
#include <cmath>
#include <cstdint>

#include "seqswap/config.hpp"
#include "seqswap/ops/ssm_rows.hpp"  // sequence_of, kept_row

namespace seqswap::ops::conv {

using idx = std::int64_t;
using ssm::kept_row;
using ssm::sequence_of;

struct Geometry {
  bool grid;  // Grid2d (else Seq1d)
  idx k;      // kernel side
  idx K;      // taps: k² or k
  idx D, batch;
  const idx* offsets;  // device (batch+1)
};
SEQSWAP_HD idx grid_side(idx n) { return n > 1 ? idx(std::sqrt(double(n - 1)) + 0.5) : 0; }

// The row tap q of output row t reads (−1: none); t0, n: its sequence.
SEQSWAP_HD idx tap_source(const Geometry& g, idx t0, idx n, idx t, idx q) {
  const idx r = g.k / 2;
  if (g.grid) {
    const idx G = grid_side(n), p = t - t0 - 1, ii = p / G + q / g.k - r, jj = p % G + q % g.k - r;
    return ii >= 0 && ii < G && jj >= 0 && jj < G ? t0 + 1 + ii * G + jj : -1;
  }
  const idx src = t - t0 + q - r;
  return src >= 0 && src < n ? t0 + src : -1;
}
// The output row that reads row t through tap q (−1: none).
SEQSWAP_HD idx tap_dest(const Geometry& g, idx t0, idx n, idx t, idx q) {
  const idx r = g.k / 2;
  if (g.grid) {
    const idx G = grid_side(n), p = t - t0 - 1, ii = p / G - q / g.k + r, jj = p % G - q % g.k + r;
    return ii >= 0 && ii < G && jj >= 0 && jj < G ? t0 + 1 + ii * G + jj : -1;
  }
  const idx dst = t - t0 - q + r;
  return dst >= 0 && dst < n ? t0 + dst : -1;
}

// Grid2d's CLS rule: mean (B, D) of the kept patch rows of x and count (B): i = b·D + ch.
template <class T>
struct PatchMean {
  Geometry g;
  const T* x;
  const std::uint8_t* keep;
  T *mean, *count;
  SEQSWAP_HD void operator()(idx i) const {
    const idx b = i / g.D, ch = i % g.D;
    T s = 0;
    idx kept = 0;
    for (idx t = g.offsets[b] + 1; t < g.offsets[b + 1]; ++t) {
      if (!kept_row(keep, t)) continue;
      ++kept;
      s += x[t * g.D + ch];
    }
    mean[i] = kept > 0 ? s / T(kept) : T(0);
    if (ch == 0) count[b] = T(kept);
  }
};

// z (rows, D), i = t·D + ch: masked rows 0; Grid2d's CLS row: cls_weight x + cls_mix mean;
// else bias + Σ_q w[ch, q] x_src(q) over kept sources.
template <class T>
struct Forward {
  Geometry g;
  const T *x, *w, *mean;  // w: the layer's slice (dw.weight, dw.bias, cls_weight, cls_mix)
  const std::uint8_t* keep;
  T* z;
  SEQSWAP_HD void operator()(idx i) const {
    const idx D = g.D, t = i / D, ch = i % D;
    if (!kept_row(keep, t)) {
      z[i] = T(0);
      return;
    }
    const idx b = sequence_of(g.offsets, g.batch, t), t0 = g.offsets[b], n = g.offsets[b + 1] - t0;
    const T* bias = w + D * g.K;
    if (g.grid && t == t0) {
      z[i] = bias[D + ch] * x[i] + bias[2 * D + ch] * mean[b * D + ch];
      return;
    }
    T acc = bias[ch];
    for (idx q = 0; q < g.K; ++q) {
      const idx src = tap_source(g, t0, n, t, q);
      if (src >= 0 && kept_row(keep, src)) acc += w[ch * g.K + q] * x[src * D + ch];
    }
    z[i] = acc;
  }
};

// The filter's parameter gradients, ACCUMULATED into the layer's gradient slice: one (channel
// ch, slot a) per element, i = ch·(K + 3) + a; slots 0..K−1 the taps, K the bias, K+1 and K+2
// Grid2d's cls_weight and cls_mix. Sums over the rows in order.
template <class T>
struct ParamGrad {
  Geometry g;
  const T *x, *dz, *mean;
  const std::uint8_t* keep;
  T* gw;
  SEQSWAP_HD void operator()(idx i) const {
    const idx D = g.D, K = g.K, ch = i / (K + 3), a = i % (K + 3);
    if (a > K && !g.grid) return;
    T acc = 0;
    for (idx b = 0; b < g.batch; ++b) {
      const idx t0 = g.offsets[b], n = g.offsets[b + 1] - t0;
      for (idx t = t0; t < t0 + n; ++t) {
        if (!kept_row(keep, t)) continue;
        const T d = dz[t * D + ch];
        if (g.grid && t == t0) {
          if (a == K + 1) acc += d * x[t * D + ch];
          else if (a == K + 2) acc += d * mean[b * D + ch];
          continue;
        }
        if (a == K) {
          acc += d;
        } else if (a < K) {
          const idx src = tap_source(g, t0, n, t, a);
          if (src >= 0 && kept_row(keep, src)) acc += d * x[src * D + ch];
        }
      }
    }
    if (a < K) gw[ch * K + a] += acc;
    else gw[D * K + (a - K) * D + ch] += acc;
  }
};

// dx (rows, D) ASSIGNED, i = t·D + ch: masked rows 0; Grid2d: the CLS row cls_weight dz_cls,
// a kept patch cls_mix dz_cls / count plus its transposed taps; Seq1d: the transposed taps.
template <class T>
struct InputGrad {
  Geometry g;
  const T *w, *dz, *count;
  const std::uint8_t* keep;
  T* dx;
  SEQSWAP_HD void operator()(idx i) const {
    const idx D = g.D, t = i / D, ch = i % D;
    if (!kept_row(keep, t)) {
      dx[i] = T(0);
      return;
    }
    const idx b = sequence_of(g.offsets, g.batch, t), t0 = g.offsets[b], n = g.offsets[b + 1] - t0;
    const T* extra = w + D * g.K + D;  // cls_weight, cls_mix
    T acc = 0;
    if (g.grid) {
      const T dzc = dz[t0 * D + ch];
      if (t == t0) {
        dx[i] = extra[ch] * dzc;
        return;
      }
      acc = extra[D + ch] * dzc / count[b];
    }
    for (idx q = 0; q < g.K; ++q) {
      const idx dst = tap_dest(g, t0, n, t, q);
      if (dst >= 0) acc += w[ch * g.K + q] * dz[dst * D + ch];  // masked dz rows are zero
    }
    dx[i] = acc;
  }
};

}  // namespace seqswap::ops::conv
