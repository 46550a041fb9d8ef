// Report statistics: ranks with ties, Spearman ρ, mean and sample std, the median timer;
// percentiles, bootstrap intervals, the Spearman permutation test and the verdict rule.
#include "seqswap/analysis/stats.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "seqswap/core/error.hpp"
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

namespace {
bool is_nan_interval(const Interval& i) { return std::isnan(i.lo) && std::isnan(i.hi); }
}  // namespace

TEST_CASE("percentile interpolates between order statistics (type 7)", "[stats]") {
  const std::vector<double> v{4, 1, 3, 2};  // unsorted on purpose
  REQUIRE(percentile(v, 0.5) == Approx(2.5));
  REQUIRE(percentile(v, 0.25) == Approx(1.75));  // h = 3 · 0.25 = 0.75 -> 1 + 0.75 · (2 − 1)
  REQUIRE(percentile(v, 0.0) == 1.0);
  REQUIRE(percentile(v, 1.0) == 4.0);
  REQUIRE(percentile({7.0}, 0.3) == 7.0);
  REQUIRE(std::isnan(percentile({}, 0.5)));
  REQUIRE(std::isnan(percentile({1.0, std::nan(""), 3.0}, 0.5)));
  REQUIRE_THROWS_AS(percentile(v, -0.1), seqswap::Error);
  REQUIRE_THROWS_AS(percentile(v, 1.5), seqswap::Error);
  REQUIRE_THROWS_AS(percentile(v, std::nan("")), seqswap::Error);
}

TEST_CASE("bootstrap intervals of a mean and a difference of means", "[stats]") {
  // Identical constant samples: every resample has the same mean, so the interval is a point.
  const std::vector<double> c{3, 3, 3, 3};
  const Interval d0 = bootstrap_mean_difference(c, c, 2000, 0.95, 1);
  REQUIRE(d0.lo == d0.hi);
  REQUIRE(d0.lo == Approx(0.0).margin(1e-12));
  const Interval m0 = bootstrap_mean(c, 2000, 0.95, 1);
  REQUIRE(m0.lo == m0.hi);
  REQUIRE(m0.lo == Approx(3.0));
  // One value on each side: the point interval at the difference.
  const Interval one = bootstrap_mean_difference(std::vector<double>{5.0}, std::vector<double>{2.0});
  REQUIRE(one.lo == 3.0);
  REQUIRE(one.hi == 3.0);

  // Resampled means of a lie in [10, 12] and of b in [0, 2], so the difference lies in [8, 12].
  const std::vector<double> a{10, 11, 12}, b{0, 1, 2};
  const Interval d = bootstrap_mean_difference(a, b, 5000, 0.95, 42);
  REQUIRE(d.lo <= 10.0);
  REQUIRE(d.hi >= 10.0);
  REQUIRE(d.lo >= 8.0);
  REQUIRE(d.hi <= 12.0);
  REQUIRE(d.lo < d.hi);

  // Same seed -> the same interval; a lower level, same replicates -> a nested, narrower one.
  const Interval again = bootstrap_mean_difference(a, b, 5000, 0.95, 42);
  REQUIRE(again.lo == d.lo);
  REQUIRE(again.hi == d.hi);
  const Interval narrow = bootstrap_mean_difference(a, b, 5000, 0.5, 42);
  REQUIRE(narrow.lo >= d.lo);
  REQUIRE(narrow.hi <= d.hi);
  REQUIRE(narrow.hi - narrow.lo < d.hi - d.lo);

  const std::vector<double> x{1, 2, 3, 4, 5};
  const Interval m = bootstrap_mean(x, 4000, 0.9, 7);
  REQUIRE(m.lo <= 3.0);
  REQUIRE(m.hi >= 3.0);
  REQUIRE(m.lo >= 1.0);
  REQUIRE(m.hi <= 5.0);
  const Interval m2 = bootstrap_mean(x, 4000, 0.9, 7);
  REQUIRE((m2.lo == m.lo && m2.hi == m.hi));

  // Empty or NaN input -> NaN interval; bad arguments throw.
  const std::vector<double> empty;
  REQUIRE(is_nan_interval(bootstrap_mean(empty, 100, 0.95, 0)));
  REQUIRE(is_nan_interval(bootstrap_mean_difference(empty, b)));
  REQUIRE(is_nan_interval(bootstrap_mean_difference(a, empty)));
  REQUIRE(is_nan_interval(bootstrap_mean_difference(a, std::vector<double>{1.0, std::nan("")})));
  REQUIRE_THROWS_AS(bootstrap_mean_difference(a, b, 0), seqswap::Error);
  REQUIRE_THROWS_AS(bootstrap_mean_difference(a, b, 100, 1.0), seqswap::Error);
  REQUIRE_THROWS_AS(bootstrap_mean(a, 100, 0.0, 0), seqswap::Error);
}

