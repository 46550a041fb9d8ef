// The linear-recurrence scan h_t = a_t ⊙ h_{t-1} + b_t on the GPU, over a ragged token batch
// (T_total, C) row-major with offsets (B+1), forward or reverse, and its backward. The host
// reference (ops/scan.hpp) is what it must match (tests/cuda/test_cuda_scan.cu).
//
// One thread block owns one (sequence, 32-channel group) and walks the sequence in tiles of
// 128 steps, carrying each channel's state from tile to tile (the prefix of the next tile), so
// a, b are read once and h written once. A tile is loaded row by row (32 consecutive channels:
// coalesced) into shared memory; each warp then scans 4 channels over the tile: every lane
// composes its 4 consecutive steps, cub::WarpScan scans the (A, B) pairs across the 32 lanes
// (the pair (A1, B1) then (A2, B2) is (A1 A2, A2 B1 + B2)), the carried state enters through
// the exclusive prefix, and the results go back through shared memory to coalesced stores.
#pragma once
#include <cub/warp/warp_scan.cuh>

#include "seqswap/backend/cuda.hpp"
#include "seqswap/core/tokens.hpp"
#include "seqswap/core/backend.hpp"
#include "seqswap/ops/scan_options.hpp"

namespace seqswap::ops::cuda {

namespace detail {
struct Affine {  // x -> A x + B
  float A, B;
};
struct Compose {  // earlier then later
  __device__ Affine operator()(const Affine& e, const Affine& l) const { return {e.A * l.A, l.A * e.B + l.B}; }
};

constexpr int kTile = 128;   // steps per tile
constexpr int kCh = 32;      // channels per block
constexpr int kWarps = 8;    // 256 threads
constexpr int kPerLane = kTile / 32;
constexpr int kChPerWarp = kCh / kWarps;

// Kernels are templates so that including this header in several translation units links
// (vague linkage, no ODR clash; tests/cuda/link_*.cu check it).
// grid (ceil(C / 32), batch), block 256.
template <class Unused = void>
__global__ void linear_scan_kernel(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ h,
                                   const index_t* __restrict__ offsets, int C, bool reverse) {
  __shared__ float sa[kTile][kCh + 1];
  __shared__ float sb[kTile][kCh + 1];
  __shared__ typename cub::WarpScan<Affine>::TempStorage scan_tmp[kWarps];
  const int s = blockIdx.y, c0 = blockIdx.x * kCh;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const index_t t0 = offsets[s], n = offsets[s + 1] - t0;
  float carry[kChPerWarp];
  for (int j = 0; j < kChPerWarp; ++j) carry[j] = 0.f;
  for (index_t k0 = 0; k0 < n; k0 += kTile) {
    // Load the tile: row r = step k0 + r in scan order; identity (1, 0) past the end.
    for (int r = warp; r < kTile; r += kWarps) {
      const index_t k = k0 + r;
      const int c = c0 + lane;
      float av = 1.f, bv = 0.f;
      if (k < n && c < C) {
        const index_t t = t0 + (reverse ? n - 1 - k : k);
        av = a[t * C + c];
        bv = b[t * C + c];
      }
      sa[r][lane] = av;
      sb[r][lane] = bv;
    }
    __syncthreads();
    for (int j = 0; j < kChPerWarp; ++j) {
      const int ch = warp * kChPerWarp + j;
      Affine mine{1.f, 0.f};
      for (int i = 0; i < kPerLane; ++i) {
        const int r = lane * kPerLane + i;
        mine = Compose{}(mine, Affine{sa[r][ch], sb[r][ch]});
      }
      Affine incl;
      cub::WarpScan<Affine>(scan_tmp[warp]).InclusiveScan(mine, incl, Compose{});
      Affine excl{__shfl_up_sync(0xffffffffu, incl.A, 1), __shfl_up_sync(0xffffffffu, incl.B, 1)};
      if (lane == 0) excl = {1.f, 0.f};
      float state = excl.A * carry[j] + excl.B;  // entering this lane's first step
      for (int i = 0; i < kPerLane; ++i) {
        const int r = lane * kPerLane + i;
        state = sa[r][ch] * state + sb[r][ch];
        sb[r][ch] = state;
      }
      const Affine total{__shfl_sync(0xffffffffu, incl.A, 31), __shfl_sync(0xffffffffu, incl.B, 31)};
      carry[j] = total.A * carry[j] + total.B;
      __syncwarp();
    }
    __syncthreads();
    for (int r = warp; r < kTile; r += kWarps) {
      const index_t k = k0 + r;
      const int c = c0 + lane;
      if (k < n && c < C) h[(t0 + (reverse ? n - 1 - k : k)) * C + c] = sb[r][lane];
    }
    __syncthreads();
  }
}

// da[t] = a[next(t)] (0 at the sequence end), next in forward scan order.
template <class Unused = void>
__global__ void shifted_decay_kernel(const float* __restrict__ a, float* __restrict__ da,
                                     const index_t* __restrict__ offsets, int C, bool reverse) {
  const int s = blockIdx.y;
  const index_t t0 = offsets[s], n = offsets[s + 1] - t0;
  const index_t total = n * C;
  for (index_t i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += index_t(gridDim.x) * blockDim.x) {
    const index_t k = i / C, c = i % C;  // k: position in scan order
    const index_t t = t0 + (reverse ? n - 1 - k : k);
    const index_t next = reverse ? t - 1 : t + 1;
    da[t * C + c] = (k + 1 < n) ? a[next * C + c] : 0.f;
  }
}

// da[t] = g[t] * h[prev(t)] (0 at the first step).
template <class Unused = void>
__global__ void decay_grad_kernel(const float* __restrict__ g, const float* __restrict__ h, float* __restrict__ da,
                                  const index_t* __restrict__ offsets, int C, bool reverse) {
  const int s = blockIdx.y;
  const index_t t0 = offsets[s], n = offsets[s + 1] - t0;
  const index_t total = n * C;
  for (index_t i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += index_t(gridDim.x) * blockDim.x) {
    const index_t k = i / C, c = i % C;
    const index_t t = t0 + (reverse ? n - 1 - k : k);
    const index_t prev = reverse ? t + 1 : t - 1;
    da[t * C + c] = k > 0 ? g[t * C + c] * h[prev * C + c] : 0.f;
  }
}
}  // namespace detail

// All pointers are device pointers; offsets (batch+1) on the device.
inline void linear_scan(const float* a, const float* b, float* h, const index_t* offsets, int batch, int C,
                        bool reverse, cudaStream_t stream = nullptr) {
  if (batch == 0 || C == 0) return;
  const dim3 grid((C + detail::kCh - 1) / detail::kCh, batch);
  detail::linear_scan_kernel<><<<grid, detail::kWarps * 32, 0, stream>>>(a, b, h, offsets, C, reverse);
  SEQSWAP_CUDA_LAUNCHED("linear_scan_kernel");
}

// Backward of linear_scan: from a, h (forward) and dh, ASSIGNS da and db (db = g, the gradient
// w.r.t. h flowing back through the recurrence). Same algebra as ops::linear_scan_backward.
inline void linear_scan_backward(const float* a, const float* h, const float* dh, float* da, float* db,
                                 const index_t* offsets, int batch, int C, bool reverse, cudaStream_t stream = nullptr) {
  if (batch == 0 || C == 0) return;
  const dim3 grid(64, batch);
  detail::shifted_decay_kernel<><<<grid, 256, 0, stream>>>(a, da, offsets, C, reverse);
  SEQSWAP_CUDA_LAUNCHED("shifted_decay_kernel");
  linear_scan(da, dh, db, offsets, batch, C, !reverse, stream);
  detail::decay_grad_kernel<><<<grid, 256, 0, stream>>>(db, h, da, offsets, C, reverse);
  SEQSWAP_CUDA_LAUNCHED("decay_grad_kernel");
}

}  // namespace seqswap::ops::cuda

namespace seqswap::ops {

// The backend::Cuda overloads of the scan ops (the backend::Host ones are in ops/scan.hpp): a
// mixer calling ops::linear_scan(B{}, ...) reaches the kernels above on the device backend.
// Device pointers throughout, offsets included; o.chunk and o.path are host tuning (ignored).
inline void linear_scan(backend::Cuda, const float* a, const float* b, float* h, const index_t* offsets, index_t batch,
                        index_t C, ScanOptions o = {}) {
  cuda::linear_scan(a, b, h, offsets, int(batch), int(C), o.reverse);
}
inline void linear_scan_backward(backend::Cuda, const float* a, const float* h, const float* dh, float* da, float* db,
                                 const index_t* offsets, index_t batch, index_t C, ScanOptions o = {}) {
  cuda::linear_scan_backward(a, h, dh, da, db, offsets, int(batch), int(C), o.reverse);
}

}  // namespace seqswap::ops
