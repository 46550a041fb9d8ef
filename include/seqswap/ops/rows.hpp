// The per-row and per-element math of layer norm, GELU, softmax cross-entropy and AdamW, as
// host-and-device functions: the host ops (ops/layer_norm.hpp, train/loss.hpp, train/adamw.hpp)
// loop over rows or elements calling these, and the CUDA kernels (ops/cuda/rows.cuh) run the
// same functions one thread per row or element, so the device result is the host's by
// construction and the tests compare the two (tests/cuda/test_cuda_rows.cu).
//
// GELU is the exception: the host op keeps its vectorised erf (ops/gelu.hpp, within 3e-7 of
// erf); gelu_value / gelu_grad here use the math library's erf and serve the device.
#pragma once
#include <cmath>
#include <cstdint>

#include "seqswap/config.hpp"  // SEQSWAP_HD

namespace seqswap::ops::rows {

using idx = std::int64_t;

// a · b over n values, in order (the device functors' inner products: attention's row delta, the
// RNN cells' recurrent products).
template <class T>
SEQSWAP_HD T dot(const T* a, const T* b, idx n) {
  T s = 0;
  for (idx i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// y = (x − mean) · rstd · gamma + beta over one row of D, rstd = 1 / √(var + eps).
template <class T>
SEQSWAP_HD void layer_norm_forward_row(const T* x, idx D, const T* gamma, const T* beta, T eps, T* y,
                                              T& mean, T& rstd) {
  T m = 0;
  SEQSWAP_SIMD_SUM(m)
  for (idx j = 0; j < D; ++j) m += x[j];
  m /= T(D);
  T v = 0;
  SEQSWAP_SIMD_SUM(v)
  for (idx j = 0; j < D; ++j) v += (x[j] - m) * (x[j] - m);
  v /= T(D);
  const T s = T(1) / std::sqrt(v + eps);
  for (idx j = 0; j < D; ++j) y[j] = (x[j] - m) * s * gamma[j] + beta[j];
  mean = m;
  rstd = s;
}

// dx = rstd (g − mean(g) − x̂ mean(g x̂)), g = dy · gamma, x̂ = (x − mean) rstd; ASSIGNED.
template <class T>
SEQSWAP_HD void layer_norm_backward_row(const T* x, idx D, const T* gamma, T m, T s, const T* dy, T* dx) {
  T sum_g = 0, sum_gx = 0;
  SEQSWAP_SIMD_SUM(sum_g, sum_gx)
  for (idx j = 0; j < D; ++j) {
    const T g = dy[j] * gamma[j];
    sum_g += g;
    sum_gx += g * (x[j] - m) * s;
  }
  sum_g /= T(D);
  sum_gx /= T(D);
  for (idx j = 0; j < D; ++j) {
    const T xhat = (x[j] - m) * s;
    dx[j] = s * (dy[j] * gamma[j] - sum_g - xhat * sum_gx);
  }
}

// gelu(x) = x Φ(x) = ½ x (1 + erf(x / √2)) and its derivative Φ(x) + x φ(x).
template <class T>
SEQSWAP_HD T gelu_value(T x) {
  return T(0.5) * x * (T(1) + std::erf(x * T(0.70710678118654752440)));
}
template <class T>
SEQSWAP_HD T gelu_grad(T x) {
  const T cdf = T(0.5) * (T(1) + std::erf(x * T(0.70710678118654752440)));
  return cdf + x * T(0.39894228040143267794) * std::exp(T(-0.5) * x * x);
}

// Softmax cross-entropy of one row of C logits with label y and smoothing ε (q = (1 − ε)
// onehot(y) + ε / C): returns −Σ_c q_c log softmax(z)_c; dz (if non-null) ASSIGNED
// (softmax − q) / batch. The label must be in [0, C) (the host checks it).
struct CrossEntropyRow {
  double loss;
  bool correct;  // argmax == y (first maximum on ties)
};
template <class T>
SEQSWAP_HD CrossEntropyRow cross_entropy_row(const T* z, idx C, std::int32_t y, double smoothing, idx batch,
                                                    T* dz) {
  idx arg = 0;
  for (idx c = 1; c < C; ++c)
    if (z[c] > z[arg]) arg = c;
  const T mx = z[arg];
  double sum = 0;
  for (idx c = 0; c < C; ++c) sum += std::exp(double(z[c] - mx));
  const double log_sum = std::log(sum) + double(mx);
  double l = 0;
  for (idx c = 0; c < C; ++c) {
    const double q = (c == y ? 1.0 - smoothing : 0.0) + smoothing / double(C);
    const double logp = double(z[c]) - log_sum;
    l -= q * logp;
    if (dz) dz[c] = T((std::exp(logp) - q) / double(batch));
  }
  return {l, arg == y};
}

// AdamW (torch.optim.AdamW) for one element, with the step's coefficients precomputed.
template <class T>
struct AdamWCoefs {
  T b1, b2, step_size, inv_sqrt_bc2, eps, decay;  // decay = 1 − lr · weight_decay
};
template <class T>
SEQSWAP_HD void adamw_element(T& p, T g, T& m, T& v, bool decayed, const AdamWCoefs<T>& k) {
  const T mi = k.b1 * m + (T(1) - k.b1) * g;
  const T vi = k.b2 * v + (T(1) - k.b2) * g * g;
  m = mi;
  v = vi;
  const T pi = decayed ? p * k.decay : p;
  p = pi - k.step_size * mi / (std::sqrt(vi) * k.inv_sqrt_bc2 + k.eps);
}

// σ(v) without overflow (exp of a non-positive number only), as ops::sigmoid (ops/mask.hpp).
template <class T>
SEQSWAP_HD T sigmoid(T v) {
  if (v >= T(0)) return T(1) / (T(1) + std::exp(-v));
  const T e = std::exp(v);
  return e / (T(1) + e);
}

// minGRU's gate of one channel (mixers/min_gru.hpp; the host runs the same formulas through
// Eigen's vectorised logistic): decay a = σ(−u), input b = σ(u) h̃; a masked token is the
// identity step (a = 1, b = 0). Backward: du = σ(u) σ(−u) (db h̃ − da), dh̃ = db σ(u).
template <class T>
SEQSWAP_HD void min_gru_gate(T u, T hc, bool kept, T& a, T& b) {
  a = kept ? sigmoid(-u) : T(1);
  b = kept ? sigmoid(u) * hc : T(0);
}
template <class T>
SEQSWAP_HD void min_gru_gate_backward(T u, T hc, T da, T db, bool kept, T& du, T& dhc) {
  const T s = sigmoid(u);
  du = kept ? s * sigmoid(-u) * (db * hc - da) : T(0);
  dhc = kept ? db * s : T(0);
}

}  // namespace seqswap::ops::rows
