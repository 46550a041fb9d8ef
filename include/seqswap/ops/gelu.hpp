// GELU with erf (exact form, as torch.nn.GELU() and timm's default).
#pragma once
#include <cmath>
#include <cstddef>
#include <numbers>

namespace seqswap::ops {

// gelu(x) = x Φ(x) = 0.5 x (1 + erf(x / √2))
template <class T>
void gelu_forward(const T* x, std::size_t n, T* y) {
  const T inv_sqrt2 = T(1) / std::numbers::sqrt2_v<T>;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (std::size_t i = 0; i < n; ++i) y[i] = T(0.5) * x[i] * (T(1) + std::erf(x[i] * inv_sqrt2));
}

// d gelu / dx = Φ(x) + x φ(x); dx = dy * that (ASSIGNED).
template <class T>
void gelu_backward(const T* x, const T* dy, std::size_t n, T* dx) {
  const T inv_sqrt2 = T(1) / std::numbers::sqrt2_v<T>;
  const T inv_sqrt_2pi = std::numbers::inv_sqrtpi_v<T> * inv_sqrt2;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (std::size_t i = 0; i < n; ++i) {
    const T v = x[i];
    const T cdf = T(0.5) * (T(1) + std::erf(v * inv_sqrt2));
    const T pdf = inv_sqrt_2pi * std::exp(T(-0.5) * v * v);
    dx[i] = dy[i] * (cdf + v * pdf);
  }
}

}  // namespace seqswap::ops
