// The scans' options, shared by the host forms (ops/scan.hpp) and the device kernels
// (ops/cuda/scan.cuh), which must not pull in Eigen.
#pragma once
#include "seqswap/core/tokens.hpp"

namespace seqswap::ops {

enum class ScanPath {
  automatic,  // channels when batch · ⌈C / 256⌉ >= 2 · threads, else chunked
  chunked,    // parallel in time (chunks of `chunk` tokens)
  channels,   // parallel over (sequence, block of channels), one pass in time
};

struct ScanOptions {
  index_t chunk = 256;   // tokens per chunk of the parallel form; 0 = sequential reference
  bool reverse = false;  // scan from the last token of each sequence to the first
  ScanPath path = ScanPath::automatic;  // ignored when chunk == 0
};

}  // namespace seqswap::ops
