// Host backend: Eigen maps over arena and workspace memory (row-major), OpenMP helpers.
#pragma once
#include <Eigen/Core>

#include "seqswap/core/backend.hpp"
#include "seqswap/core/tokens.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace seqswap::host {

template <class T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using RowVec = Eigen::Matrix<T, 1, Eigen::Dynamic>;

// (rows, cols) row-major, contiguous rows.
template <class T>
using MatMap = Eigen::Map<RowMat<T>>;
template <class T>
using CMatMap = Eigen::Map<const RowMat<T>>;
// (rows, cols) row-major with a row stride (e.g. one head's columns inside a (N, 3D) qkv).
template <class T>
using StridedMap = Eigen::Map<RowMat<T>, 0, Eigen::OuterStride<>>;
template <class T>
using CStridedMap = Eigen::Map<const RowMat<T>, 0, Eigen::OuterStride<>>;
template <class T>
using VecMap = Eigen::Map<RowVec<T>>;
template <class T>
using CVecMap = Eigen::Map<const RowVec<T>>;
// (n) elementwise views: Eigen arrays, whose exp / logistic / tanh are vectorised. N fixes the
// length at compile time (a small state held in registers).
template <class T, int N = Eigen::Dynamic>
using ArrMap = Eigen::Map<Eigen::Array<T, 1, N>>;
template <class T, int N = Eigen::Dynamic>
using CArrMap = Eigen::Map<const Eigen::Array<T, 1, N>>;

inline int max_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}
inline int thread_id() {
#if defined(_OPENMP)
  return omp_get_thread_num();
#else
  return 0;
#endif
}

}  // namespace seqswap::host
