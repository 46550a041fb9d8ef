// seqswap: version and portability macros. Host-safe: no CUDA, no Eigen.
#pragma once

#define SEQSWAP_VERSION_MAJOR 0
#define SEQSWAP_VERSION_MINOR 1
#define SEQSWAP_VERSION_PATCH 0
#define SEQSWAP_VERSION_STRING "0.1.0"

// SEQSWAP_HD marks functions usable from host and device code. Without nvcc it is plain
// `inline`, so the host tests exercise exactly the code the device compiles.
#if defined(__CUDACC__)
#define SEQSWAP_HD __host__ __device__ inline
#else
#define SEQSWAP_HD inline
#endif

// SEQSWAP_SIMD_SUM(v, ...): put before a loop that sums into v (and the others named). On the
// host the sum may be split over vector lanes (an OpenMP simd reduction: a fixed order for a
// given build, so still deterministic); in device code, where one thread owns the row, and
// without OpenMP, the loop stays as written.
#if defined(_OPENMP) && !defined(__CUDA_ARCH__)
#define SEQSWAP_PRAGMA(x) _Pragma(#x)
#define SEQSWAP_SIMD_SUM(...) SEQSWAP_PRAGMA(omp simd reduction(+ : __VA_ARGS__))
#else
#define SEQSWAP_SIMD_SUM(...)
#endif

namespace seqswap {
inline constexpr const char* version = SEQSWAP_VERSION_STRING;
// Checkpoint format version written into every safetensors metadata entry.
inline constexpr int checkpoint_format_version = 1;
}  // namespace seqswap
