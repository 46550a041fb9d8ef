// Sums over the rows of a row-major (rows, cols) array, per column, ACCUMULATED onto the
// outputs: the linear maps' bias gradient and layer norm's dgamma / dbeta (ops/cuda/gemm.cuh,
// ops/cuda/rows.cuh). One block of 32 × 32 threads per 32 columns: thread (c, g) sums rows g,
// g + 32, g + 64, ... of column c into four interleaved accumulators (four loads in flight;
// a warp reads 32 consecutive columns of one row), then the block adds its 32 partial sums per
// column in a fixed order. Deterministic (the same order on every run), but not the host's
// row-by-row order: results agree with the host's at float tolerance.
//
// The first device run (H200, 2026-12-04) found the one-thread-per-column loops these replace at
// 80% of the fmnist teacher's kernel time (benchmarks/gpu/profile.sh): 64 columns are 64 threads
// on a 132-multiprocessor chip, each walking 6400 rows.
#pragma once
#include <cuda_runtime.h>

#include "seqswap/backend/cuda.hpp"

namespace seqswap::ops::cuda::detail {

constexpr int kColTile = 32, kRowGroups = 32;

// Row r's contribution to each of the K column sums of column j: term(r, j, t) sets t[0..K)
// (a functor with a __device__ call operator).
template <class T, int K, class Term>
__global__ void column_sums_kernel(long long rows, long long cols, Term term, T* s0, T* s1) {
  const long long j = (long long)blockIdx.x * kColTile + threadIdx.x;
  T acc[4][K] = {};
  if (j < cols) {
    long long r = threadIdx.y;
    constexpr long long G = kRowGroups;
    for (; r + 3 * G < rows; r += 4 * G)
      for (int u = 0; u < 4; ++u) {
        T t[K];
        term(r + u * G, j, t);
        for (int k = 0; k < K; ++k) acc[u][k] += t[k];
      }
    for (; r < rows; r += G) {
      T t[K];
      term(r, j, t);
      for (int k = 0; k < K; ++k) acc[0][k] += t[k];
    }
  }
  __shared__ T part[K][kRowGroups][kColTile + 1];
  for (int k = 0; k < K; ++k) part[k][threadIdx.y][threadIdx.x] = (acc[0][k] + acc[1][k]) + (acc[2][k] + acc[3][k]);
  __syncthreads();
  if (threadIdx.y != 0 || j >= cols) return;
  T* outs[2] = {s0, s1};
  for (int k = 0; k < K; ++k) {
    T s = outs[k][j];
    for (int g = 0; g < kRowGroups; ++g) s += part[k][g][threadIdx.x];
    outs[k][j] = s;
  }
}

// out0[j] += Σ_r t0(r, j) (and out1[j] += Σ_r t1(r, j) with K = 2), on stream s.
template <class T, int K, class Term>
void column_sums(long long rows, long long cols, Term term, T* out0, T* out1, cudaStream_t s, const char* what) {
  static_assert(K == 1 || K == 2, "column_sums: one or two sums per column");
  if (rows == 0 || cols == 0) return;
  const dim3 block(kColTile, kRowGroups), grid(seqswap::cuda::blocks_for(cols, kColTile));
  column_sums_kernel<T, K><<<grid, block, 0, s>>>(rows, cols, term, out0, out1);
  seqswap::cuda::check_call(cudaGetLastError(), what, __FILE__, __LINE__);
}

}  // namespace seqswap::ops::cuda::detail
