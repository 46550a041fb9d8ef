// The selective SSM's scans on the GPU: the item functions of ops/ssm_rows.hpp (which the device
// emulation runs on the CPU too) as kernels. Forward: one thread per (sequence, channel), the
// channel's state in registers. Backward: one warp per (sequence, group of 32 channels), a lane
// per channel; each token's dB and dC are reduced over the warp's lanes with shuffles and
// written by lane 0 (no atomics), then the groups are added in order by ops::device. State
// sizes up to 16 run with 16 registers per state vector, larger ones (to 64) with 64.
// Every pointer is a device pointer.
#pragma once
#include <cuda_runtime.h>

#include "seqswap/backend/cuda.hpp"
#include "seqswap/core/error.hpp"
#include "seqswap/ops/ssm_rows.hpp"

namespace seqswap::ops::cuda {

namespace detail {
constexpr int kSsmThreads = 128;  // four warps per block

template <int kS, bool exact, class T>
__global__ void ssm_scan_forward_kernel(ssm::Scan<T> a, T* y, bool accumulate, T* ckpt) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= a.batch * a.E) return;
  ssm::scan_forward_item<kS, exact>(a, i / a.E, i % a.E, y, accumulate, ckpt);
}

// Lane 0 of the warp writes the group's sums of [dB, dC] of token t.
template <class T>
struct WarpSink {
  T* part;  // (groups, Tk, 2S)
  long long Tk, S, group;
  int lane;
  __device__ void operator()(long long t, const T* dB, const T* dC) const {
    T* out = part + (group * Tk + t) * 2 * S;
    for (long long j = 0; j < S; ++j) {
      T x = dB[j], z = dC[j];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
        x += __shfl_xor_sync(0xffffffffu, x, o);
        z += __shfl_xor_sync(0xffffffffu, z, o);
      }
      if (lane == 0) {
        out[j] = x;
        out[S + j] = z;
      }
    }
  }
};

template <int kS, bool exact, class T>
__global__ void ssm_scan_backward_kernel(ssm::Scan<T> a, ssm::ScanGrads<T> g, long long Tk) {
  static_assert(ssm::kGroup == 32, "one warp per channel group");
  const long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
  const int lane = int(threadIdx.x % 32);
  const long long groups = (a.E + 31) / 32, b = warp / groups, gi = warp % groups;
  if (b >= a.batch) return;  // whole warps only: b is the same on every lane
  const long long e = gi * 32 + lane;
  const bool active = e < a.E;
  ssm::scan_backward_item<kS, exact>(a, g, b, active ? e : a.E - 1, active,
                                     WarpSink<T>{g.part, Tk, a.S, gi, lane});
}

template <template <int, bool, class> class Launch, class T, class... Args>
void by_state_size(long long S, Args&&... args) {
  if (S == 16) Launch<16, true, T>::run(args...);
  else if (S < 16) Launch<16, false, T>::run(args...);
  else Launch<int(ssm::kDeviceMaxState), false, T>::run(args...);
}
template <int kS, bool exact, class T>
struct LaunchForward {
  static void run(const ssm::Scan<T>& a, T* y, bool accumulate, T* ckpt, cudaStream_t s) {
    const long long n = a.batch * a.E;
    ssm_scan_forward_kernel<kS, exact, T><<<seqswap::cuda::blocks_for(n, kSsmThreads), kSsmThreads, 0, s>>>(
        a, y, accumulate, ckpt);
    SEQSWAP_CUDA_LAUNCHED("ssm_scan_forward_kernel");
  }
};
template <int kS, bool exact, class T>
struct LaunchBackward {
  static void run(const ssm::Scan<T>& a, const ssm::ScanGrads<T>& g, long long Tk, cudaStream_t s) {
    const long long n = a.batch * ssm::groups(a.E) * 32;
    ssm_scan_backward_kernel<kS, exact, T><<<seqswap::cuda::blocks_for(n, kSsmThreads), kSsmThreads, 0, s>>>(a, g, Tk);
    SEQSWAP_CUDA_LAUNCHED("ssm_scan_backward_kernel");
  }
};
}  // namespace detail

// The scan of one direction; see ops/device.hpp for the contract.
template <class T>
void ssm_scan_forward(const ssm::Scan<T>& a, T* y, bool accumulate, T* ckpt, cudaStream_t s) {
  check(a.S > 0 && a.S <= ssm::kDeviceMaxState && a.chunk > 0 && a.chunk <= ssm::kDeviceChunk,
        "ssm_scan_forward: expected 1 <= state <= ", ssm::kDeviceMaxState, " and 1 <= chunk <= ", ssm::kDeviceChunk,
        ", found state ", a.S, ", chunk ", a.chunk);
  if (a.batch * a.E == 0) return;
  detail::by_state_size<detail::LaunchForward, T>(a.S, a, y, accumulate, ckpt, s);
}
// Per-token [dB, dC] per channel group into g.part, dA_log / dD per sequence into g.pgrad.
template <class T>
void ssm_scan_backward_items(const ssm::Scan<T>& a, const ssm::ScanGrads<T>& g, long long Tk, cudaStream_t s) {
  check(a.S > 0 && a.S <= ssm::kDeviceMaxState && a.chunk > 0 && a.chunk <= ssm::kDeviceChunk,
        "ssm_scan_backward: expected 1 <= state <= ", ssm::kDeviceMaxState, " and 1 <= chunk <= ", ssm::kDeviceChunk,
        ", found state ", a.S, ", chunk ", a.chunk);
  if (a.batch * a.E == 0) return;
  detail::by_state_size<detail::LaunchBackward, T>(a.S, a, g, Tk, s);
}

}  // namespace seqswap::ops::cuda
