// Dense affine maps over token rows on the host: y = x Wᵀ + b with W stored [out, in] (timm).
#pragma once
#include "seqswap/backend/host.hpp"

namespace seqswap::ops {

// x (rows, in), w (out, in), b (out) or null -> y (rows, out)
template <class T>
void linear_forward(const T* x, index_t rows, index_t in, const T* w, const T* b, index_t out,
                    T* y) {
  host::CMatMap<T> X(x, rows, in);
  host::CMatMap<T> W(w, out, in);
  host::MatMap<T> Y(y, rows, out);
  if (b) {  // the bias first, the product accumulated onto it: one pass over y fewer than y = xWᵀ; y += b
    Y.rowwise() = host::CVecMap<T>(b, out);
    Y.noalias() += X * W.transpose();
  } else {
    Y.noalias() = X * W.transpose();
  }
}

// Backward of y = x Wᵀ + b.
// dy (rows, out); dx (rows, in) ASSIGNED if non-null; dw (out, in), db (out) ACCUMULATED.
template <class T>
void linear_backward(const T* x, index_t rows, index_t in, const T* w, index_t out, const T* dy,
                     T* dx, T* dw, T* db) {
  host::CMatMap<T> X(x, rows, in);
  host::CMatMap<T> W(w, out, in);
  host::CMatMap<T> dY(dy, rows, out);
  if (dx) {
    host::MatMap<T> dX(dx, rows, in);
    dX.noalias() = dY * W;  // dx = dy W
  }
  if (dw) {
    host::MatMap<T> dW(dw, out, in);
    dW.noalias() += dY.transpose() * X;  // dW += dyᵀ x
  }
  if (db) host::VecMap<T>(db, out) += dY.colwise().sum();
}

}  // namespace seqswap::ops
