// Layer norm over the last dimension of token rows (host; a row's math is ops/rows.hpp's, which
// the device kernels share).
#pragma once
#include <algorithm>
#include <cmath>

#include "seqswap/backend/host.hpp"
#include "seqswap/ops/rows.hpp"

namespace seqswap::ops {

// x (rows, D) -> y (rows, D); mean, rstd (rows) saved for backward.
// y = (x - mean) * rstd * gamma + beta, rstd = 1 / sqrt(var + eps)
template <class T>
void layer_norm_forward(const T* x, index_t rows, index_t D, const T* gamma, const T* beta,
                        T eps, T* y, T* mean, T* rstd) {
#pragma omp parallel for schedule(static) if (rows * D > 8192)
  for (index_t r = 0; r < rows; ++r)
    ops::rows::layer_norm_forward_row(x + r * D, D, gamma, beta, eps, y + r * D, mean[r], rstd[r]);
}

// dy (rows, D) -> dx (rows, D) ASSIGNED (if non-null); dgamma, dbeta (D) ACCUMULATED.
// With xhat = (x - mean) rstd and g = dy * gamma:
//   dx = rstd (g - mean(g) - xhat mean(g xhat))
template <class T>
void layer_norm_backward(const T* x, index_t rows, index_t D, const T* gamma, const T* mean,
                         const T* rstd, const T* dy, T* dx, T* dgamma, T* dbeta) {
  if (dx) {
#pragma omp parallel for schedule(static) if (rows * D > 8192)
    for (index_t r = 0; r < rows; ++r)
      ops::rows::layer_norm_backward_row(x + r * D, D, gamma, mean[r], rstd[r], dy + r * D, dx + r * D);
  }
  // Parameter gradients: a sum over rows, in fixed chunks of rows added in order
  // (host::chunked_row_sum): parallel, and the same on any number of threads.
  host::chunked_row_sum<T>(
      rows, 2 * D,
      [&](index_t r0, index_t r1, T* o) {
        T* dg = o;
        T* db = o + D;
        std::fill(o, o + 2 * D, T(0));
        for (index_t r = r0; r < r1; ++r) {
          const T* xr = x + r * D;
          const T* dyr = dy + r * D;
          const T m = mean[r], s = rstd[r];
          for (index_t j = 0; j < D; ++j) {
            dg[j] += dyr[j] * (xr[j] - m) * s;
            db[j] += dyr[j];
          }
        }
      },
      [&](const T* p) {
        for (index_t j = 0; j < D; ++j) {
          dgamma[j] += p[j];
          dbeta[j] += p[D + j];
        }
      });
}

}  // namespace seqswap::ops
