// Small statistics for reports: mean, sample standard deviation, ranks with ties, Spearman ρ,
// and a median-of-repetitions timer (synchronous host code: the clock brackets the work).
// Uncertainty for the study: type-7 percentiles, percentile-bootstrap intervals for a mean, a
// difference of means and Spearman's ρ, a permutation p-value for ρ, and the pre-registered
// verdict rule over per-cell intervals.
//
// Everything random is deterministic given its seed: each call owns a std::mt19937_64 seeded from
// the std::uint64_t argument (no global state), and draws indices with its own unbiased bounded
// draw and Fisher–Yates shuffle rather than std::uniform_int_distribution / std::shuffle, whose
// outputs differ between standard libraries. Same seed, same inputs -> same numbers everywhere.
#pragma once
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <optional>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "seqswap/core/error.hpp"

namespace seqswap::analysis {

inline double mean(std::span<const double> x) {
  if (x.empty()) return std::numeric_limits<double>::quiet_NaN();
  return std::accumulate(x.begin(), x.end(), 0.0) / double(x.size());
}
// Sample standard deviation (n − 1); NaN for fewer than two values.
inline double sample_std(std::span<const double> x) {
  if (x.size() < 2) return std::numeric_limits<double>::quiet_NaN();
  const double m = mean(x);
  double s = 0;
  for (double v : x) s += (v - m) * (v - m);
  return std::sqrt(s / double(x.size() - 1));
}

// Ranks 1..n, ties sharing the average of their ranks.
inline std::vector<double> ranks(std::span<const double> x) {
  std::vector<std::size_t> idx(x.size());
  std::iota(idx.begin(), idx.end(), std::size_t{0});
  std::stable_sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) { return x[a] < x[b]; });
  std::vector<double> r(x.size());
  for (std::size_t i = 0; i < idx.size();) {
    std::size_t j = i;
    while (j + 1 < idx.size() && x[idx[j + 1]] == x[idx[i]]) ++j;
    const double avg = 0.5 * double(i + j) + 1.0;
    for (std::size_t k = i; k <= j; ++k) r[idx[k]] = avg;
    i = j + 1;
  }
  return r;
}

namespace detail {
// Pearson correlation of two equally long vectors (here: ranks); NaN when either side is constant.
inline double pearson(std::span<const double> rx, std::span<const double> ry) {
  const double mx = mean(rx), my = mean(ry);
  double sxy = 0, sxx = 0, syy = 0;
  for (std::size_t i = 0; i < rx.size(); ++i) {
    sxy += (rx[i] - mx) * (ry[i] - my);
    sxx += (rx[i] - mx) * (rx[i] - mx);
    syy += (ry[i] - my) * (ry[i] - my);
  }
  if (sxx == 0 || syy == 0) return std::numeric_limits<double>::quiet_NaN();
  return sxy / std::sqrt(sxx * syy);
}
}  // namespace detail

// Spearman's ρ: Pearson correlation of the ranks; NaN when either side is constant.
inline double spearman(std::span<const double> x, std::span<const double> y) {
  if (x.size() != y.size() || x.size() < 2) return std::numeric_limits<double>::quiet_NaN();
  return detail::pearson(ranks(x), ranks(y));
}

// Median wall time of `reps` calls of f after `warmup` untimed calls, in milliseconds.
template <class F>
double median_ms(F&& f, int warmup = 1, int reps = 5) {
  for (int i = 0; i < warmup; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < std::max(1, reps); ++i) {
    const auto a = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
  }
  std::nth_element(t.begin(), t.begin() + long(t.size() / 2), t.end());
  return t[t.size() / 2];
}

// ---------------------------------------------------------------------------------------------
// Percentiles and bootstrap intervals
// ---------------------------------------------------------------------------------------------

// A closed interval [lo, hi]; both NaN when there is no interval (empty or degenerate input).
struct Interval {
  double lo, hi;
};

// The q-quantile (q in [0, 1]) by linear interpolation between order statistics, "type 7"
// (numpy's default): with the sorted values v_0..v_{n-1}, h = (n − 1)·q, the result is
// v_⌊h⌋ + (h − ⌊h⌋)·(v_⌊h⌋+1 − v_⌊h⌋). E.g. {1, 2, 3, 4} -> 2.5 at q = 0.5, 1.75 at q = 0.25.
// NaN for an empty vector or one holding a NaN; throws seqswap::Error when q is outside [0, 1].
inline double percentile(std::vector<double> v, double q) {
  check(q >= 0.0 && q <= 1.0, "percentile: expected q in [0, 1], found ", q);
  constexpr double nan = std::numeric_limits<double>::quiet_NaN();
  if (v.empty() || std::any_of(v.begin(), v.end(), [](double t) { return std::isnan(t); }))
    return nan;
  std::sort(v.begin(), v.end());
  const double h = double(v.size() - 1) * q;
  const auto lo = std::size_t(std::floor(h));
  if (lo + 1 >= v.size()) return v.back();
  return v[lo] + (h - double(lo)) * (v[lo + 1] - v[lo]);
}

