// Scan orders are permutations, gather and scatter are exact inverses, and the named orders
// visit the grid as promised.
#include <algorithm>
#include <numeric>

#include "seqswap/mixers/scan_order.hpp"
#include "test_util.hpp"

using namespace seqswap;
using order::Cls;
using order::Grid;

TEST_CASE("scan orders are permutations with the promised layout", "[scan_order]") {
  for (Grid g : {Grid::raster, Grid::reversed, Grid::column_major, Grid::snake})
    for (Cls c : {Cls::head, Cls::middle, Cls::tail})
      for (index_t n : {1, 2, 5, 10, 17, 50}) {
        auto p = order::ScanOrder{g, c}.permutation(n);
        std::vector<index_t> sorted = p;
        std::sort(sorted.begin(), sorted.end());
        std::vector<index_t> iota(static_cast<std::size_t>(n));
        std::iota(iota.begin(), iota.end(), index_t{0});
        REQUIRE(sorted == iota);
      }
  // 3x3 grid + CLS (n = 10)
  REQUIRE(order::ScanOrder{Grid::raster, Cls::head}.permutation(10) ==
          std::vector<index_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  REQUIRE(order::ScanOrder{Grid::reversed, Cls::head}.permutation(10) ==
          std::vector<index_t>{0, 9, 8, 7, 6, 5, 4, 3, 2, 1});
  REQUIRE(order::ScanOrder{Grid::column_major, Cls::tail}.permutation(10) ==
          std::vector<index_t>{1, 4, 7, 2, 5, 8, 3, 6, 9, 0});
  REQUIRE(order::ScanOrder{Grid::snake, Cls::middle}.permutation(10) ==
          std::vector<index_t>{1, 2, 3, 6, 0, 5, 4, 7, 8, 9});
  REQUIRE_THROWS_WITH(order::grid_from_name("spiral"), Catch::Contains("known: raster"));
}

TEST_CASE("gather and scatter are exact inverses on ragged batches", "[scan_order]") {
  const std::vector<index_t> offsets{0, 10, 13, 30};  // 1+3x3, ragged 3, 1+4x4
  const index_t C = 2;
  std::vector<double> x(30 * C), y(x.size()), z(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = double(i) * 0.5 - 3;
  for (Grid g : {Grid::raster, Grid::reversed, Grid::column_major, Grid::snake}) {
    const auto perm = order::batch_permutation({g, Cls::middle}, offsets.data(), 3);
    order::gather_rows(x.data(), perm, C, y.data());
    order::scatter_rows(y.data(), perm, C, z.data());
    REQUIRE(z == x);
  }
}
