// Masked softmax attention on the GPU, tiled (FlashAttention's structure on CUDA cores): the
// tile functions of ops/flash_attention.hpp (online softmax, scores never stored, the backward
// recomputing them from each row's maximum and normaliser) run one thread per row of a block of
// flash::kDeviceTiles.rows rows of one (sequence, head); the block copies the other side of the
// sequence into shared memory a tile at a time (keys and values for the forward and dQ; queries,
// output gradients, statistics and deltas for dK and dV) and every thread reads it there. Every
// policy (dense, top-k, threshold), ragged offsets and keep-masks, as on the host; the host
// executor flash::forward_host / backward_host runs the same blocks and tiles and is the
// reference (tests/cuda/test_cuda_attention.cu).
//
// Status: correct, and slower than it should be. On an H200 (2026-12-04) test_cuda_attention and
// test_cuda_vit pass; the forward runs at 6-10 TFLOP/s, 2.6-4.2x the time of PyTorch's SDPA, and
// dQ at width 64 is the slowest kernel (docs/performance.md, "On a GPU"): it reads each thread's
// dO_i row through L1, as dK/dV read K_j and V_j before they were staged in shared memory. The
// float kernels are compiled for head widths 16, 32 and 64 (by_head_width: a row's accumulators
// and query in registers); other widths run the general ones (accumulators in local memory). The products run on CUDA
// cores in fp32, and the top-k search and the threshold's normaliser read the keys in place
// (only the accumulating pass is tiled): warp-level (tensor-core) products of a 64-query block
// against a key tile are the next step, with these kernels as their reference. The backward
// takes two kernels and no atomics: one for dQ (query blocks), one for dK and dV (key blocks),
// deterministic.
#pragma once
#include <cuda_runtime.h>

#include <type_traits>

#include "seqswap/backend/cuda.hpp"
#include "seqswap/core/error.hpp"
#include "seqswap/ops/flash_attention.hpp"

