// The multi-head RNN mixer's device math (mixers/rnn.hpp on backend::Cuda) as host-and-device
// functors, one call per element: the CUDA backend runs them one thread per element
// (ops::device::for_each), the device emulation that tests the layers' device paths on a machine
// without a GPU (tests/device_emulation.hpp) runs the very same functors in a loop. The mixer's
// host path (Eigen GEMMs per head, vectorised gates) is the reference both are compared with
// (tests/device_model_checks.hpp).
//
// Layouts, as in the mixer (rows in scan order, offsets (batch+1) on the device):
//   u      (rows, D)                in_proj's output; head h reads columns [h·d, (h+1)·d)
//   saved  (H·R, rows, S·d)         per head and direction hr = h·R + r: the input side of the
//                                   gates on entry, the cell's values once the recurrence ran
//   s      (rows, R·D)              hidden states, [t][h][r][0..d)
//   dgi    (H·R, rows, G·d)         gradients of the gates' pre-activations; dgh (GRU only) of
//                                   W_hh h + b_hh
//   cells  W_ih, W_hh (G·d, d), b_ih, b_hh (G·d) of head h, direction r: cell(r, h) below.
// The recurrence is sequential in the tokens: one thread per (sequence, head, direction) walks
// them and does the step's small matrix-vector product itself. A first, correctness-first
// mapping (a block per (sequence, head, direction) with W_hh in shared memory is the next step
// once it has run on a GPU); the weight gradients are one thread per weight, summing over the
// tokens in order (no atomics: deterministic).
#pragma once
#include <cmath>
#include <cstdint>

#include "seqswap/config.hpp"  // SEQSWAP_HD
#include "seqswap/ops/rows.hpp"  // rows::sigmoid, rows::dot

namespace seqswap::ops::rnn {

using idx = std::int64_t;
using rows::dot;

// Sizes and the cell tensors' places inside one parameter (or gradient) slice.
template <class T>
struct Geometry {
  idx rows = 0, D = 0, d = 0, H = 1, R = 1;  // tokens, width, head width, heads, directions
  idx G = 4, S = 5;                          // gates (LSTM 4, GRU 3) and saved values per step
  bool lstm = true;
  idx dir_stride = 0;                        // elements of one direction's cell tensors

