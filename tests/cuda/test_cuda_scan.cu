// Device scan vs the host reference (ops/scan.hpp): forward and reverse, ragged batches, odd
// channel counts, lengths across tile boundaries; and the backward. Without a CUDA device it
// prints "no CUDA device: skipped" and exits 77, which ctest reports as skipped (label `cuda`).
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "seqswap/ops/cuda/scan.cuh"
#include "seqswap/ops/scan.hpp"
#include "scan_inputs.cuh"
#include "device_check.cuh"

using namespace seqswap;

namespace {
void expect_close(const std::vector<float>& got, const std::vector<float>& want, double tol, const char* what,
                  int C, bool reverse) {
  seqswap::test::expect_close(got, want, tol,
                              std::string(what) + " (C " + std::to_string(C) + ", reverse " + std::to_string(int(reverse)) + ")");
}
}  // namespace

int main() {
  seqswap::test::skip_without_device();
  std::mt19937 g(1);
  const std::vector<index_t> lengths{1, 5, 127, 128, 129, 1000, 0, 5000, 2};
  std::vector<index_t> offsets{0};
  for (index_t n : lengths) offsets.push_back(offsets.back() + n);
  const int batch = int(lengths.size());
  const index_t T = offsets.back();
  seqswap::cuda::DeviceBuffer<index_t> d_off;
  d_off.upload(offsets.data(), offsets.size());
  for (int C : {1, 31, 33, 200}) {
    const std::size_t n = std::size_t(T) * C;
    test::ScanInputs in(n, g);
    const auto &a = in.a, &b = in.b, &dh = in.dh;
    auto &A = in.A, &Bv = in.B, &H = in.H, &DH = in.DH, &DA = in.DA, &DB = in.DB;
    std::vector<float> h(n), ref(n), da(n), db(n), rda(n), rdb(n);
    for (bool reverse : {false, true}) {
      ops::linear_scan_reference(a.data(), b.data(), ref.data(), offsets.data(), batch, C, reverse);
      ops::cuda::linear_scan(A.data(), Bv.data(), H.data(), d_off.data(), batch, C, reverse);
      H.download(h.data(), n);
      expect_close(h, ref, 1e-5, "linear_scan", C, reverse);
      ops::linear_scan_backward(a.data(), ref.data(), dh.data(), rda.data(), rdb.data(), offsets.data(), batch, C,
                                {.chunk = 0, .reverse = reverse});
      ops::cuda::linear_scan_backward(A.data(), H.data(), DH.data(), DA.data(), DB.data(), d_off.data(), batch, C,
                                      reverse);
      DA.download(da.data(), n);
      DB.download(db.data(), n);
      expect_close(db, rdb, 1e-5, "linear_scan_backward db", C, reverse);
      expect_close(da, rda, 1e-5, "linear_scan_backward da", C, reverse);
    }
  }
  // Errors become seqswap::Error naming the call.
  try {
    seqswap::cuda::DeviceBuffer<float> huge(std::size_t(1) << 50);
    std::printf("FAILED: a 4 PB cudaMalloc did not throw\n");
    ++seqswap::test::failures;
  } catch (const seqswap::Error& e) {
    if (std::string(e.what()).find("cudaMalloc") == std::string::npos) {
      std::printf("FAILED: the error does not name the call: %s\n", e.what());
      ++seqswap::test::failures;
    }
  }
  return seqswap::test::finish("device scan matches the host reference");
}
