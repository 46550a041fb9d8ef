// Helpers shared by the host benchmark programs.
#pragma once
#include <cstdint>
#include <vector>

#include "seqswap/core/rng.hpp"

namespace seqswap::bench {

// n standard-normal floats from a fixed seed.
inline std::vector<float> randn(std::size_t n, std::uint64_t seed) {
  Rng r(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = float(r.normal());
  return v;
}

}  // namespace seqswap::bench
