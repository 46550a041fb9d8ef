// Dense affine maps over token rows on the host: y = x Wᵀ + b with W stored [out, in] (timm).
//
// Threads: every product runs over the fixed row chunks of host::row_chunks (up to 8, set by
// the row count alone), the chunks spread over the OpenMP threads. y = x Wᵀ + b and dx = dy W
// are row-wise: ops::panel_gemm's register tiles read x (or dy) in place, and W is packed once
// per call into the panels every chunk shares (ops/panel_gemm.hpp says why, and by how much
// this beat Eigen's product at the teacher's shapes). dW = dyᵀ x and db = Σ dy are sums over
// rows, one Eigen product per chunk (both operands large: its packing pays), whose per-chunk
// partials are added in chunk order (host::chunked_row_sum). So every result is the same on
// any number of threads, and db takes no serial pass. Per-chunk products ran 0.57-0.93x the
// time of Eigen's own threading, which shares one packed operand and synchronises per block
// (bench_ops BM_linear_*, docs/performance.md).
#pragma once
#include <algorithm>
#include <vector>

#include "seqswap/backend/host.hpp"
#include "seqswap/ops/panel_gemm.hpp"

namespace seqswap::ops {

// x (rows, in), w (out, in), b (out) or null -> y (rows, out)
template <class T>
void linear_forward(const T* x, index_t rows, index_t in, const T* w, const T* b, index_t out,
                    T* y) {
  thread_local std::vector<T> packed;
  const PanelB<T> wt = pack_panels(w, in, out, index_t(1), in, packed);  // Wᵀ (in × out)
  host::for_row_chunks(rows, [&](index_t r0, index_t r1) {
    panel_gemm<false>({.m = r1 - r0, .w = out, .k = in, .a_row = in, .ldc = out}, x + r0 * in, wt, b,
                      y + r0 * out);
  });
}

// Backward of y = x Wᵀ + b.
// dy (rows, out); dx (rows, in) ASSIGNED if non-null; dw (out, in), db (out) ACCUMULATED.
template <class T>
void linear_backward(const T* x, index_t rows, index_t in, const T* w, index_t out, const T* dy,
                     T* dx, T* dw, T* db) {
  if (dx) {  // dx = dy W
    thread_local std::vector<T> packed;
    const PanelB<T> wp = pack_panels(w, out, in, in, index_t(1), packed);  // W (out × in)
    host::for_row_chunks(rows, [&](index_t r0, index_t r1) {
      panel_gemm<false>({.m = r1 - r0, .w = in, .k = out, .a_row = out, .ldc = in}, dy + r0 * out, wp,
                        static_cast<const T*>(nullptr), dx + r0 * in);
    });
  }
  // dW += dyᵀ x and db += Σ_rows dy, per fixed chunk of rows (host::chunked_row_sum).
  const auto weight_part = [&](index_t r0, index_t r1, T* o) {
    host::CMatMap<T> dY(dy + r0 * out, r1 - r0, out);
    host::MatMap<T>(o, out, in).noalias() = dY.transpose() * host::CMatMap<T>(x + r0 * in, r1 - r0, in);
  };
  // Row by row in a plain loop: an Eigen colwise sum's order depends on the alignment of its
  // destination (peeled columns are summed another way), and the partials' buffer moves.
  const auto bias_part = [&](index_t r0, index_t r1, T* o) {
    std::fill(o, o + out, T(0));
    for (index_t r = r0; r < r1; ++r) {
      const T* d = dy + r * out;
      for (index_t j = 0; j < out; ++j) o[j] += d[j];
    }
  };
  const index_t wlen = dw ? out * in : 0;
  if (!dw && !db) return;
  host::chunked_row_sum<T>(
      rows, wlen + (db ? out : 0),
      [&](index_t r0, index_t r1, T* o) {
        if (dw) weight_part(r0, r1, o);
        if (db) bias_part(r0, r1, o + wlen);
      },
      [&](const T* p) {
        if (dw) host::MatMap<T>(dw, out, in) += host::CMatMap<T>(p, out, in);
        if (db) host::VecMap<T>(db, out) += host::CVecMap<T>(p + wlen, out);
      });
}

}  // namespace seqswap::ops
