// Host backend: Eigen maps over arena and workspace memory (row-major), OpenMP helpers.
#pragma once
#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <vector>

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
// This CPU's L1 data cache in bytes as Eigen's GEMM blocking reads it (CPUID on x86, Eigen's
// 32 KB default where it cannot ask): what block-size choices made per CPU key on.
inline index_t l1_data_bytes() {
  static const index_t bytes = static_cast<index_t>(Eigen::l1CacheSize());
  return bytes;
}
// Whether the caller runs inside an OpenMP parallel region (nested regions would serialise).
inline bool in_parallel() {
#if defined(_OPENMP)
  return omp_in_parallel() != 0;
#else
  return false;
#endif
}
// The chunk of a dynamically scheduled loop over `tasks` items (heads of ragged sequences):
// tasks / (32 · threads), at least 1. Loops of few, heavy items (a mixer's heads at batch 8)
// keep one per chunk, so that no thread idles at the end behind a chunk of several; the
// teacher's attention (512 heads per loop on 2 threads) takes 8 per chunk. Each dispatch takes
// a lock, and Debian's libomp 14 also formats three debug strings in it (vsnprintf, seen in
// perf and gdb): at one head per chunk the teacher's training step spent 1.1% of its samples
// printing them (docs/performance.md).
inline int dynamic_chunk(index_t tasks) {
  return static_cast<int>(std::max<index_t>(1, tasks / (32 * static_cast<index_t>(max_threads()))));
}
inline int thread_id() {
#if defined(_OPENMP)
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// The fixed partition of `rows` token rows: rows / 512 chunks, at least 1 and at most 8 (so 2,
// 4 or 8 threads get equal shares), of equal size rounded up to 8 rows. It depends on the row
// count only, never on the thread count, so what a row or a partial sum computes is the same
// on any number of threads (a row's bits in an Eigen product depend on where it falls in the
// product's panels: splitting rows by thread made one process and two shards differ).
struct RowChunks {
  index_t count = 1, size = 0;
};
inline RowChunks row_chunks(index_t rows) {
  const index_t count = std::clamp<index_t>(rows / 512, 1, 8);
  return {count, ((rows + count - 1) / count + 7) / 8 * 8};
}

// f(r0, r1) for every chunk [r0, r1) of row_chunks(rows), in parallel over the chunks (one
// after another inside an enclosing parallel region).
template <class F>
void for_row_chunks(index_t rows, F&& f) {
  const RowChunks ch = row_chunks(rows);
#pragma omp parallel for schedule(static) if (ch.count > 1 && !in_parallel())
  for (index_t c = 0; c < ch.count; ++c) {
    const index_t r0 = std::min(rows, c * ch.size), r1 = std::min(rows, r0 + ch.size);
    if (r1 > r0) f(r0, r1);
  }
}

// A sum over token rows, in parallel and deterministic: part(r0, r1, out) ASSIGNS the partial
// sum of the rows of one chunk of row_chunks(rows) to out (len values), and add(partial) folds
// each partial into the caller's sums in chunk order. The same bits on any number of threads.
template <class T, class Part, class Add>
void chunked_row_sum(index_t rows, index_t len, Part&& part, Add&& add) {
  const RowChunks ch = row_chunks(rows);
  thread_local std::vector<T> partial;
  partial.assign(static_cast<std::size_t>(ch.count * len), T(0));
  T* buf = partial.data();
  for_row_chunks(rows, [&](index_t r0, index_t r1) { part(r0, r1, buf + (r0 / ch.size) * len); });
  for (index_t c = 0; c < ch.count; ++c) add(static_cast<const T*>(buf + c * len));
}

}  // namespace seqswap::host
