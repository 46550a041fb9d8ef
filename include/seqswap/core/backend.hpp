// Backend tag types. Layers take the backend as a template parameter and branch on it with
// `if constexpr`; the CUDA path lives under ops/cuda/ and is compiled only by nvcc.
#pragma once
#include <type_traits>

namespace seqswap::backend {
struct Host {};  // CPU: Eigen maps over arena memory, OpenMP across batch and heads
struct Cuda {};  // NVIDIA GPU: see backend/cuda.hpp (only under nvcc)

template <class B>
inline constexpr bool is_host = std::is_same_v<B, Host>;
template <class B>
inline constexpr bool is_cuda = std::is_same_v<B, Cuda>;
}  // namespace seqswap::backend

namespace seqswap {
// For primary templates that must never be instantiated: static_assert(dependent_false<T>, "...")
template <class...>
inline constexpr bool dependent_false = false;
}  // namespace seqswap

// Code that is host only says so at compile time: a layer's host path (which its backend
// dispatch never instantiates on the device), or a layer whose device path is not written.
// Instantiating it on backend::Cuda is an error naming it, never a host loop over device
// pointers.
#define SEQSWAP_HOST_ONLY(B, what)                                                                     \
  static_assert(::seqswap::backend::is_host<B>, what ": no device path yet (backend::Cuda runs "       \
                "every layer of the library; see docs/architecture.md, Backends)")
