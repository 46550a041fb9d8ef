// What the device tests share: the skip rule (no CUDA device: print "no CUDA device: skipped"
// and exit 77, which ctest reports as skipped, never as passed), and the checks and
// host<->device copies of tests/check_common.hpp.
#pragma once
#include <cstdio>
#include <cstdlib>

#include "seqswap/backend/cuda.hpp"
#include "../check_common.hpp"

namespace seqswap::test {

// Exits 77 (ctest SKIP_RETURN_CODE) when no CUDA device can be used here.
inline void skip_without_device() {
  if (!seqswap::cuda::device_available()) {
    std::printf("no CUDA device: skipped\n");
    std::exit(77);
  }
}

}  // namespace seqswap::test