namespace seqswap::ops::cuda {

namespace detail {
constexpr int kAttnRows = int(flash::kDeviceTiles.rows);  // threads per block
constexpr int kAttnTile = int(flash::kDeviceTiles.tile);

// This thread's row of the block: the (sequence, head), the sequence's first global row, the
// row's index in the sequence (r) and whether it exists (the last block of a sequence is short;
// its extra threads still share the tile copies). Thread 0 finds the block's (sequence, first
// row) and shares it; false: the block has no work (the grid is an upper bound).
template <class T>
struct BlockRow {
  flash::Seq<T> sq;
  flash::idx h, t0, r;
  bool row;
};
template <class T>
__device__ bool block_row(const flash::Problem<T>& p, BlockRow<T>& w) {
  __shared__ flash::idx sb, sr0;
  if (threadIdx.x == 0) {
    if (!flash::locate_block(p.offsets, p.batch, flash::idx(kAttnRows), flash::idx(blockIdx.x), sb, sr0)) sb = -1;
  }
  __syncthreads();
  const flash::idx b = sb;
  if (b < 0) return false;
  w.h = blockIdx.y;
  w.sq = flash::sequence(p, b, w.h);
  w.t0 = p.offsets[b];
  w.r = sr0 + threadIdx.x;
  w.row = w.r < w.sq.n;
  return true;
}

// The block walks the sequence's n rows of the other side a tile at a time: load(j0, len) copies
// the tile (every thread a share), use(j0, len) reads it; the barriers keep a tile in place
// until every thread is done with it.
template <class Load, class Use>
__device__ void walk_tiles(flash::idx n, Load load, Use use) {
  for (flash::idx j0 = 0; j0 < n; j0 += kAttnTile) {
    const flash::idx len = n - j0 < kAttnTile ? n - j0 : kAttnTile;
    __syncthreads();  // the previous tile is consumed
    load(j0, len);
    __syncthreads();
    use(j0, len);
  }
}

// Dynamic shared memory, aligned for any T.
template <class T>
__device__ T* shared_tile() {
  extern __shared__ __align__(16) unsigned char attn_smem[];
  return reinterpret_cast<T*>(attn_smem);
}

// Shared memory of the forward and dQ kernels (keys, values, keep flags) and of the dK, dV
// kernel (queries, output gradients, statistics, deltas, keep flags), for head width d; the
// dK, dV kernel at a fixed width DH also holds its block's key and value rows after those
// (key_rows: 2 · kAttnRows rows of DH + 1 values, from a 16-byte boundary).
template <class T>
std::size_t key_tile_bytes(flash::idx d) {
  return std::size_t(2 * kAttnTile * d) * sizeof(T) + kAttnTile;
}
template <class T>
__host__ __device__ std::size_t query_tile_bytes(flash::idx d) {
  return std::size_t(2 * kAttnTile * d) * sizeof(T) + kAttnTile * (sizeof(flash::RowStats<T>) + sizeof(T) + 1);
}
template <class T>
__host__ __device__ std::size_t key_rows_offset(flash::idx d) {
  return (query_tile_bytes<T>(d) + 15) / 16 * 16;
}
template <class T, int DH>
std::size_t dkv_bytes(flash::idx d) {
  return DH > 0 ? key_rows_offset<T>(d) + std::size_t(2 * kAttnRows * (DH + 1)) * sizeof(T) : query_tile_bytes<T>(d);
}
template <class T>
__device__ T* key_rows(flash::idx d) {
  extern __shared__ __align__(16) unsigned char attn_smem[];
  return reinterpret_cast<T*>(attn_smem + key_rows_offset<T>(d));
}

// A row of DH values in registers (DH > 0: the head width is fixed at compile time), or the
// row where it lies (DH = 0).
template <class T, int DH>
struct RegRow {
  T v[DH > 0 ? DH : 1];
  __device__ const T* hold(const T* src, bool row) {
    if constexpr (DH == 0) {
      return src;
    } else {
      if (row)
        for (int e = 0; e < DH; ++e) v[e] = src[e];
      return v;
    }
  }
};

// DH: the head width when fixed at compile time (16, 32, 64), else 0 (flash::width_or).
template <class T, int DH>
__global__ void __launch_bounds__(kAttnRows) flash_forward_kernel(flash::Problem<T> p, T* pre, flash::RowStats<T>* stats) {
  BlockRow<T> w;
  if (!block_row(p, w)) return;
  const flash::Seq<T>& sq = w.sq;
  const flash::idx H = p.heads, h = w.h, t0 = w.t0, d = flash::width_or<DH>(sq.d), i = w.r;
  const bool row = w.row;
  T* k = shared_tile<T>();
  T* v = k + kAttnTile * d;
  auto* kp = reinterpret_cast<std::uint8_t*>(v + kAttnTile * d);
  flash::RowStats<T> st;
  flash::RowAcc<T> acc;
  RegRow<T, DH> qr;
  const T* q = qr.hold(sq.q(i), row);
  const bool live = row && flash::forward_begin<DH>(p, sq, i, st, acc);
  walk_tiles(
      sq.n, [&](flash::idx j0, flash::idx len) { flash::load_key_tile(sq, j0, len, k, v, kp, flash::idx(threadIdx.x), flash::idx(kAttnRows)); },
      [&](flash::idx, flash::idx len) {
        if (live) flash::forward_tile<DH>(sq, st, q, k, v, kp, len, acc);
      });
  if (!row) return;
  flash::forward_end<DH>(sq, live, acc, st, pre + (t0 + i) * p.dim + h * d);
  stats[(t0 + i) * H + h] = st;
}

// delta of every (row, head) first: the dK, dV kernel needs all of a sequence's.
template <class T>
__global__ void flash_delta_kernel(flash::idx work, flash::idx D, flash::idx H, const T* pre, const T* dpre, T* delta) {
  const flash::idx k = flash::idx(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= work) return;
  const flash::idx t = k / H, h = k % H, d = D / H;
  delta[k] = flash::row_delta(dpre + t * D + h * d, pre + t * D + h * d, d);
}

template <class T, int DH>
__global__ void __launch_bounds__(kAttnRows) flash_dq_kernel(flash::Problem<T> p, const flash::RowStats<T>* stats,
                                                             const T* dpre, const T* delta, T* dqkv) {
  BlockRow<T> w;
  if (!block_row(p, w)) return;
  const flash::Seq<T>& sq = w.sq;
  const flash::idx H = p.heads, D = p.dim, h = w.h, t0 = w.t0, d = flash::width_or<DH>(sq.d), i = w.r;
  const bool row = w.row;
  T* k = shared_tile<T>();
  T* v = k + kAttnTile * d;
  auto* kp = reinterpret_cast<std::uint8_t*>(v + kAttnTile * d);
  T dq[DH > 0 ? DH : flash::kMaxHeadDim];
  for (flash::idx e = 0; e < d; ++e) dq[e] = T(0);
  flash::RowStats<T> st{};
  if (row) st = stats[(t0 + i) * H + h];
  const bool live = row && sq.kept(i) && st.l != T(0);
  const T dl = live ? delta[(t0 + i) * H + h] : T(0);
  RegRow<T, DH> qr;
  RegRow<T, (DH <= 32 ? DH : 0)> dor;  // at 64 dq, Q_i and dO_i would spill (ptxas -v): dO_i via L1
  const T* q = qr.hold(sq.q(i), row);
  const T* dout = dor.hold(dpre + (t0 + i) * D + h * d, row);
  walk_tiles(
      sq.n, [&](flash::idx j0, flash::idx len) { flash::load_key_tile(sq, j0, len, k, v, kp, flash::idx(threadIdx.x), flash::idx(kAttnRows)); },
      [&](flash::idx j0, flash::idx len) {
        if (live) flash::dq_tile<DH>(sq, st, i, q, dout, dl, k, v, kp, j0, len, dq);
      });
  if (!row) return;
  T* out = dqkv + (t0 + i) * 3 * D + h * d;
  for (flash::idx e = 0; e < d; ++e) out[e] = dq[e];
}

template <class T, int DH>
__global__ void __launch_bounds__(kAttnRows) flash_dkv_kernel(flash::Problem<T> p, const flash::RowStats<T>* stats,
                                                              const T* dpre, const T* delta, T* dqkv) {
  BlockRow<T> w;
  if (!block_row(p, w)) return;
  const flash::Seq<T>& sq = w.sq;
  const flash::idx H = p.heads, D = p.dim, h = w.h, t0 = w.t0, d = flash::width_or<DH>(sq.d), j = w.r;
  const bool row = w.row;
  // Shared: queries and output gradients (tile × d each), statistics, deltas, keep flags.
  T* q = shared_tile<T>();
  T* dout = q + kAttnTile * d;
  auto* st = reinterpret_cast<flash::RowStats<T>*>(dout + kAttnTile * d);
  T* dl = reinterpret_cast<T*>(st + kAttnTile);
  auto* kp = reinterpret_cast<std::uint8_t*>(dl + kAttnTile);
  T dk[DH > 0 ? DH : flash::kMaxHeadDim], dv[DH > 0 ? DH : flash::kMaxHeadDim];
  for (flash::idx e = 0; e < d; ++e) dk[e] = dv[e] = T(0);
  const bool live = row && sq.kept(j);
  // K_j and V_j, read for every query of every tile: at a fixed width, the block's key and value
  // rows in shared memory (rows padded to DH + 1 values, so that the threads' reads of their own
  // rows fall in different banks), copied once, coalesced; otherwise in place (each thread its own
  // row through L1: a warp's load touches 32 cache lines).
  const T* kj = sq.k(j);
  const T* vj = sq.v(j);
  if constexpr (DH > 0) {
    T* ks = key_rows<T>(d);
    T* vs = ks + kAttnRows * (DH + 1);
    const flash::idx r0 = j - flash::idx(threadIdx.x), rows = sq.n - r0 < kAttnRows ? sq.n - r0 : kAttnRows;
    for (flash::idx x = threadIdx.x; x < rows * DH; x += kAttnRows) {
      const flash::idx r = x / DH, e = x % DH;
      ks[r * (DH + 1) + e] = sq.k(r0 + r)[e];
      vs[r * (DH + 1) + e] = sq.v(r0 + r)[e];
    }
    kj = ks + threadIdx.x * (DH + 1);
    vj = vs + threadIdx.x * (DH + 1);
  }
  walk_tiles(
      sq.n,
      [&](flash::idx i0, flash::idx len) {
        flash::load_query_tile(sq, i0, len, dpre + t0 * D + h * d, D, stats + t0 * H + h, delta + t0 * H + h, H, q,
                               dout, st, dl, kp, flash::idx(threadIdx.x), flash::idx(kAttnRows));
      },
      [&](flash::idx i0, flash::idx len) {
        if (live) flash::dkv_tile<DH>(sq, j, kj, vj, q, dout, st, dl, kp, i0, len, dk, dv);
      });
  if (!row) return;
  T* out = dqkv + (t0 + j) * 3 * D + h * d;
  for (flash::idx e = 0; e < d; ++e) {
    out[D + e] = dk[e];
    out[2 * D + e] = dv[e];
  }
}

// Above 48 KB (double at head width 128) a kernel must opt in to more dynamic shared memory.
template <class Kernel>
void allow_shared(Kernel kernel, std::size_t bytes) {
  if (bytes > 48 * 1024)
    SEQSWAP_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

inline dim3 attention_grid(flash::idx rows, flash::idx batch, flash::idx heads) {
  return dim3(static_cast<unsigned>(flash::max_blocks(rows, batch, kAttnRows)), static_cast<unsigned>(heads));
}

// Calls launch(std::integral_constant<int, DH>{}) with DH = d for the widths the float kernels
// specialise (16, 32, 64: the ViTs here use 16, DeiT 64), else DH = 0 (any width up to 128, and
// every width in double).
template <class T, class Launch>
void by_head_width(flash::idx d, Launch launch) {
  if constexpr (std::is_same_v<T, float>) {
    if (d == 16) return launch(std::integral_constant<int, 16>{});
    if (d == 32) return launch(std::integral_constant<int, 32>{});
    if (d == 64) return launch(std::integral_constant<int, 64>{});
  }
  launch(std::integral_constant<int, 0>{});
}
}  // namespace detail

// pre (rows, D) and stats (rows · heads) from p (device pointers; `rows` = offsets[batch], read
// by the caller on the host, sizes the launch).
template <class T>
void flash_attention_forward(const flash::Problem<T>& p, flash::idx rows, T* pre, flash::RowStats<T>* stats,
                             cudaStream_t s = nullptr) {
  const char* why = flash::unsupported(p);
  check(*why == '\0', "flash_attention_forward: ", why, " (width ", p.dim, ", heads ", p.heads, ")");
  if (rows * p.heads == 0) return;
  const flash::idx d = p.dim / p.heads;
  detail::by_head_width<T>(d, [&](auto width) {
    constexpr int DH = decltype(width)::value;
    detail::allow_shared(detail::flash_forward_kernel<T, DH>, detail::key_tile_bytes<T>(d));
    detail::flash_forward_kernel<T, DH><<<detail::attention_grid(rows, p.batch, p.heads), detail::kAttnRows,
                                          detail::key_tile_bytes<T>(d), s>>>(p, pre, stats);
    SEQSWAP_CUDA_LAUNCHED("flash_forward_kernel");
  });
}

// dqkv (rows, 3D) assigned; delta (rows · heads) device scratch.
template <class T>
void flash_attention_backward(const flash::Problem<T>& p, flash::idx rows, const flash::RowStats<T>* stats,
                              const T* pre, const T* dpre, T* delta, T* dqkv, cudaStream_t s = nullptr) {
  const char* why = flash::unsupported(p);
  check(*why == '\0', "flash_attention_backward: ", why, " (width ", p.dim, ", heads ", p.heads, ")");
  const flash::idx work = rows * p.heads;
  if (work == 0) return;
  const flash::idx d = p.dim / p.heads;
  constexpr int kThreads = 256;
  detail::flash_delta_kernel<T><<<seqswap::cuda::blocks_for(work, kThreads), kThreads, 0, s>>>(work, p.dim, p.heads,
                                                                                              pre, dpre, delta);
  SEQSWAP_CUDA_LAUNCHED("flash_delta_kernel");
  const dim3 grid = detail::attention_grid(rows, p.batch, p.heads);
  detail::by_head_width<T>(d, [&](auto width) {
    constexpr int DH = decltype(width)::value;
    detail::allow_shared(detail::flash_dq_kernel<T, DH>, detail::key_tile_bytes<T>(d));
    detail::allow_shared(detail::flash_dkv_kernel<T, DH>, detail::dkv_bytes<T, DH>(d));
    detail::flash_dq_kernel<T, DH><<<grid, detail::kAttnRows, detail::key_tile_bytes<T>(d), s>>>(p, stats, dpre, delta,
                                                                                                dqkv);
    SEQSWAP_CUDA_LAUNCHED("flash_dq_kernel");
    detail::flash_dkv_kernel<T, DH><<<grid, detail::kAttnRows, detail::dkv_bytes<T, DH>(d), s>>>(p, stats, dpre, delta,
                                                                                               dqkv);
    SEQSWAP_CUDA_LAUNCHED("flash_dkv_kernel");
  });
}

}  // namespace seqswap::ops::cuda
