// Report statistics: ranks with ties, Spearman ρ, mean and sample std, the median timer.
#include "seqswap/analysis/stats.hpp"
#include "test_util.hpp"

using namespace seqswap::analysis;

TEST_CASE("ranks average ties and Spearman matches hand values", "[stats]") {
  const std::vector<double> x{10, 20, 20, 40};
  REQUIRE(ranks(x) == std::vector<double>{1, 2.5, 2.5, 4});
  const std::vector<double> a{1, 2, 3, 4, 5}, b{5, 6, 7, 8, 7};
  // ranks b: 1, 2, 3.5, 5, 3.5 (mean 3) -> ρ = Σ dx dy / sqrt(Σdx² Σdy²) = 8 / sqrt(10 · 9.5) ≈ 0.8208
  REQUIRE(spearman(a, b) == Approx(8.0 / std::sqrt(95.0)));
  const std::vector<double> rev{5, 4, 3, 2, 1};
  REQUIRE(spearman(a, rev) == Approx(-1.0));
  REQUIRE(std::isnan(spearman(a, std::vector<double>{1, 1, 1, 1, 1})));
  REQUIRE(mean(a) == 3.0);
  REQUIRE(sample_std(a) == Approx(std::sqrt(2.5)));
  int calls = 0;
  const double ms = median_ms([&] { ++calls; }, 2, 3);
  REQUIRE(calls == 5);
  REQUIRE(ms >= 0.0);
}
