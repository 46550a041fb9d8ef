// Must not compile: a layer whose code is host only, instantiated on backend::Cuda. Such code
// states SEQSWAP_HOST_ONLY (the library's layers do so in their host paths, which their
// backend dispatch never instantiates on the device; a user's layer without a device path does
// so in its forward), so the error names it instead of a host loop running over device
// pointers. (The CUDA backend is emulated here so that everything else compiles.)
// Expected message: "no device path yet"
#include "../device_emulation.hpp"

#include "seqswap/core/backend.hpp"

namespace {
// A user's layer written for the host only.
struct HostOnlyScale {
  template <class B>
  void forward(const float* x, float* y, long n) const {
    SEQSWAP_HOST_ONLY(B, "HostOnlyScale");
    for (long i = 0; i < n; ++i) y[i] = 2 * x[i];
  }
};
}  // namespace

int main() {
  using namespace seqswap;
  Buffer<float, backend::Cuda> x(4), y(4);
  HostOnlyScale{}.forward<backend::Cuda>(x.data(), y.data(), 4);
  return 0;
}
