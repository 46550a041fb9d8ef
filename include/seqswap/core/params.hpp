// Parameter views and descriptions. A layer's parameters are one contiguous slice of the
// model's arena; the layer splits it into named tensors in the order it visits them.
#pragma once
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "seqswap/core/backend.hpp"
#include "seqswap/core/rng.hpp"
#include "seqswap/core/tokens.hpp"

namespace seqswap {

// A layer's slice of the parameter (or gradient) buffer.
template <class T, class Backend = backend::Host>
struct ParamsView {
  T* data = nullptr;
  std::size_t size = 0;

  // The sub-slice [offset, offset + n).
  ParamsView sub(std::size_t offset, std::size_t n) const { return {data + offset, n}; }
  operator ParamsView<const T, Backend>() const  // NOLINT: views convert like pointers
    requires(!std::is_const_v<T>)
  {
    return {data, size};
  }
};

// How a parameter tensor is initialised (timm's ViT choices).
enum class Init {
  zeros,
  ones,
  trunc_normal,  // truncated normal with `std`, cut at +-2 std
  normal,        // normal with `std`
  uniform,       // uniform in [-std, std]
  custom,        // ParamInfo::custom_init writes it (e.g. S4D/Mamba A_log = log(1..N))
};

// One named parameter tensor, as visit_params reports it.
struct ParamInfo {
  std::string name;            // timm's name where a counterpart exists: blocks.3.attn.qkv.weight
  std::vector<index_t> shape;  // timm's shape: linear weights are [out, in]
  std::size_t offset = 0;      // elements from the start of the arena
  std::size_t count = 0;       // product of shape
  bool decay = false;          // AdamW weight decay applies (matrices; not biases, norms, cls/pos)
  Init init = Init::zeros;
  double std = 0.0;
  // For Init::custom: fills `n` values (in double; the arena converts) from `rng`.
  std::function<void(double* values, std::size_t n, Rng& rng)> custom_init{};
};

inline std::size_t numel(const std::vector<index_t>& shape) {
  std::size_t n = 1;
  for (index_t s : shape) n *= static_cast<std::size_t>(s);
  return n;
}

// Joins a prefix and a name with a dot, skipping empty parts.
inline std::string join_name(const std::string& prefix, const std::string& name) {
  if (prefix.empty()) return name;
  if (name.empty()) return prefix;
  return prefix + "." + name;
}

}  // namespace seqswap
