// The CUDA backend's runtime pieces (compiled by nvcc or any compiler with the CUDA runtime
// headers): error checking that turns every failed CUDA call into a seqswap::Error naming the
// call, the code and the place; the member functions of Buffer<T, backend::Cuda> (declared in
// core/buffer.hpp); a stream. A program uses them either by including this header in a CUDA
// translation unit or by linking an object that instantiates them (zoo/device_instances.hpp).
#pragma once
#include <cstddef>
#include <type_traits>
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

// Buffer<T, backend::Cuda> (declared in core/buffer.hpp) on the CUDA runtime.
template <class T>
Buffer<T, backend::Cuda>& Buffer<T, backend::Cuda>::operator=(const Buffer& o) {
  if (this != &o) {
    resize(o.n_);
    if (n_) SEQSWAP_CUDA_CHECK(cudaMemcpy(p_, o.p_, n_ * sizeof(T), cudaMemcpyDeviceToDevice));
  }
  return *this;
}
template <class T>
Buffer<T, backend::Cuda>::~Buffer() {
  if (p_) cudaFree(p_);
}
template <class T>
void Buffer<T, backend::Cuda>::resize(std::size_t n) {
  if (n > cap_) {
    if (p_) cudaFree(p_);
    p_ = nullptr;
    n_ = cap_ = 0;
    void* p = nullptr;
    SEQSWAP_CUDA_CHECK(cudaMalloc(&p, n * sizeof(T)));
    p_ = static_cast<T*>(p);
    cap_ = n;
    ++allocations_;
  }
  n_ = n;
}
template <class T>
void Buffer<T, backend::Cuda>::zero() {
  if (n_) SEQSWAP_CUDA_CHECK(cudaMemset(p_, 0, n_ * sizeof(T)));
}
template <class T>
void Buffer<T, backend::Cuda>::assign(std::size_t n, T value) {  // at set-up: a non-zero value is staged on the host
  resize(n);
  if constexpr (std::is_arithmetic_v<T>)
    if (value == T(0)) return zero();
  const std::vector<T> host(n, value);
  upload(host.data(), n);
}
template <class T>
void Buffer<T, backend::Cuda>::upload(const T* host, std::size_t n) {
  resize(n);
  if (n) SEQSWAP_CUDA_CHECK(cudaMemcpy(p_, host, n * sizeof(T), cudaMemcpyHostToDevice));
}
template <class T>
void Buffer<T, backend::Cuda>::download(T* host, std::size_t n) const {
  check(n <= n_, "Buffer<T, backend::Cuda>::download: asked for ", n, " values, the buffer holds ", n_);
  if (n) SEQSWAP_CUDA_CHECK(cudaMemcpy(host, p_, n * sizeof(T), cudaMemcpyDeviceToHost));
}
template <class T>
void Buffer<T, backend::Cuda>::upload_to(const T* host, T* device, std::size_t n) {
  if (n) SEQSWAP_CUDA_CHECK(cudaMemcpy(device, host, n * sizeof(T), cudaMemcpyHostToDevice));
}
template <class T>
void Buffer<T, backend::Cuda>::download_from(const T* device, T* host, std::size_t n) {
  if (n) SEQSWAP_CUDA_CHECK(cudaMemcpy(host, device, n * sizeof(T), cudaMemcpyDeviceToHost));
}

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