namespace detail {

inline constexpr Interval nan_interval{std::numeric_limits<double>::quiet_NaN(),
                                       std::numeric_limits<double>::quiet_NaN()};

inline bool has_nan(std::span<const double> x) {
  return std::any_of(x.begin(), x.end(), [](double t) { return std::isnan(t); });
}

// Uniform index in [0, n), n > 0, without modulo bias (reject the 2^64 mod n lowest draws). Uses
// only the engine's raw output, which the standard fixes, so results agree across libraries.
inline std::size_t draw_index(std::mt19937_64& rng, std::size_t n) {
  const auto m = std::uint64_t(n);
  const std::uint64_t threshold = (0 - m) % m;  // 2^64 mod m
  std::uint64_t r = rng();
  while (r < threshold) r = rng();
  return std::size_t(r % m);
}

// Fisher–Yates shuffle with draw_index (std::shuffle's draws are implementation-defined).
template <class T>
void shuffle(std::vector<T>& v, std::mt19937_64& rng) {
  for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[draw_index(rng, i)]);
}

// Fills out (pre-sized) with values of x drawn uniformly with replacement.
inline void resample(std::span<const double> x, std::span<double> out, std::mt19937_64& rng) {
  for (double& o : out) o = x[draw_index(rng, x.size())];
}

inline void check_bootstrap_args(const char* who, int resamples, double level) {
  check(resamples >= 1, who, ": expected resamples >= 1, found ", resamples);
  check(level > 0.0 && level < 1.0, who, ": expected level in (0, 1), found ", level);
}

// The shared percentile bootstrap: `resamples` times, statistic(rng) draws one bootstrap
// replicate (NaN = this resample has no value, e.g. ρ of a constant side); the interval is the
// ((1 − level)/2, (1 + level)/2) type-7 percentiles of the valid replicates. NaN interval when
// fewer than half of the resamples are valid.
template <class Statistic>
Interval percentile_bootstrap(int resamples, double level, std::uint64_t seed, Statistic&& statistic) {
  std::mt19937_64 rng(seed);
  std::vector<double> reps;
  reps.reserve(std::size_t(resamples));
  for (int i = 0; i < resamples; ++i) {
    const double r = statistic(rng);
    if (!std::isnan(r)) reps.push_back(r);
  }
  if (2 * reps.size() < std::size_t(resamples)) return nan_interval;
  const double tail = 0.5 * (1.0 - level);
  const double lo = percentile(reps, tail);
  const double hi = percentile(std::move(reps), 1.0 - tail);
  return {lo, hi};
}

}  // namespace detail

// Percentile-bootstrap interval (central, coverage `level`) of mean(a): `resamples` resamples of
// a with replacement, seeded by `seed`. A single value or a constant sample gives a point
// interval. NaN interval for empty input or input holding a NaN. Throws seqswap::Error when
// resamples < 1 or level is outside (0, 1).
inline Interval bootstrap_mean(std::span<const double> a, int resamples = 10000, double level = 0.95,
                               std::uint64_t seed = 0) {
  detail::check_bootstrap_args("bootstrap_mean", resamples, level);
  if (a.empty() || detail::has_nan(a)) return detail::nan_interval;
  std::vector<double> ra(a.size());
  return detail::percentile_bootstrap(resamples, level, seed, [&](std::mt19937_64& rng) {
    detail::resample(a, ra, rng);
    return mean(ra);
  });
}

// Percentile-bootstrap interval of mean(a) − mean(b), resampling a and b independently with
// replacement (a's draws, then b's, from one engine seeded by `seed`). One value on each side (or
// constant samples) gives the point interval lo = hi = the difference. NaN interval when either
// side is empty or holds a NaN. Throws seqswap::Error when resamples < 1 or level ∉ (0, 1).
inline Interval bootstrap_mean_difference(std::span<const double> a, std::span<const double> b,
                                          int resamples = 10000, double level = 0.95,
                                          std::uint64_t seed = 0) {
  detail::check_bootstrap_args("bootstrap_mean_difference", resamples, level);
  if (a.empty() || b.empty() || detail::has_nan(a) || detail::has_nan(b)) return detail::nan_interval;
  std::vector<double> ra(a.size()), rb(b.size());
  return detail::percentile_bootstrap(resamples, level, seed, [&](std::mt19937_64& rng) {
    detail::resample(a, ra, rng);
    detail::resample(b, rb, rng);
    return mean(ra) - mean(rb);
  });
}