TEST_CASE("bootstrap interval of Spearman's rho", "[stats]") {
  std::vector<double> x(10), y(10);
  for (int i = 0; i < 10; ++i) {
    x[std::size_t(i)] = i;
    y[std::size_t(i)] = i * i;  // monotone: every non-constant resample has ρ = 1
  }
  const Interval r = bootstrap_spearman(x, y, 2000, 0.95, 3);
  REQUIRE(r.lo == Approx(1.0));
  REQUIRE(r.hi == Approx(1.0));

  const std::vector<double> u{1, 2, 3, 4, 5, 6, 7, 8}, v{2, 1, 4, 3, 6, 5, 8, 7};
  const Interval s = bootstrap_spearman(u, v, 3000, 0.95, 11);
  REQUIRE(s.lo <= spearman(u, v));
  REQUIRE(s.hi >= spearman(u, v));
  REQUIRE(s.lo >= -1.0);
  REQUIRE(s.hi <= 1.0);
  const Interval s2 = bootstrap_spearman(u, v, 3000, 0.95, 11);
  REQUIRE((s2.lo == s.lo && s2.hi == s.hi));

  // A constant side makes every resample NaN -> fewer than half valid -> NaN interval.
  REQUIRE(is_nan_interval(bootstrap_spearman(u, std::vector<double>(8, 1.0), 500, 0.95, 0)));
  // Mismatched lengths or a single pair -> NaN interval.
  REQUIRE(is_nan_interval(bootstrap_spearman(u, std::vector<double>{1, 2}, 100, 0.95, 0)));
  REQUIRE(is_nan_interval(bootstrap_spearman(std::vector<double>{1}, std::vector<double>{1}, 100, 0.95, 0)));
}

TEST_CASE("permutation p-value of Spearman's rho", "[stats]") {
  // n = 4, perfect order: of the 24 orderings only the identity (ρ = 1) and the reversal (ρ = −1)
  // reach |ρ| = 1.
  const std::vector<double> x4{1, 2, 3, 4};
  REQUIRE(spearman_permutation_p(x4, x4) == Approx(2.0 / 24.0));
  // n = 3: ρ over the 6 orderings is 1, ½, ½, −½, −½, −1.
  const std::vector<double> x3{1, 2, 3}, y3{10, 20, 30};
  REQUIRE(spearman_permutation_p(x3, y3) == Approx(2.0 / 6.0));
  const std::vector<double> y3r{30, 20, 10};
  REQUIRE(spearman_permutation_p(x3, y3r) == Approx(2.0 / 6.0));
  // n = 3 with ρ = ½: |ρ| >= ½ for every ordering.
  const std::vector<double> y3h{10, 30, 20};
  REQUIRE(spearman_permutation_p(x3, y3h) == Approx(1.0));
  // Exact enumeration ignores the seed.
  REQUIRE(spearman_permutation_p(x4, x4, 10, 1) == spearman_permutation_p(x4, x4, 10, 2));

  // n = 10, Monte Carlo: a perfect order is essentially never matched by a random shuffle.
  std::vector<double> x10(10);
  for (int i = 0; i < 10; ++i) x10[std::size_t(i)] = i;
  const double p10 = spearman_permutation_p(x10, x10, 10000, 5);
  REQUIRE(p10 < 0.01);
  REQUIRE(p10 >= 1.0 / 10001.0);
  REQUIRE(spearman_permutation_p(x10, x10, 10000, 5) == p10);

  // n = 9 Monte Carlo agrees with an exact enumeration done here by brute force.
  const std::vector<double> x9{1, 2, 3, 4, 5, 6, 7, 8, 9}, y9{2, 1, 5, 3, 4, 9, 6, 8, 7};
  const double rho = std::abs(spearman(x9, y9));
  std::vector<std::size_t> idx(9);
  std::iota(idx.begin(), idx.end(), std::size_t{0});
  std::vector<double> perm(9);
  double count = 0, total = 0;
  do {
    for (std::size_t i = 0; i < 9; ++i) perm[i] = y9[idx[i]];
    if (std::abs(spearman(x9, perm)) >= rho - 1e-12) ++count;
    ++total;
  } while (std::next_permutation(idx.begin(), idx.end()));
  const double exact = count / total;
  const double mc = spearman_permutation_p(x9, y9, 20000, 9);
  INFO("exact " << exact << ", Monte Carlo " << mc);
  REQUIRE(mc == Approx(exact).margin(0.01));

  // NaN when ρ is NaN; bad permutation counts throw.
  REQUIRE(std::isnan(spearman_permutation_p(x4, std::vector<double>{1, 1, 1, 1})));
  REQUIRE(std::isnan(spearman_permutation_p(x4, x3)));
  REQUIRE_THROWS_AS(spearman_permutation_p(x4, x4, 0), seqswap::Error);
}

