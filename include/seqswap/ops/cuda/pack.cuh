// Halting's packing on the GPU: gather the kept token rows of a full batch into a packed batch,
// and scatter packed rows back to their places (model/halting.hpp does both on the host with
// the same index list: packed row r is full row idx[r]). One thread per (packed row, column):
// consecutive threads copy consecutive columns of a row (coalesced). Every pointer is a device
// pointer; idx holds `rows` row numbers, each < the full batch's row count (the host builds it).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "seqswap/backend/cuda.hpp"

namespace seqswap::ops::cuda {

namespace detail {
template <class T>
__global__ void gather_rows_kernel(const T* full, const std::int64_t* idx, long long rows, long long D, T* packed) {
  const long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= rows * D) return;
  const long long r = k / D, j = k % D;
  packed[k] = full[idx[r] * D + j];
}
template <class T>
__global__ void scatter_rows_kernel(const T* packed, const std::int64_t* idx, long long rows, long long D, T* full) {
  const long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= rows * D) return;
  const long long r = k / D, j = k % D;
  full[idx[r] * D + j] = packed[k];
}
}  // namespace detail

// packed (rows, D) <- full rows idx[0..rows).
template <class T>
void gather_rows(const T* full, const std::int64_t* idx, long long rows, long long D, T* packed, cudaStream_t s = nullptr) {
  if (rows * D == 0) return;
  detail::gather_rows_kernel<T><<<seqswap::cuda::blocks_for(rows * D, 256), 256, 0, s>>>(full, idx, rows, D, packed);
  SEQSWAP_CUDA_LAUNCHED("gather_rows_kernel");
}
// full rows idx[0..rows) <- packed (rows, D); the other rows of full are left as they are.
template <class T>
void scatter_rows(const T* packed, const std::int64_t* idx, long long rows, long long D, T* full, cudaStream_t s = nullptr) {
  if (rows * D == 0) return;
  detail::scatter_rows_kernel<T><<<seqswap::cuda::blocks_for(rows * D, 256), 256, 0, s>>>(packed, idx, rows, D, full);
  SEQSWAP_CUDA_LAUNCHED("scatter_rows_kernel");
}

}  // namespace seqswap::ops::cuda