// Percentile-bootstrap interval of mean(a) − (w·mean(b) + (1 − w)·mean(c)): a sample against a
// reference interpolated between two others (claim 3: a halting teacher's gap against the gap of
// dense teachers of the same accuracy). a, b and c are resampled independently (in that order,
// one engine seeded by `seed`); with w = 1, c is still drawn but does not count. Single values
// give the point interval. NaN interval when a side that counts is empty or holds a NaN, or
// w ∉ [0, 1]. Throws seqswap::Error when resamples < 1 or level ∉ (0, 1).
inline Interval bootstrap_mean_minus_interpolation(std::span<const double> a, std::span<const double> b,
                                                   std::span<const double> c, double w, int resamples = 10000,
                                                   double level = 0.95, std::uint64_t seed = 0) {
  detail::check_bootstrap_args("bootstrap_mean_minus_interpolation", resamples, level);
  if (!(w >= 0 && w <= 1)) return detail::nan_interval;
  const auto bad = [](std::span<const double> x) { return x.empty() || detail::has_nan(x); };
  if (bad(a) || bad(b) || (w < 1 && bad(c))) return detail::nan_interval;
  std::vector<double> ra(a.size()), rb(b.size()), rc(c.size());
  return detail::percentile_bootstrap(resamples, level, seed, [&](std::mt19937_64& rng) {
    detail::resample(a, ra, rng);
    detail::resample(b, rb, rng);
    if (!c.empty()) detail::resample(c, rc, rng);
    return mean(ra) - (w * mean(rb) + (w < 1 ? (1 - w) * mean(rc) : 0.0));
  });
}

// Where x falls among reference points xs (any order): the indices of the two nearest points
// bracketing it and the weight w of the first, so that x = w·xs[lo] + (1 − w)·xs[hi]. Outside the
// range of xs by at most `slack`, the nearest end (w = 1, lo = hi). Empty when xs is empty, x is
// farther outside than `slack`, or anything is NaN.
struct Bracket {
  std::size_t lo = 0, hi = 0;
  double w = 1;
};
inline std::optional<Bracket> bracket(std::span<const double> xs, double x, double slack = 0) {
  if (xs.empty() || std::isnan(x) || detail::has_nan(xs)) return std::nullopt;
  std::size_t below = xs.size(), above = xs.size();  // the nearest point <= x and >= x
  for (std::size_t i = 0; i < xs.size(); ++i) {
    if (xs[i] <= x && (below == xs.size() || xs[i] > xs[below])) below = i;
    if (xs[i] >= x && (above == xs.size() || xs[i] < xs[above])) above = i;
  }
  if (below == xs.size() || above == xs.size()) {
    const std::size_t end = below == xs.size() ? above : below;  // x is outside: the nearest end
    if (std::abs(xs[end] - x) > slack) return std::nullopt;
    return Bracket{end, end, 1.0};
  }
  if (xs[above] == xs[below]) return Bracket{below, below, 1.0};
  return Bracket{below, above, (xs[above] - x) / (xs[above] - xs[below])};
}

// Percentile-bootstrap interval of Spearman's ρ, resampling (x_i, y_i) pairs with replacement.
// Resamples whose ρ is NaN (a side constant after resampling) are skipped; NaN interval when fewer
// than half of the resamples are valid, or when x and y differ in length or have fewer than two
// pairs. Throws seqswap::Error when resamples < 1 or level ∉ (0, 1).
inline Interval bootstrap_spearman(std::span<const double> x, std::span<const double> y,
                                   int resamples = 10000, double level = 0.95, std::uint64_t seed = 0) {
  detail::check_bootstrap_args("bootstrap_spearman", resamples, level);
  if (x.size() != y.size() || x.size() < 2) return detail::nan_interval;
  std::vector<double> rx(x.size()), ry(y.size());
  return detail::percentile_bootstrap(resamples, level, seed, [&](std::mt19937_64& rng) {
    for (std::size_t i = 0; i < rx.size(); ++i) {
      const std::size_t k = detail::draw_index(rng, x.size());
      rx[i] = x[k];
      ry[i] = y[k];
    }
    return spearman(rx, ry);
  });
}

