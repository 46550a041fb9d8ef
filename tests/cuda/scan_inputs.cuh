// The device scan tests' inputs: a ragged batch's a (decays in [0.5, 0.99)), b and dh (normal)
// on the host, the same uploaded, and device outputs h, da, db sized to match.
#pragma once
#include <random>
#include <vector>

#include "seqswap/backend/cuda.hpp"

namespace seqswap::test {

struct ScanInputs {
  std::vector<float> a, b, dh;
  Buffer<float, backend::Cuda> A, B, DH, H, DA, DB;

  ScanInputs(std::size_t n, std::mt19937& g) : a(n), b(n), dh(n) {
    std::uniform_real_distribution<float> ua(0.5f, 0.99f);
    std::normal_distribution<float> nb;
    for (auto& v : a) v = ua(g);
    for (auto& v : b) v = nb(g);
    for (auto& v : dh) v = nb(g);
    A.upload(a.data(), n);
    B.upload(b.data(), n);
    DH.upload(dh.data(), n);
    H.resize(n);
    DA.resize(n);
    DB.resize(n);
  }
};

}  // namespace seqswap::test
