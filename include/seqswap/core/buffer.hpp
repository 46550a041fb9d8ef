// Owning storage, typed by backend. Buffer<T> (= Buffer<T, backend::Host>): 64-byte aligned
// host memory. Buffer<T, backend::Cuda>: device memory with the same resize / assign / zero /
// data / size interface plus upload / download; declared here without CUDA types, its member
// functions defined by backend/cuda.hpp (the CUDA runtime) or by a stand-in (the tests' CPU
// emulation), so that host code using it compiles with any C++ compiler and the backend's
// implementation is chosen when the program is linked.
// Resizing to a size it already has keeps the memory, which is how training steps after the
// first allocate nothing.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>
#include <utility>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "seqswap/core/backend.hpp"

namespace seqswap {

inline constexpr std::size_t kAlignBytes = 64;

// Keeps freed heap memory in the process, once per process (glibc; called by the first host
// Buffer allocation). Eigen allocates and frees its GEMM packing buffers on every product; with
// glibc's defaults those blocks are mmap'd and unmapped, or the heap top is trimmed, on every
// step, and the next step faults in fresh zeroed pages: 27,000 page faults and a third of the
// CPU time in the kernel per teacher training step, measured with `perf stat -e page-faults`
// (docs/performance.md). Large blocks then come from the heap (mmap threshold at glibc's
// maximum, 32 MiB) and the heap top is returned to the system only beyond 1 GiB free. The cost:
// a process keeps its peak heap. Define SEQSWAP_KEEP_MALLOC_DEFAULTS to leave the allocator
// as it is.
inline void keep_heap_resident() {
#if defined(__GLIBC__) && !defined(SEQSWAP_KEEP_MALLOC_DEFAULTS)
  static const bool done = [] {
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    return true;
  }();
  (void)done;
#endif
}

template <class T, class B = backend::Host>
class Buffer;

template <class T>
class Buffer<T, backend::Host> {
 public:
  Buffer() = default;
  explicit Buffer(std::size_t n) { resize(n); }
  Buffer(const Buffer& o) { *this = o; }
  Buffer(Buffer&& o) noexcept = default;
  Buffer& operator=(Buffer&& o) noexcept = default;
  Buffer& operator=(const Buffer& o) {
    if (this != &o) {
      resize(o.size_);
      std::copy(o.data(), o.data() + o.size_, data());
    }
    return *this;
  }

  // Grows the capacity when needed (contents are then lost); never shrinks the allocation.
  void resize(std::size_t n) {
    if (n > capacity_) {
      keep_heap_resident();
      std::size_t bytes = (n * sizeof(T) + kAlignBytes - 1) / kAlignBytes * kAlignBytes;
      void* p = std::aligned_alloc(kAlignBytes, bytes);
      if (!p) throw std::bad_alloc();
      ptr_.reset(static_cast<T*>(p));
      capacity_ = n;
      ++allocations_;
    }
    size_ = n;
  }
  void assign(std::size_t n, T value) {
    resize(n);
    std::fill(data(), data() + n, value);
  }
  void zero() { std::fill(data(), data() + size_, T(0)); }

  T* data() { return ptr_.get(); }
  const T* data() const { return ptr_.get(); }
  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  T& operator[](std::size_t i) { return ptr_.get()[i]; }
  const T& operator[](std::size_t i) const { return ptr_.get()[i]; }
  T* begin() { return data(); }
  T* end() { return data() + size_; }
  const T* begin() const { return data(); }
  const T* end() const { return data() + size_; }

  // Number of heap allocations this buffer has made (tests check steady-state steps make none).
  static std::size_t allocation_count() { return allocations_; }

 private:
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T, Free> ptr_;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
  static inline std::size_t allocations_ = 0;
};

// Device memory for n values of T (never managed memory). The members defined here need no
// runtime; the others are defined by backend/cuda.hpp or by a stand-in (see the top of the file).
// A program that uses Buffer<T, backend::Cuda> without either fails at link time, naming them.
template <class T>
class Buffer<T, backend::Cuda> {
 public:
  Buffer() = default;
  explicit Buffer(std::size_t n) { resize(n); }
  Buffer(const Buffer& o) { *this = o; }
  Buffer& operator=(const Buffer& o);  // a device-to-device copy
  Buffer(Buffer&& o) noexcept
      : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)), cap_(std::exchange(o.cap_, 0)) {}
  Buffer& operator=(Buffer&& o) noexcept {
    Buffer gone(std::move(o));
    swap(gone);
    return *this;
  }
  ~Buffer();
  void swap(Buffer& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    std::swap(cap_, o.cap_);
  }

  // Grows when needed (contents are then lost); never shrinks.
  void resize(std::size_t n);
  void zero();
  void assign(std::size_t n, T value);
  // Host <-> device, waited for (the legacy default stream, ordered with the device ops' stream).
  void upload(const T* host, std::size_t n);
  void download(T* host, std::size_t n) const;
  // n values from the host to any device pointer (e.g. a view into a model's arena), and back.
  static void upload_to(const T* host, T* device, std::size_t n);
  static void download_from(const T* device, T* host, std::size_t n);

  T* data() { return p_; }
  const T* data() const { return p_; }
  std::size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  // Number of device allocations (a steady-state step must make none, as on the host).
  static std::size_t allocation_count() { return allocations_; }

 private:
  T* p_ = nullptr;
  std::size_t n_ = 0, cap_ = 0;
  static inline std::size_t allocations_ = 0;
};

}  // namespace seqswap
