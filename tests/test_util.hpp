// Shared helpers for seqswap's tests.
#pragma once
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#ifndef SEQSWAP_TEST_DATA_DIR
#define SEQSWAP_TEST_DATA_DIR "tests/reference"
#endif

namespace test_util {

inline std::filesystem::path fixture(const std::string& name) {
  return std::filesystem::path(SEQSWAP_TEST_DATA_DIR) / name;
}

// max_i |a_i - b_i| / max(max_i |b_i|, tiny) <= tol: relative to the tensor's scale, so that
// entries near zero do not dominate.
template <class A, class Bv>
double rel_error(const A* a, const Bv& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    num = std::max(num, std::abs(double(a[i]) - double(b[i])));
    den = std::max(den, std::abs(double(b[i])));
  }
  return num / std::max(den, 1e-30);
}

template <class A, class Bv>
void require_close(const A* a, const Bv& b, double tol, const std::string& what) {
  const double e = rel_error(a, b);
  INFO(what << ": relative error " << e << " (tolerance " << tol << ")");
  REQUIRE(e <= tol);
}

}  // namespace test_util