// ---------------------------------------------------------------------------------------------
// Permutation test for Spearman's ρ
// ---------------------------------------------------------------------------------------------

// Two-sided permutation p-value of Spearman's ρ(x, y) under "no association": a permutation of y
// counts when its |ρ| >= |observed ρ| − 1e-12.
//   n <= 8: exact — all n! orderings of y (the identity included) are enumerated and
//           p = count / n!; `permutations` is then only validated.
//   n > 8:  Monte Carlo — `permutations` uniform random shuffles of y seeded by `seed`, and
//           p = (1 + count) / (1 + permutations), the observed ordering counted once.
// E.g. x = y = {1, 2, 3, 4}: only ρ = ±1 reach |ρ| = 1, so p = 2/24. NaN when ρ is NaN (lengths
// differ, fewer than two pairs, a constant side). Throws seqswap::Error when permutations < 1.
inline double spearman_permutation_p(std::span<const double> x, std::span<const double> y,
                                     int permutations = 10000, std::uint64_t seed = 0) {
  check(permutations >= 1, "spearman_permutation_p: expected permutations >= 1, found ", permutations);
  constexpr double nan = std::numeric_limits<double>::quiet_NaN();
  if (std::isnan(spearman(x, y))) return nan;
  // Ranks are invariant under permuting y's positions, so rank once and permute the ranks.
  const auto rx = ranks(x), ry = ranks(y);
  const double observed = std::abs(detail::pearson(rx, ry)) - 1e-12;
  const std::size_t n = rx.size();
  std::vector<double> perm(n);
  if (n <= 8) {
    std::vector<std::size_t> idx(n);
    std::iota(idx.begin(), idx.end(), std::size_t{0});
    std::uint64_t count = 0, total = 0;
    do {
      for (std::size_t i = 0; i < n; ++i) perm[i] = ry[idx[i]];
      if (std::abs(detail::pearson(rx, perm)) >= observed) ++count;
      ++total;
    } while (std::next_permutation(idx.begin(), idx.end()));
    return double(count) / double(total);
  }
  std::mt19937_64 rng(seed);
  perm = ry;
  std::uint64_t count = 0;
  for (int i = 0; i < permutations; ++i) {
    detail::shuffle(perm, rng);  // a shuffle of a uniform permutation is again uniform
    if (std::abs(detail::pearson(rx, perm)) >= observed) ++count;
  }
  return double(1 + count) / double(1 + std::uint64_t(permutations));
}

// ---------------------------------------------------------------------------------------------
// The pre-registered verdict
// ---------------------------------------------------------------------------------------------

// Outcome of the study's claim "drop(sparsest) < drop(densest)".
enum class Verdict { holds, reversed, inconclusive };

inline const char* name(Verdict v) {
  switch (v) {
    case Verdict::holds: return "holds";
    case Verdict::reversed: return "reversed";
    case Verdict::inconclusive: return "inconclusive";
  }
  return "unknown";
}

// The pre-registered rule over per-cell intervals of Δ = drop(sparsest) − drop(densest):
//   holds     when the interval lies entirely below 0 (hi < 0) in at least `fraction` of the cells;
//   reversed  when it lies entirely above 0 (lo > 0) in at least `fraction` of the cells;
//   inconclusive otherwise, for no cells, and when both would qualify (possible only when
//   fraction <= 1/2).
// Cells whose interval has a NaN end count in the denominator but never vote. The comparison
// allows 1e-9 slack so that e.g. 2 of 3 cells meets fraction = 2/3 despite rounding. Throws
// seqswap::Error when fraction is outside (0, 1].
inline Verdict verdict_from_intervals(std::span<const Interval> cells, double fraction = 2.0 / 3.0) {
  check(fraction > 0.0 && fraction <= 1.0, "verdict_from_intervals: expected fraction in (0, 1], found ",
        fraction);
  if (cells.empty()) return Verdict::inconclusive;
  std::size_t below = 0, above = 0;
  for (const Interval& c : cells) {
    if (std::isnan(c.lo) || std::isnan(c.hi)) continue;
    if (c.hi < 0) ++below;
    else if (c.lo > 0) ++above;
  }
  const double needed = fraction * double(cells.size()) - 1e-9;
  const bool holds = double(below) >= needed, reversed = double(above) >= needed;
  if (holds && !reversed) return Verdict::holds;
  if (reversed && !holds) return Verdict::reversed;
  return Verdict::inconclusive;
}

}  // namespace seqswap::analysis