TEST_CASE("pre-registered verdict from per-cell intervals", "[stats]") {
  const double nan = std::nan("");
  const Interval below{-0.3, -0.1}, above{0.1, 0.4}, straddle{-0.2, 0.2}, none{nan, nan};
  REQUIRE(std::string(name(Verdict::holds)) == "holds");
  REQUIRE(std::string(name(Verdict::reversed)) == "reversed");
  REQUIRE(std::string(name(Verdict::inconclusive)) == "inconclusive");

  REQUIRE(verdict_from_intervals(std::vector<Interval>{below, below, below}) == Verdict::holds);
  REQUIRE(verdict_from_intervals(std::vector<Interval>{below, straddle, below}) == Verdict::holds);
  REQUIRE(verdict_from_intervals(std::vector<Interval>{above, straddle, above}) == Verdict::reversed);
  REQUIRE(verdict_from_intervals(std::vector<Interval>{below, above, straddle}) == Verdict::inconclusive);
  REQUIRE(verdict_from_intervals(std::vector<Interval>{below, straddle, straddle}) == Verdict::inconclusive);
  // An interval touching 0 does not lie entirely on one side.
  REQUIRE(verdict_from_intervals(std::vector<Interval>{{-1, 0}, {-1, 0}, {-1, 0}}) == Verdict::inconclusive);
  // NaN cells count in the denominator but never vote.
  REQUIRE(verdict_from_intervals(std::vector<Interval>{below, below, none}) == Verdict::holds);
  REQUIRE(verdict_from_intervals(std::vector<Interval>{below, none, none}) == Verdict::inconclusive);
  REQUIRE(verdict_from_intervals(std::vector<Interval>{above, above, none}) == Verdict::reversed);
  REQUIRE(verdict_from_intervals(std::vector<Interval>{none, none, none}) == Verdict::inconclusive);
  REQUIRE(verdict_from_intervals(std::vector<Interval>{}) == Verdict::inconclusive);
  // A stricter fraction.
  REQUIRE(verdict_from_intervals(std::vector<Interval>{below, below, straddle}, 1.0) == Verdict::inconclusive);
  REQUIRE(verdict_from_intervals(std::vector<Interval>{below, below, below}, 1.0) == Verdict::holds);
  REQUIRE_THROWS_AS(verdict_from_intervals(std::vector<Interval>{below}, 0.0), seqswap::Error);
}

TEST_CASE("a sample against an interpolated reference, and where a value falls among references", "[stats]") {
  // Single values: the point interval 5 − (0.25·2 + 0.75·6) = 0.
  const std::vector<double> a{5.0}, b{2.0}, c{6.0};
  const Interval p = bootstrap_mean_minus_interpolation(a, b, c, 0.25);
  REQUIRE(p.lo == Approx(0.0).margin(1e-12));
  REQUIRE(p.hi == Approx(0.0).margin(1e-12));
  // w = 1: c does not count (it may even be empty).
  const Interval only_b = bootstrap_mean_minus_interpolation(a, b, std::vector<double>{}, 1.0);
  REQUIRE(only_b.lo == 3.0);
  // Resampled means: a in [10, 12], b in [0, 2], c in [4, 6]; with w = 0.5 the reference lies in
  // [2, 4], so the difference lies in [6, 10] and the interval contains 8 (the full-sample value).
  const std::vector<double> a3{10, 11, 12}, b3{0, 1, 2}, c3{4, 5, 6};
  const Interval d = bootstrap_mean_minus_interpolation(a3, b3, c3, 0.5, 5000, 0.95, 3);
  REQUIRE(d.lo >= 6.0);
  REQUIRE(d.hi <= 10.0);
  REQUIRE(d.lo < 8.0);
  REQUIRE(d.hi > 8.0);
  REQUIRE(std::isnan(bootstrap_mean_minus_interpolation(a3, b3, std::vector<double>{}, 0.5).lo));
  REQUIRE(std::isnan(bootstrap_mean_minus_interpolation(a3, b3, c3, 1.5).lo));
  REQUIRE_THROWS_AS(bootstrap_mean_minus_interpolation(a3, b3, c3, 0.5, 0), seqswap::Error);

  // References at accuracies 0.82, 0.87, 0.85 (any order).
  const std::vector<double> xs{0.82, 0.87, 0.85};
  const auto mid = bracket(xs, 0.86);
  REQUIRE(mid.has_value());
  REQUIRE(mid->lo == 2);  // 0.85
  REQUIRE(mid->hi == 1);  // 0.87
  REQUIRE(mid->w == Approx(0.5));
  const auto at = bracket(xs, 0.85);
  REQUIRE(at->lo == 2);
  REQUIRE(at->w == Approx(1.0));
  REQUIRE_FALSE(bracket(xs, 0.90, 0.005).has_value());  // 3 points above the range
  const auto near = bracket(xs, 0.874, 0.005);           // within the slack: the nearest end
  REQUIRE(near->lo == 1);
  REQUIRE(near->hi == 1);
  REQUIRE(near->w == 1.0);
  REQUIRE_FALSE(bracket(std::vector<double>{}, 0.5).has_value());
  REQUIRE_FALSE(bracket(xs, std::nan("")).has_value());
}
