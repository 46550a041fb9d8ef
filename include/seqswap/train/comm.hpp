// Data-parallel training's one collective: every rank holds the same model, takes its slice of
// each global batch, and the gradients are summed over the ranks before the (identical)
// optimizer step. The interface knows no MPI; train/mpi.hpp implements it over MPI_COMM_WORLD.
#pragma once
#include <cstddef>

namespace seqswap::train {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In place: x becomes the element-wise sum of every rank's x (same n on every rank).
  virtual void allreduce_sum(float* x, std::size_t n) = 0;
  virtual void allreduce_sum(double* x, std::size_t n) = 0;
};

// The rows [lo, hi) of a global batch of n that rank r of R takes (contiguous, sizes differ by
// at most one; a rank may get none when n < R).
struct Slice {
  std::ptrdiff_t lo = 0, hi = 0;
};
inline Slice batch_slice(std::ptrdiff_t n, int r, int R) {
  return {n * r / R, n * (r + 1) / R};
}

}  // namespace seqswap::train
