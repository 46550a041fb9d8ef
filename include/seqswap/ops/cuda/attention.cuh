// Masked softmax attention on the GPU, streamed: the row functions of ops/flash_attention.hpp
// (online softmax, scores never stored, backward recomputing them from each row's maximum and
// normaliser) run one thread per (token row, head). Every policy (dense, top-k, threshold),
// ragged offsets and keep-masks, as on the host; the host executor flash::forward_host /
// backward_host is the reference (tests/cuda/test_cuda_attention.cu).
//
// Status: a first, correctness-first mapping. The keys are read from global memory by every
// thread of a sequence (through L1/L2), not tiled through shared memory, and no tensor cores are
// used: it is not expected to reach the issue's speed target (1.5× of PyTorch SDPA); tiling the
// keys of a (sequence, head, 64-query block) through shared memory with the same row state is
// the next step once it has run on a GPU. The backward takes two kernels with no atomics: one
// thread per query row for dQ, one per key row for dK and dV (deterministic).
#pragma once
#include <cuda_runtime.h>

#include "seqswap/backend/cuda.hpp"
#include "seqswap/core/error.hpp"
#include "seqswap/ops/flash_attention.hpp"

namespace seqswap::ops::cuda {

namespace detail {
constexpr int kAttnThreads = 128;

template <class T>
__global__ void flash_forward_kernel(flash::Problem<T> p, T* pre, flash::RowStats<T>* stats) {
  const flash::idx rows = p.offsets[p.batch];
  const flash::idx k = flash::idx(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= rows * p.heads) return;
  const flash::idx t = k / p.heads, h = k % p.heads, b = flash::sequence_of(p.offsets, p.batch, t);
  const flash::Seq<T> sq = flash::sequence(p, b, h);
  flash::forward_row(p, sq, t - p.offsets[b], pre + t * p.dim + h * sq.d, stats[k]);
}

template <class T>
__global__ void flash_delta_dq_kernel(flash::Problem<T> p, const flash::RowStats<T>* stats, const T* pre,
                                      const T* dpre, T* delta, T* dqkv) {
  const flash::idx rows = p.offsets[p.batch];
  const flash::idx k = flash::idx(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= rows * p.heads) return;
  const flash::idx t = k / p.heads, h = k % p.heads, b = flash::sequence_of(p.offsets, p.batch, t);
  const flash::Seq<T> sq = flash::sequence(p, b, h);
  const T dl = flash::row_delta(dpre + t * p.dim + h * sq.d, pre + t * p.dim + h * sq.d, sq.d);
  delta[k] = dl;
  flash::dq_row(sq, stats[k], t - p.offsets[b], dpre + t * p.dim + h * sq.d, dl, dqkv + t * 3 * p.dim + h * sq.d);
}

// After the dq kernel (it needs every row's delta).
template <class T>
__global__ void flash_dkv_kernel(flash::Problem<T> p, const flash::RowStats<T>* stats, const T* dpre,
                                 const T* delta, T* dqkv) {
  const flash::idx rows = p.offsets[p.batch];
  const flash::idx k = flash::idx(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= rows * p.heads) return;
  const flash::idx t = k / p.heads, h = k % p.heads, b = flash::sequence_of(p.offsets, p.batch, t);
  const flash::Seq<T> sq = flash::sequence(p, b, h);
  const flash::idx t0 = p.offsets[b], H = p.heads, D = p.dim, d = sq.d;
  const auto dout = [&](flash::idx i) { return dpre + (t0 + i) * D + h * d; };
  const auto st = [&](flash::idx i) -> const flash::RowStats<T>& { return stats[(t0 + i) * H + h]; };
  const auto dl = [&](flash::idx i) { return delta[(t0 + i) * H + h]; };
  T* row = dqkv + t * 3 * D;
  flash::dkv_row(sq, t - t0, dout, st, dl, row + D + h * d, row + 2 * D + h * d);
}

}  // namespace detail

// pre (rows, D) and stats (rows · heads) from p (device pointers; `rows` = offsets[batch], read
// by the caller on the host, sizes the launch).
template <class T>
void flash_attention_forward(const flash::Problem<T>& p, flash::idx rows, T* pre, flash::RowStats<T>* stats,
                             cudaStream_t s = nullptr) {
  const char* why = flash::unsupported(p);
  check(*why == '\0', "flash_attention_forward: ", why, " (width ", p.dim, ", heads ", p.heads, ")");
  const flash::idx work = rows * p.heads;
  if (work == 0) return;
  detail::flash_forward_kernel<T><<<seqswap::cuda::blocks_for(work, detail::kAttnThreads), detail::kAttnThreads, 0, s>>>(p, pre, stats);
  SEQSWAP_CUDA_LAUNCHED("flash_forward_kernel");
}

// dqkv (rows, 3D) assigned; delta (rows · heads) device scratch.
template <class T>
void flash_attention_backward(const flash::Problem<T>& p, flash::idx rows, const flash::RowStats<T>* stats,
                              const T* pre, const T* dpre, T* delta, T* dqkv, cudaStream_t s = nullptr) {
  const char* why = flash::unsupported(p);
  check(*why == '\0', "flash_attention_backward: ", why, " (width ", p.dim, ", heads ", p.heads, ")");
  const flash::idx work = rows * p.heads;
  if (work == 0) return;
  detail::flash_delta_dq_kernel<T><<<seqswap::cuda::blocks_for(work, detail::kAttnThreads), detail::kAttnThreads, 0, s>>>(p, stats, pre, dpre,
                                                                                              delta, dqkv);
  SEQSWAP_CUDA_LAUNCHED("flash_delta_dq_kernel");
  detail::flash_dkv_kernel<T><<<seqswap::cuda::blocks_for(work, detail::kAttnThreads), detail::kAttnThreads, 0, s>>>(p, stats, dpre, delta, dqkv);
  SEQSWAP_CUDA_LAUNCHED("flash_dkv_kernel");
}

}  // namespace seqswap::ops::cuda
