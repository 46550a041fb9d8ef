// What the device checks share, without CUDA: a relative-error check that also fails on
// non-finite values (outputs start as NaN sentinels), a failure count, the exit status, and
// uploads / downloads through Buffer<T, backend::Cuda> (the real device buffer under nvcc, the
// emulated one in tests/device_emulation.hpp).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "seqswap/core/buffer.hpp"

namespace seqswap::test {

inline int failures = 0;

// max |got − want| / max(max |want|, scale) ≤ tol, and every value of got finite; a failure is
// printed with `what` and counted. `scale` is a floor for results that cancel to (near) zero:
// the size of the terms whose difference they are (layer norm's dx at width 1 is exactly 0).
template <class A, class B>
void expect_close(const A& got, const B& want, double tol, const std::string& what, double scale = 1e-30) {
  double num = 0, den = 0;
  bool finite = true;
  for (std::size_t i = 0; i < want.size(); ++i) {
    finite = finite && std::isfinite(double(got[i]));
    num = std::max(num, std::abs(double(got[i]) - double(want[i])));
    den = std::max(den, std::abs(double(want[i])));
  }
  const double rel = num / std::max(den, scale);
  if (!finite || !(rel <= tol)) {
    std::printf("FAILED: %s: relative error %.3g > %.1g%s\n", what.c_str(), rel, tol, finite ? "" : ", non-finite values");
    ++failures;
  }
}
// A named check that is true or false.
inline void expect(bool ok, const std::string& what) {
  if (!ok) {
    std::printf("FAILED: %s\n", what.c_str());
    ++failures;
  }
}

template <class T>
Buffer<T, backend::Cuda> up(const std::vector<T>& v) {
  Buffer<T, backend::Cuda> d;
  d.upload(v.data(), v.size());
  return d;
}
template <class T>
std::vector<T> down(const Buffer<T, backend::Cuda>& d) {
  std::vector<T> v(d.size());
  d.download(v.data(), v.size());
  return v;
}
// n values at a device pointer (a view into a model's arena or output).
template <class T>
std::vector<T> down(const T* device, std::size_t n) {
  std::vector<T> v(n);
  Buffer<T, backend::Cuda>::download_from(device, v.data(), n);
  return v;
}

// The exit status: 1 when any check failed, else 0 after printing `passed`.
inline int finish(const char* passed) {
  if (failures) return 1;
  std::printf("%s\n", passed);
  return 0;
}

}  // namespace seqswap::test