  SEQSWAP_HD idx w_ih(idx r, idx h) const { return r * dir_stride + h * G * d * d; }
  SEQSWAP_HD idx w_hh(idx r, idx h) const { return r * dir_stride + (H + h) * G * d * d; }
  SEQSWAP_HD idx b_ih(idx r, idx h) const { return r * dir_stride + 2 * H * G * d * d + h * G * d; }
  SEQSWAP_HD idx b_hh(idx r, idx h) const { return b_ih(r, h) + H * G * d; }
  SEQSWAP_HD idx saved(idx hr, idx t) const { return (hr * rows + t) * S * d; }
  SEQSWAP_HD idx gates(idx hr, idx t) const { return (hr * rows + t) * G * d; }
  SEQSWAP_HD idx state(idx t, idx h, idx r) const { return t * R * D + (h * R + r) * d; }
};

// saved[hr][t][q] = u[t, head h] · W_ih[q] + b_ih[q] (+ b_hh[q] for the LSTM, whose biases both
// sit outside every nonlinearity). Element i = (hr, t, q), q < G·d.
template <class T>
struct GateInputs {
  Geometry<T> g;
  const T* cells;  // the cell tensors of direction 0 (parameters)
  const T* u;
  T* saved;
  SEQSWAP_HD void operator()(idx i) const {
    const idx Gd = g.G * g.d, q = i % Gd, t = (i / Gd) % g.rows, hr = i / (Gd * g.rows);
    const idx h = hr / g.R, r = hr % g.R;
    T v = dot(u + t * g.D + h * g.d, cells + g.w_ih(r, h) + q * g.d, g.d) + cells[g.b_ih(r, h) + q];
    if (g.lstm) v += cells[g.b_hh(r, h) + q];
    saved[g.saved(hr, t) + q] = v;
  }
};

// The recurrence of one (sequence, head, direction): element i = b·H·R + hr. Cells follow
// torch.nn.LSTM / torch.nn.GRU (mixers/rnn.hpp); a masked token is an identity step.
template <class T>
struct Forward {
  Geometry<T> g;
  const T* cells;
  const idx* offsets;          // (batch+1), device
  const std::uint8_t* keep;    // (rows) or null
  T* saved;
  T* s;
  SEQSWAP_HD void operator()(idx i) const {
    const idx HR = g.H * g.R, b = i / HR, hr = i % HR, h = hr / g.R, r = hr % g.R, d = g.d;
    const idx t0 = offsets[b], n = offsets[b + 1] - t0;
    const T* whh = cells + g.w_hh(r, h);
    const T* bhh = cells + g.b_hh(r, h);
    const T* h_prev = nullptr;  // null: the zero initial state
    const T* c_prev = nullptr;
    for (idx k = 0; k < n; ++k) {
      const idx t = r == 0 ? t0 + k : t0 + n - 1 - k;
      T* gt = saved + g.saved(hr, t);
      T* ht = s + g.state(t, h, r);
      if (keep && !keep[t]) {  // the state passes through unchanged
        for (idx j = 0; j < d; ++j) ht[j] = h_prev ? h_prev[j] : T(0);
        for (idx q = 0; q < g.G * d; ++q) gt[q] = T(0);
        for (idx j = 0; j < d; ++j) gt[g.G * d + j] = g.lstm && c_prev ? c_prev[j] : T(0);
      } else if (g.lstm) {
        for (idx j = 0; j < d; ++j) {
          T a[4];
          for (idx q = 0; q < 4; ++q) a[q] = gt[q * d + j] + (h_prev ? dot(whh + (q * d + j) * d, h_prev, d) : T(0));
          const T I = rows::sigmoid(a[0]), F = rows::sigmoid(a[1]), Gv = std::tanh(a[2]), O = rows::sigmoid(a[3]);
          const T C = F * (c_prev ? c_prev[j] : T(0)) + I * Gv;
          gt[j] = I, gt[d + j] = F, gt[2 * d + j] = Gv, gt[3 * d + j] = O, gt[4 * d + j] = C;
          ht[j] = O * std::tanh(C);
        }
      } else {
        for (idx j = 0; j < d; ++j) {
          T gh[3];
          for (idx q = 0; q < 3; ++q) gh[q] = bhh[q * d + j] + (h_prev ? dot(whh + (q * d + j) * d, h_prev, d) : T(0));
          const T rr = rows::sigmoid(gt[j] + gh[0]), z = rows::sigmoid(gt[d + j] + gh[1]);
          const T nn = std::tanh(gt[2 * d + j] + rr * gh[2]);
          gt[j] = rr, gt[d + j] = z, gt[2 * d + j] = nn, gt[3 * d + j] = gh[2];
          ht[j] = (T(1) - z) * nn + z * (h_prev ? h_prev[j] : T(0));
        }
      }
      h_prev = ht;
      if (g.lstm) c_prev = gt + 4 * d;
    }
  }
};

// Backprop through the time of one (sequence, head, direction), element i = b·H·R + hr: the
// steps in the reverse of the forward's order; writes dgi (and dgh for the GRU) of its tokens.
// scratch: 2·d per element (dL/dh and dL/dc, or dh·z for the GRU, carried between steps).
template <class T>
struct Backward {
  Geometry<T> g;
  const T* cells;
  const idx* offsets;
  const std::uint8_t* keep;
  const T* saved;
  const T* s;
  const T* ds;  // (rows, R·D) the gradient reaching the hidden states from the merge
  T* dgi;
  T* dgh;       // GRU only
  T* scratch;
  SEQSWAP_HD void operator()(idx i) const {
    const idx HR = g.H * g.R, b = i / HR, hr = i % HR, h = hr / g.R, r = hr % g.R, d = g.d, Gd = g.G * d;
    const idx t0 = offsets[b], n = offsets[b + 1] - t0;
    const T* whh = cells + g.w_hh(r, h);
    T* dh = scratch + i * 2 * d;
    T* dc = dh + d;
    for (idx j = 0; j < 2 * d; ++j) dh[j] = T(0);
    for (idx k = n - 1; k >= 0; --k) {
      const idx t = r == 0 ? t0 + k : t0 + n - 1 - k;
      const idx tp = r == 0 ? t - 1 : t + 1;  // the previous step's row
      const T* gt = saved + g.saved(hr, t);
      const T* dht = ds + g.state(t, h, r);
      T* da = dgi + g.gates(hr, t);
      if (keep && !keep[t]) {  // h_t = h_{t-1}, c_t = c_{t-1}: the gradient passes through
        for (idx j = 0; j < d; ++j) dh[j] += dht[j];
        for (idx q = 0; q < Gd; ++q) da[q] = T(0);
        if (!g.lstm)
          for (idx q = 0; q < Gd; ++q) dgh[g.gates(hr, t) + q] = T(0);
        continue;
      }
      if (g.lstm) {
        const T* c_prev = k == 0 ? nullptr : saved + g.saved(hr, tp) + 4 * d;
        for (idx j = 0; j < d; ++j) {
          const T I = gt[j], F = gt[d + j], Gv = gt[2 * d + j], O = gt[3 * d + j], C = gt[4 * d + j];
          const T Dh = dh[j] + dht[j], tc = std::tanh(C);
          const T Dc = dc[j] + Dh * O * (T(1) - tc * tc);
          da[j] = Dc * Gv * I * (T(1) - I);
          da[d + j] = Dc * (c_prev ? c_prev[j] : T(0)) * F * (T(1) - F);
          da[2 * d + j] = Dc * I * (T(1) - Gv * Gv);
          da[3 * d + j] = Dh * tc * O * (T(1) - O);
          dc[j] = Dc * F;
        }
        for (idx j = 0; j < d; ++j) {  // dh_prev = W_hhᵀ da
          T v = 0;
          for (idx q = 0; q < Gd; ++q) v += da[q] * whh[q * d + j];
          dh[j] = v;
        }
      } else {
        T* dgt = dgh + g.gates(hr, t);
        for (idx j = 0; j < d; ++j) {
          const T rr = gt[j], z = gt[d + j], nn = gt[2 * d + j], ghn = gt[3 * d + j];
          const T hp = k == 0 ? T(0) : s[g.state(tp, h, r) + j];
          const T dhj = dh[j] + dht[j];
          const T dan = dhj * (T(1) - z) * (T(1) - nn * nn);
          const T daz = dhj * (hp - nn) * z * (T(1) - z);
          const T dar = dan * ghn * rr * (T(1) - rr);
          da[j] = dar, da[d + j] = daz, da[2 * d + j] = dan;
          dgt[j] = dar, dgt[d + j] = daz, dgt[2 * d + j] = dan * rr;
          dc[j] = dhj * z;
        }
        for (idx j = 0; j < d; ++j) {  // dh_prev = W_hhᵀ dgh + dh z
          T v = dc[j];
          for (idx q = 0; q < Gd; ++q) v += dgt[q] * whh[q * d + j];
          dh[j] = v;
        }
      }
    }
  }
};

// The cell tensors' gradients, ACCUMULATED, one element per weight or bias: element i =
// (hr, q, col) with col < d: dW_ih[q, col] += Σ_t dgi[t, q] u[t, h·d + col]; d <= col < 2d:
// dW_hh[q, col - d] += Σ over each sequence's consecutive steps of dgh[t, q] h_prev[col - d];
// col = 2d: db_ih[q] += Σ_t dgi[t, q]; col = 2d + 1: db_hh[q] += Σ_t dgh[t, q].
template <class T>
struct CellGrads {
  Geometry<T> g;
  const idx* offsets;
  idx batch;
  const T* u;
  const T* s;
  const T* dgi;
  const T* dgh;  // the LSTM passes dgi
  T* gcells;     // the gradient slice's cell tensors of direction 0
  SEQSWAP_HD void operator()(idx i) const {
    const idx d = g.d, Gd = g.G * d, cols = 2 * d + 2;
    const idx col = i % cols, q = (i / cols) % Gd, hr = i / (cols * Gd), h = hr / g.R, r = hr % g.R;
    T v = 0;
    if (col < d) {
      for (idx t = 0; t < g.rows; ++t) v += dgi[g.gates(hr, t) + q] * u[t * g.D + h * d + col];
      gcells[g.w_ih(r, h) + q * d + col] += v;
    } else if (col < 2 * d) {
      const idx j = col - d;
      for (idx b = 0; b < batch; ++b)
        for (idx t = offsets[b]; t + 1 < offsets[b + 1]; ++t) {
          const idx ta = r == 0 ? t + 1 : t, th = r == 0 ? t : t + 1;  // the step and its predecessor
          v += dgh[g.gates(hr, ta) + q] * s[g.state(th, h, r) + j];
        }
      gcells[g.w_hh(r, h) + q * d + j] += v;
    } else {
      const T* src = col == 2 * d ? dgi : dgh;
      for (idx t = 0; t < g.rows; ++t) v += src[g.gates(hr, t) + q];
      gcells[(col == 2 * d ? g.b_ih(r, h) : g.b_hh(r, h)) + q] += v;
    }
  }
};

// du[t, h·d + j] = Σ_r Σ_q dgi_{h,r}[t, q] W_ih{h,r}[q, j] (ASSIGNED); element i = t·D + h·d + j.
template <class T>
struct InputGrad {
  Geometry<T> g;
  const T* cells;
  const T* dgi;
  T* du;
  SEQSWAP_HD void operator()(idx i) const {
    const idx t = i / g.D, c = i % g.D, h = c / g.d, j = c % g.d, Gd = g.G * g.d;
    T v = 0;
    for (idx r = 0; r < g.R; ++r) {
      const T* da = dgi + g.gates(h * g.R + r, t);
      const T* w = cells + g.w_ih(r, h) + j;
      for (idx q = 0; q < Gd; ++q) v += da[q] * w[q * g.d];
    }
    du[i] = v;
  }
};

}  // namespace seqswap::ops::rnn
