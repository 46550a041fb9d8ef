// The CUDA backend's runtime pieces (compiled only by nvcc or with the CUDA runtime headers):
// error checking that turns every failed CUDA call into a seqswap::Error naming the call, the
// code and the place; Buffer<T, backend::Cuda> (device memory, the host Buffer's interface);
// a stream. Status: Model<Net, backend::Cuda> keeps its arena and contexts in these and the
// scan ops reach the device kernels (ops/cuda/scan.cuh); the layers' forward and backward do
// not yet run on the device (see docs/architecture.md, "Backends").
#pragma once
#include <cstddef>
#include <utility>
#include <vector>

#include <cuda_runtime.h>

#include "seqswap/core/buffer.hpp"
#include "seqswap/core/error.hpp"

namespace seqswap::cuda {

inline void check_call(cudaError_t e, const char* call, const char* file, int line) {
  if (e != cudaSuccess)
    fail("CUDA: ", call, " failed: ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ") at ", file, ":", line);
}

// Blocks of `threads` threads covering n work items (one thread each): the grid of a 1-D launch.
inline unsigned blocks_for(long long n, int threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

// True when a CUDA device can be used here (tests skip otherwise).
inline bool device_available() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return false;
  }
  return n > 0;
}

}  // namespace seqswap::cuda

// Every runtime call goes through this; every kernel launch is followed by SEQSWAP_CUDA_LAUNCHED.
#define SEQSWAP_CUDA_CHECK(call) ::seqswap::cuda::check_call((call), #call, __FILE__, __LINE__)
#define SEQSWAP_CUDA_LAUNCHED(kernel) ::seqswap::cuda::check_call(cudaGetLastError(), "launch of " kernel, __FILE__, __LINE__)

namespace seqswap {

// Buffer<T, backend::Cuda>: owning device memory for n values of T (cudaMalloc, never managed
// memory), with the host Buffer's interface (core/buffer.hpp) plus upload / download. Layer
// contexts and a Model's arena hold these on the CUDA backend.
template <class T>
class Buffer<T, backend::Cuda> {
 public:
  Buffer() = default;
  explicit Buffer(std::size_t n) { resize(n); }
  Buffer(const Buffer& o) { *this = o; }
  Buffer& operator=(const Buffer& o) {  // a device-to-device copy
    if (this != &o) {
      resize(o.n_);
      if (n_) SEQSWAP_CUDA_CHECK(cudaMemcpy(p_, o.p_, n_ * sizeof(T), cudaMemcpyDeviceToDevice));
    }
    return *this;
  }
  Buffer(Buffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)), cap_(std::exchange(o.cap_, 0)) {}
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      release();
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
      cap_ = std::exchange(o.cap_, 0);
    }
    return *this;
  }
  ~Buffer() { release(); }

  // Grows when needed (contents are then lost); never shrinks.
  void resize(std::size_t n) {
    if (n > cap_) {
      release();
      void* p = nullptr;
      SEQSWAP_CUDA_CHECK(cudaMalloc(&p, n * sizeof(T)));
      p_ = static_cast<T*>(p);
      cap_ = n;
      ++allocations_;
    }
    n_ = n;
  }
  void zero() {
    if (n_) SEQSWAP_CUDA_CHECK(cudaMemset(p_, 0, n_ * sizeof(T)));
  }
  void assign(std::size_t n, T value) {  // at set-up: a non-zero value is staged on the host
    resize(n);
    if (value == T(0)) return zero();
    const std::vector<T> host(n, value);
    upload(host.data(), n);
  }
  void upload(const T* host, std::size_t n, cudaStream_t s = nullptr) {
    resize(n);
    SEQSWAP_CUDA_CHECK(cudaMemcpyAsync(p_, host, n * sizeof(T), cudaMemcpyHostToDevice, s));
    SEQSWAP_CUDA_CHECK(cudaStreamSynchronize(s));
  }
  void download(T* host, std::size_t n, cudaStream_t s = nullptr) const {
    check(n <= n_, "Buffer<T, backend::Cuda>::download: asked for ", n, " values, the buffer holds ", n_);
    SEQSWAP_CUDA_CHECK(cudaMemcpyAsync(host, p_, n * sizeof(T), cudaMemcpyDeviceToHost, s));
    SEQSWAP_CUDA_CHECK(cudaStreamSynchronize(s));
  }
  // n values from the host to any device pointer (e.g. a view into a model's arena), and back.
  static void upload_to(const T* host, T* device, std::size_t n) {
    if (n) SEQSWAP_CUDA_CHECK(cudaMemcpy(device, host, n * sizeof(T), cudaMemcpyHostToDevice));
  }
  static void download_from(const T* device, T* host, std::size_t n) {
    if (n) SEQSWAP_CUDA_CHECK(cudaMemcpy(host, device, n * sizeof(T), cudaMemcpyDeviceToHost));
  }
  T* data() { return p_; }
  const T* data() const { return p_; }
  std::size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  // Number of device allocations (a steady-state step must make none, as on the host).
  static std::size_t allocation_count() { return allocations_; }

 private:
  void release() noexcept {
    if (p_) cudaFree(p_);
    p_ = nullptr;
    n_ = cap_ = 0;
  }
  T* p_ = nullptr;
  std::size_t n_ = 0, cap_ = 0;
  static inline std::size_t allocations_ = 0;
};

}  // namespace seqswap

namespace seqswap::cuda {

template <class T>
using DeviceBuffer = Buffer<T, backend::Cuda>;

// An owned stream. cudaStreamNonBlocking (the default here) does not wait for the legacy default
// stream; cudaStreamDefault does (the device context's stream: see ops/cuda/device_ops.cuh).
class Stream {
 public:
  explicit Stream(unsigned flags = cudaStreamNonBlocking) { SEQSWAP_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, flags)); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream() { cudaStreamDestroy(s_); }
  cudaStream_t get() const { return s_; }
  void sync() const { SEQSWAP_CUDA_CHECK(cudaStreamSynchronize(s_)); }

 private:
  cudaStream_t s_{};
};

}  // namespace seqswap::cuda
