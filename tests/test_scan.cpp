// The linear-recurrence scan: chunked parallel form == sequential reference, forward and
// backward, both directions, ragged batches, lengths 1..5000, a in (0, 1) and near 1; the
// backward against finite differences.
#include <cmath>

#include "seqswap/core/rng.hpp"
#include "seqswap/ops/scan.hpp"
#include "test_util.hpp"

using namespace seqswap;

namespace {
template <class T>
struct Case {
  std::vector<index_t> offsets;
  index_t C;
  std::vector<T> a, b;
};
template <class T>
Case<T> make_case(const std::vector<index_t>& lengths, index_t C, double a_lo, double a_hi, std::uint64_t seed) {
  Case<T> k{{0}, C, {}, {}};
  for (auto n : lengths) k.offsets.push_back(k.offsets.back() + n);
  Rng rng(seed);
  const auto total = static_cast<std::size_t>(k.offsets.back() * C);
  k.a.resize(total);
  k.b.resize(total);
  for (auto& v : k.a) v = T(a_lo + (a_hi - a_lo) * rng.uniform());
  for (auto& v : k.b) v = T(rng.normal());
  return k;
}
}  // namespace

TEMPLATE_TEST_CASE("chunked scan equals the sequential reference", "[scan]", float, double) {
  const double tol = std::is_same_v<TestType, float> ? 1e-4 : 1e-5;
  const std::vector<std::vector<index_t>> shapes = {{1}, {2, 1, 3}, {17}, {50, 1, 17}, {5000}, {777, 3000, 5}};
  for (const auto& lengths : shapes)
    for (auto [lo, hi] : {std::pair{0.0, 1.0}, std::pair{0.999, 1.0}})
      for (bool reverse : {false, true})
        for (index_t chunk : {1, 7, 64, 256}) {
          auto k = make_case<TestType>(lengths, 5, lo, hi, 42);
          const auto n = k.a.size();
          std::vector<TestType> ref(n), par(n);
          ops::linear_scan_reference(k.a.data(), k.b.data(), ref.data(), k.offsets.data(),
                                     index_t(lengths.size()), k.C, reverse);
          ops::linear_scan(k.a.data(), k.b.data(), par.data(), k.offsets.data(),
                           index_t(lengths.size()), k.C,
                           {.chunk = chunk, .reverse = reverse, .path = ops::ScanPath::chunked});
          INFO("lengths[0] " << lengths[0] << " a in [" << lo << "," << hi << ") reverse " << reverse
                             << " chunk " << chunk);
          test_util::require_close(par.data(), ref, tol, "h");

          // backward: chunked vs reference
          std::vector<TestType> dh(n), da1(n), db1(n), da2(n), db2(n);
          Rng rng(3);
          for (auto& v : dh) v = TestType(rng.normal());
          ops::linear_scan_backward(k.a.data(), ref.data(), dh.data(), da1.data(), db1.data(),
                                    k.offsets.data(), index_t(lengths.size()), k.C,
                                    {.chunk = 0, .reverse = reverse});
          ops::linear_scan_backward(k.a.data(), ref.data(), dh.data(), da2.data(), db2.data(),
                                    k.offsets.data(), index_t(lengths.size()), k.C,
                                    {.chunk = chunk, .reverse = reverse, .path = ops::ScanPath::chunked});
          test_util::require_close(da2.data(), da1, tol, "da");
          test_util::require_close(db2.data(), db1, tol, "db");
        }
}

TEMPLATE_TEST_CASE("channel-blocked scan equals the sequential reference", "[scan]", float, double) {
  const double tol = std::is_same_v<TestType, float> ? 1e-4 : 1e-5;
  const std::vector<std::vector<index_t>> shapes = {{1}, {2, 1, 3}, {50, 0, 17}, {777, 5}};
  for (const auto& lengths : shapes)
    for (const index_t C : {index_t(5), index_t(256), index_t(300)})
      for (bool reverse : {false, true})
        for (const auto path : {ops::ScanPath::channels, ops::ScanPath::automatic}) {
          auto k = make_case<TestType>(lengths, C, 0.9, 1.0, 7);
          const auto n = k.a.size();
          std::vector<TestType> ref(n), par(n), dh(n), da1(n), db1(n), da2(n), db2(n);
          const auto batch = index_t(lengths.size());
          ops::linear_scan_reference(k.a.data(), k.b.data(), ref.data(), k.offsets.data(), batch, C, reverse);
          ops::linear_scan(k.a.data(), k.b.data(), par.data(), k.offsets.data(), batch, C,
                           {.chunk = 64, .reverse = reverse, .path = path});
          INFO("lengths[0] " << lengths[0] << " C " << C << " reverse " << reverse);
          test_util::require_close(par.data(), ref, tol, "h");
          // in place (h aliases b), as the mixers call it
          std::vector<TestType> inplace = k.b;
          ops::linear_scan(k.a.data(), inplace.data(), inplace.data(), k.offsets.data(), batch, C,
                           {.chunk = 64, .reverse = reverse, .path = path});
          test_util::require_close(inplace.data(), ref, tol, "h in place");
          Rng rng(5);
          for (auto& v : dh) v = TestType(rng.normal());
          ops::linear_scan_backward(k.a.data(), ref.data(), dh.data(), da1.data(), db1.data(),
                                    k.offsets.data(), batch, C, {.chunk = 0, .reverse = reverse});
          ops::linear_scan_backward(k.a.data(), ref.data(), dh.data(), da2.data(), db2.data(),
                                    k.offsets.data(), batch, C,
                                    {.chunk = 64, .reverse = reverse, .path = path});
          test_util::require_close(da2.data(), da1, tol, "da");
          test_util::require_close(db2.data(), db1, tol, "db");
        }
}

TEST_CASE("scan backward matches finite differences", "[scan]") {
  for (bool reverse : {false, true}) {
    auto k = make_case<double>({4, 1, 6}, 3, 0.2, 0.95, 9);
    const auto n = k.a.size();
    std::vector<double> h(n), dh(n), da(n), db(n);
    Rng rng(5);
    for (auto& v : dh) v = rng.normal();
    auto f = [&](const std::vector<double>& a, const std::vector<double>& b) {
      std::vector<double> hh(n);
      ops::linear_scan_reference(a.data(), b.data(), hh.data(), k.offsets.data(), 3, 3, reverse);
      double s = 0;
      for (std::size_t i = 0; i < n; ++i) s += hh[i] * dh[i];
      return s;
    };
    ops::linear_scan_reference(k.a.data(), k.b.data(), h.data(), k.offsets.data(), 3, 3, reverse);
    ops::linear_scan_backward(k.a.data(), h.data(), dh.data(), da.data(), db.data(), k.offsets.data(),
                              3, 3, {.chunk = 2, .reverse = reverse});
    const double eps = 1e-6;
    for (std::size_t i = 0; i < n; ++i) {
      auto a = k.a, b = k.b;
      a[i] += eps;
      const double fa = f(a, k.b);
      a[i] -= 2 * eps;
      const double fa2 = f(a, k.b);
      REQUIRE(da[i] == Approx((fa - fa2) / (2 * eps)).margin(1e-7));
      b[i] += eps;
      const double fb = f(k.a, b);
      b[i] -= 2 * eps;
      const double fb2 = f(k.a, b);
      REQUIRE(db[i] == Approx((fb - fb2) / (2 * eps)).margin(1e-7));
    }
  }
}
