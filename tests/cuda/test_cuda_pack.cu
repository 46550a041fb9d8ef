// Device gather / scatter of token rows (ops/cuda/pack.cuh), halting's packing, against the host
// copy that model/halting.hpp makes with the same index list: a ragged selection (every third row
// dropped, the last row kept, an empty selection), widths 1, 64 and 193. Scatter leaves the rows
// it does not own untouched. Without a CUDA device it prints "no CUDA device: skipped" and exits
// 77 (ctest: skipped, never passed).
#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "seqswap/ops/cuda/pack.cuh"
#include "device_check.cuh"

using seqswap::test::down;
using seqswap::test::expect_close;
using seqswap::test::up;

int main() {
  seqswap::test::skip_without_device();
  std::mt19937 g(2);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const long long full_rows = 301;
  for (long long D : {1LL, 64LL, 193LL})
    for (bool empty : {false, true}) {
      std::vector<std::int64_t> idx;
      if (!empty)
        for (long long t = 0; t < full_rows; ++t)
          if (t % 3 != 1 || t == full_rows - 1) idx.push_back(t);
      const long long rows = (long long)idx.size();
      std::vector<float> full(static_cast<std::size_t>(full_rows * D)), packed_in(static_cast<std::size_t>(rows * D)),
          base(full.size());
      for (auto& v : full) v = nd(g);
      for (auto& v : packed_in) v = nd(g);
      for (auto& v : base) v = nd(g);
      // The host's packing (model/halting.hpp's gather and scatter).
      std::vector<float> packed(packed_in.size()), scattered = base;
      for (long long r = 0; r < rows; ++r) {
        std::copy(full.begin() + idx[r] * D, full.begin() + (idx[r] + 1) * D, packed.begin() + r * D);
        std::copy(packed_in.begin() + r * D, packed_in.begin() + (r + 1) * D, scattered.begin() + idx[r] * D);
      }
      auto d_full = up(full), d_packed_in = up(packed_in), d_scattered = up(base);
      seqswap::cuda::DeviceBuffer<std::int64_t> d_idx;
      if (rows) d_idx = up(idx);
      seqswap::cuda::DeviceBuffer<float> d_packed;
      if (rows) d_packed.assign(packed.size(), std::nanf(""));
      seqswap::ops::cuda::gather_rows(d_full.data(), d_idx.data(), rows, D, d_packed.data());
      seqswap::ops::cuda::scatter_rows(d_packed_in.data(), d_idx.data(), rows, D, d_scattered.data());
      SEQSWAP_CUDA_CHECK(cudaDeviceSynchronize());
      const std::string where = " (D " + std::to_string(D) + (empty ? ", empty selection)" : ")");
      if (rows) expect_close(down(d_packed), packed, 0.0, "gather" + where);
      expect_close(down(d_scattered), scattered, 0.0, "scatter" + where);
    }
  return seqswap::test::finish("device gather / scatter match the host's packing");
}
