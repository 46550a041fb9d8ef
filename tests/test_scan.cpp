// The linear-recurrence scan: chunked and channel-blocked parallel forms == sequential
// reference, forward and backward, both directions, ragged batches, lengths 1..5000, a in (0, 1)
// and near 1; the backward against finite differences. The fused selective scan against its
// recurrence written out.
#include <cmath>

#include "seqswap/core/rng.hpp"
#include "seqswap/ops/scan.hpp"
#include "seqswap/ops/scan_options.hpp"  // ScanOptions / ScanPath (shared with the device scans)
#include "seqswap/ops/selective_scan.hpp"
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
          std::vector<TestType> inplace = k.b;  // h aliases b, as the mixers call it
          ops::linear_scan(k.a.data(), inplace.data(), inplace.data(), k.offsets.data(),
                           index_t(lengths.size()), k.C,
                           {.chunk = chunk, .reverse = reverse, .path = ops::ScanPath::chunked});
          test_util::require_close(inplace.data(), ref, tol, "h in place");

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
  const std::vector<std::vector<index_t>> shapes = {{1}, {2, 1, 3}, {50, 0, 17}, {777, 5}, {40}};
  for (const auto& lengths : shapes)
    for (const index_t C : {index_t(5), index_t(256), index_t(300), index_t(3001)})
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

// ops::selective_scan_forward against the recurrence written out with std::exp, state by
// state: outputs (assigned and accumulated), checkpoints, both directions, ragged batches and
// the three state-size paths (8 and 16 at compile time, 5 dynamic).
TEMPLATE_TEST_CASE("selective_scan_forward equals the plain recurrence", "[scan][selective]", float, double) {
  const double tol = std::is_same_v<TestType, float> ? 1e-5 : 1e-12;
  const std::vector<index_t> lengths{7, 0, 1, 13};
  std::vector<index_t> offsets{0};
  for (const index_t n : lengths) offsets.push_back(offsets.back() + n);
  const index_t batch = index_t(lengths.size()), T = offsets.back(), E = 3, chunk = 4;
  for (const index_t S : {index_t(5), index_t(8), index_t(16)})
    for (const bool reverse : {false, true}) {
      INFO("S " << S << " reverse " << reverse);
      Rng rng(11);
      const index_t ldbc = 2 * S + 1;  // B, C and one unrelated column per row
      std::vector<TestType> delta(std::size_t(T * E)), u(delta.size()), bc(std::size_t(T * ldbc)),
          A(static_cast<std::size_t>(E * S)), D(static_cast<std::size_t>(E));
      for (auto& v : delta) v = TestType(0.05 + 0.1 * std::abs(rng.normal()));
      for (auto& v : u) v = TestType(rng.normal());
      for (auto& v : bc) v = TestType(rng.normal());
      for (auto& v : A) v = TestType(-0.5 - std::abs(rng.normal()));
      for (auto& v : D) v = TestType(rng.normal());
      // reference: outputs and the state entering every chunk-th token
      std::vector<TestType> y_ref(delta.size()), ck_ref;
      std::vector<index_t> ck_offs{0};
      for (index_t b = 0; b < batch; ++b) ck_offs.push_back(ck_offs.back() + (lengths[b] + chunk - 1) / chunk);
      ck_ref.assign(std::size_t(ck_offs.back() * E * S), TestType(0));
      for (index_t b = 0; b < batch; ++b)
        for (index_t e = 0; e < E; ++e) {
          std::vector<double> h(std::size_t(S), 0.0);
          const index_t n = lengths[b];
          for (index_t k = 0; k < n; ++k) {
            if (k % chunk == 0)
              for (index_t s = 0; s < S; ++s)
                ck_ref[std::size_t(((ck_offs[b] + k / chunk) * E + e) * S + s)] = TestType(h[std::size_t(s)]);
            const index_t t = offsets[b] + (reverse ? n - 1 - k : k);
            const double dl = delta[std::size_t(t * E + e)], uu = u[std::size_t(t * E + e)];
            double yv = D[std::size_t(e)] * uu;
            for (index_t s = 0; s < S; ++s) {
              auto& hs = h[std::size_t(s)];
              hs = std::exp(dl * A[std::size_t(e * S + s)]) * hs + dl * uu * bc[std::size_t(t * ldbc + s)];
              yv += bc[std::size_t(t * ldbc + S + s)] * hs;
            }
            y_ref[std::size_t(t * E + e)] = TestType(yv);
          }
        }
      std::vector<TestType> y(delta.size(), TestType(0)), ck(ck_ref.size(), TestType(-7));
      ops::SelectiveScanArgs<TestType> args{.delta = delta.data(), .u = u.data(), .bc = bc.data(), .ldbc = ldbc,
                                            .A = A.data(), .Dskip = D.data(), .offsets = offsets.data(),
                                            .batch = batch, .E = E, .S = S, .reverse = reverse, .y = y.data(),
                                            .ckpt = ck.data(), .ck_offs = ck_offs.data(), .chunk = chunk};
      ops::selective_scan_forward(args);
      test_util::require_close(y.data(), y_ref, tol, "y");
      test_util::require_close(ck.data(), ck_ref, tol, "checkpoints");
      // accumulate: a second call adds the same outputs again
      args.accumulate = true;
      args.ckpt = nullptr;
      ops::selective_scan_forward(args);
      for (auto& v : y_ref) v *= 2;
      test_util::require_close(y.data(), y_ref, tol, "y accumulated");
    }
}

TEST_CASE("selective_scan_forward rejects a state it cannot hold", "[scan][selective]") {
  std::vector<float> v(1024, 0.0f);
  const std::vector<index_t> offsets{0, 1};
  ops::SelectiveScanArgs<float> a{.delta = v.data(), .u = v.data(), .bc = v.data(), .ldbc = 600, .A = v.data(),
                                  .Dskip = v.data(), .offsets = offsets.data(), .batch = 1, .E = 1,
                                  .S = ops::kSelectiveScanMaxState + 1, .y = v.data()};
  CHECK_THROWS_WITH(ops::selective_scan_forward(a), Catch::Contains("state size"));
  a.S = 4;
  a.ckpt = v.data();  // checkpoints without offsets or chunk
  CHECK_THROWS_WITH(ops::selective_scan_forward(a), Catch::Contains("checkpoints"));
}

TEST_CASE("channel-blocked scan: block widths give every thread work in whole cache lines", "[scan]") {
  for (const int threads : {1, 2, 3, 8, 16})
    for (const index_t batch : {1, 2, 3, 7, 128})
      for (const index_t C : {1, 5, 16, 192, 300, 3072}) {
        const index_t w = ops::detail::scan_channel_width(batch, C, threads);
        INFO("threads " << threads << " batch " << batch << " C " << C << " width " << w);
        REQUIRE(w >= 1);
        REQUIRE(w <= C);
        REQUIRE((w == C || w % 16 == 0));
        const index_t items = batch * ((C + w - 1) / w);
        // at least half the threads have an item, or every cache line of channels is one
        REQUIRE(2 * items >= std::min<index_t>(threads, batch * ((C + 15) / 16)));
        if (batch % threads == 0 || batch >= 4 * threads)
          REQUIRE(w == C);  // sequences share out evenly: whole rows, one stream each
      }
}
