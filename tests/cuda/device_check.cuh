// What the device tests share: the skip rule (no CUDA device: print "no CUDA device: skipped"
// and exit 77, which ctest reports as skipped, never as passed), a relative-error check that
// also fails on non-finite values (outputs start as NaN sentinels), and host<->device copies.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "seqswap/backend/cuda.hpp"

namespace seqswap::test {

inline int failures = 0;

// Exits 77 (ctest SKIP_RETURN_CODE) when no CUDA device can be used here.
inline void skip_without_device() {
  if (!seqswap::cuda::device_available()) {
    std::printf("no CUDA device: skipped\n");
    std::exit(77);
  }
}

// max |got − want| / max |want| ≤ tol, and every value of got finite; a failure is printed
// with `what` and counted.
template <class A, class B>
void expect_close(const A& got, const B& want, double tol, const std::string& what) {
  double num = 0, den = 0;
  bool finite = true;
  for (std::size_t i = 0; i < want.size(); ++i) {
    finite = finite && std::isfinite(double(got[i]));
    num = std::max(num, std::abs(double(got[i]) - double(want[i])));
    den = std::max(den, std::abs(double(want[i])));
  }
  const double rel = num / std::max(den, 1e-30);
  if (!finite || !(rel <= tol)) {
    std::printf("FAILED: %s: relative error %.3g > %.1g%s\n", what.c_str(), rel, tol, finite ? "" : ", non-finite values");
    ++failures;
  }
}

template <class T>
seqswap::cuda::DeviceBuffer<T> up(const std::vector<T>& v) {
  seqswap::cuda::DeviceBuffer<T> d;
  d.upload(v.data(), v.size());
  return d;
}
template <class T>
std::vector<T> down(const seqswap::cuda::DeviceBuffer<T>& d) {
  std::vector<T> v(d.size());
  d.download(v.data(), v.size());
  return v;
}

// The exit status: 1 when any check failed, else 0 after printing `passed`.
inline int finish(const char* passed) {
  if (failures) return 1;
  std::printf("%s\n", passed);
  return 0;
}

}  // namespace seqswap::test
