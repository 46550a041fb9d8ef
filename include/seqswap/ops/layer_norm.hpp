// Layer norm over the last dimension of token rows (host).
#pragma once
#include <cmath>

#include "seqswap/backend/host.hpp"

namespace seqswap::ops {

// x (rows, D) -> y (rows, D); mean, rstd (rows) saved for backward.
// y = (x - mean) * rstd * gamma + beta, rstd = 1 / sqrt(var + eps)
template <class T>
void layer_norm_forward(const T* x, index_t rows, index_t D, const T* gamma, const T* beta,
                        T eps, T* y, T* mean, T* rstd) {
#pragma omp parallel for schedule(static) if (rows * D > 8192)
  for (index_t r = 0; r < rows; ++r) {
    const T* xr = x + r * D;
    T* yr = y + r * D;
    T m = 0;
    for (index_t j = 0; j < D; ++j) m += xr[j];
    m /= T(D);
    T v = 0;
    for (index_t j = 0; j < D; ++j) v += (xr[j] - m) * (xr[j] - m);
    v /= T(D);
    const T s = T(1) / std::sqrt(v + eps);
    for (index_t j = 0; j < D; ++j) yr[j] = (xr[j] - m) * s * gamma[j] + beta[j];
    mean[r] = m;
    rstd[r] = s;
  }
}

// dy (rows, D) -> dx (rows, D) ASSIGNED (if non-null); dgamma, dbeta (D) ACCUMULATED.
// With xhat = (x - mean) rstd and g = dy * gamma:
//   dx = rstd (g - mean(g) - xhat mean(g xhat))
template <class T>
void layer_norm_backward(const T* x, index_t rows, index_t D, const T* gamma, const T* mean,
                         const T* rstd, const T* dy, T* dx, T* dgamma, T* dbeta) {
  if (dx) {
#pragma omp parallel for schedule(static) if (rows * D > 8192)
    for (index_t r = 0; r < rows; ++r) {
      const T* xr = x + r * D;
      const T* dyr = dy + r * D;
      T* dxr = dx + r * D;
      const T m = mean[r], s = rstd[r];
      T sum_g = 0, sum_gx = 0;
      for (index_t j = 0; j < D; ++j) {
        const T g = dyr[j] * gamma[j];
        sum_g += g;
        sum_gx += g * (xr[j] - m) * s;
      }
      sum_g /= T(D);
      sum_gx /= T(D);
      for (index_t j = 0; j < D; ++j) {
        const T xhat = (xr[j] - m) * s;
        dxr[j] = s * (dyr[j] * gamma[j] - sum_g - xhat * sum_gx);
      }
    }
  }
  // Parameter gradients: a reduction over rows; done per column block to stay deterministic.
  for (index_t r = 0; r < rows; ++r) {
    const T* xr = x + r * D;
    const T* dyr = dy + r * D;
    const T m = mean[r], s = rstd[r];
    for (index_t j = 0; j < D; ++j) {
      dgamma[j] += dyr[j] * (xr[j] - m) * s;
      dbeta[j] += dyr[j];
    }
  }
}

}  // namespace seqswap::ops
