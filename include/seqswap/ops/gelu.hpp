// GELU with erf (exact form, as torch.nn.GELU() and timm's default).
//
// Speed: glibc's erff costs ~10 ns per call (137 ms for the 13.1 M activations of one teacher
// forward at batch 128, one thread), so float uses a branch-free rational erf that the compiler
// vectorises: the 13/8-degree odd/even rational interpolant of Eigen's generic_fast_erf_float
// (clamped to [-4, 4], beyond which erf is ±1 in float; error ≤ 3e-7 absolute, measured against
// double-precision erf). The backward's Gaussian e^{-x²/2} uses the packet exp of non-positive
// values (ops/packet_exp.hpp). double keeps std::erf and Eigen's exp (it serves the
// finite-difference tests, not speed).
#pragma once
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numbers>
#include <type_traits>

#include "seqswap/ops/packet_exp.hpp"

namespace seqswap::ops {

// erf(v): std::erf for double, the vectorisable rational form for float.
template <class T>
inline T erf_approx(T v) {
  if constexpr (std::is_same_v<T, float>) {
    const float x = std::min(std::max(v, -4.0f), 4.0f), x2 = x * x;
    float p = x2 * -2.72614225801306e-10f + 2.77068142495902e-08f;  // numerator (odd)
    p = x2 * p - 2.10102402082508e-06f;
    p = x2 * p - 5.69250639462346e-05f;
    p = x2 * p - 7.34990630326855e-04f;
    p = x2 * p - 2.95459980854025e-03f;
    p = x2 * p - 1.60960333262415e-02f;
    p = x * p;
    float q = x2 * -1.45660718464996e-05f - 2.13374055278905e-04f;  // denominator (even)
    q = x2 * q - 1.68282697438203e-03f;
    q = x2 * q - 7.37332916720468e-03f;
    q = x2 * q - 1.42647390514189e-02f;
    return p / q;
  } else {
    return std::erf(v);
  }
}

// gelu(x) = x Φ(x) = 0.5 x (1 + erf(x / √2))
template <class T>
void gelu_forward(const T* x, std::size_t n, T* y) {
  const T inv_sqrt2 = T(1) / std::numbers::sqrt2_v<T>;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (std::size_t i = 0; i < n; ++i) y[i] = T(0.5) * x[i] * (T(1) + erf_approx(x[i] * inv_sqrt2));
}

// d gelu / dx = Φ(x) + x φ(x); dx = dy * that (ASSIGNED; dx may be dy).
template <class T>
void gelu_backward(const T* x, const T* dy, std::size_t n, T* dx) {
  const T inv_sqrt2 = T(1) / std::numbers::sqrt2_v<T>;
  const T inv_sqrt_2pi = std::numbers::inv_sqrtpi_v<T> * inv_sqrt2;
  constexpr std::size_t kChunk = 2048;  // the Gaussian of a chunk at once (vectorised exp)
  const std::size_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (std::size_t k = 0; k < chunks; ++k) {
    const std::size_t i0 = k * kChunk, m = std::min(kChunk, n - i0);
    alignas(64) T pdf[kChunk];
    for (std::size_t j = 0; j < m; ++j) pdf[j] = T(-0.5) * x[i0 + j] * x[i0 + j];
    if constexpr (std::is_same_v<T, float>) {  // e^{-x²/2} ≤ 1: the packet exp of non-positive values
      using namespace Eigen::internal;
      using P = typename packet_traits<T>::type;
      constexpr std::size_t S = unpacket_traits<P>::size;
      const std::size_t whole = (m + S - 1) / S * S;  // kChunk is a multiple of S
      std::fill(pdf + m, pdf + whole, T(0));
      for (std::size_t j = 0; j < whole; j += S) pstore(pdf + j, pexp_nonpositive(pload<P>(pdf + j)));
    } else {
      Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> P(pdf, static_cast<Eigen::Index>(m));
      P = P.exp();
    }
    // The derivative into the chunk's own buffer first: with dx == dy (in place) a fused loop
    // fails the compiler's overlap check at run time and runs scalar (10% of the teacher's
    // forward + backward, perf); reading x and writing the local buffer always vectorises.
    for (std::size_t j = 0; j < m; ++j) {
      const T v = x[i0 + j];
      const T cdf = T(0.5) * (T(1) + erf_approx(v * inv_sqrt2));
      pdf[j] = cdf + v * inv_sqrt_2pi * pdf[j];
    }
    if (dx == dy) {
      T* g = dx + i0;
      for (std::size_t j = 0; j < m; ++j) g[j] *= pdf[j];
    } else {
      for (std::size_t j = 0; j < m; ++j) dx[i0 + j] = dy[i0 + j] * pdf[j];
    }
  }
}

}  // namespace seqswap::ops
