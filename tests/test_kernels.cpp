// The host kernels under the teacher's hot path against plain loops: the register-tiled small
// products and the packet transpose (ops/small_gemm.hpp), the panel products of the linear
// maps (ops/panel_gemm.hpp), the packet exp of non-positive values
// (ops/packet_exp.hpp) and of a softmax row (ops/softmax.hpp), and the row-split / chunked forms of the linear map and layer norm
// (ops/gemm.hpp, ops/layer_norm.hpp, host::chunked_row_sum), including that they give the same
// bits on one thread and on two (y, dx, dW, db, dgamma, dbeta).
#include <cmath>
#include <limits>
#include <vector>

#include "seqswap/backend/host.hpp"
#include "seqswap/core/rng.hpp"
#include "seqswap/ops/gemm.hpp"
#include "seqswap/ops/layer_norm.hpp"
#include "seqswap/ops/packet_exp.hpp"
#include "seqswap/ops/panel_gemm.hpp"
#include "seqswap/ops/small_gemm.hpp"
#include "seqswap/ops/softmax.hpp"
#include "test_util.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

using namespace seqswap;

namespace {
template <class T>
std::vector<T> random_vec(std::size_t n, std::uint64_t seed) {
  Rng r(seed);
  std::vector<T> v(n);
  for (auto& x : v) x = T(r.normal());
  return v;
}

// Runs f with `threads` OpenMP threads and restores the previous count.
template <class F>
void with_threads(int threads, F&& f) {
#if defined(_OPENMP)
  const int before = omp_get_max_threads();
  omp_set_num_threads(threads);
  f();
  omp_set_num_threads(before);
#else
  (void)threads;
  f();
#endif
}
}  // namespace

TEMPLATE_TEST_CASE("small_gemm equals the plain triple loop at odd sizes, both layouts of A", "[ops][small_gemm]",
                   float, double) {
  using T = TestType;
  const T tol = std::is_same_v<T, float> ? T(2e-5) : T(1e-12);
  std::uint64_t seed = 1;
  for (std::int64_t m : {1, 3, 4, 5, 17, 50})
    for (std::int64_t w : {1, 7, 8, 9, 16, 17, 50})
      for (std::int64_t k : {1, 5, 16, 50, 600})  // 600: past the padded tail's 512
        for (bool transposed_a : {false, true})
          for (bool accumulate : {false, true}) {
            const std::int64_t lda = k + 3, ldb = w + 2, ldc = w + 5;
            // A stored (m, k) with row stride lda, or its transpose (k, m) with row stride m + 1
            const std::int64_t a_rows = transposed_a ? k : m, a_ld = transposed_a ? m + 1 : lda;
            auto a = random_vec<T>(std::size_t(a_rows * a_ld), seed++);
            auto b = random_vec<T>(std::size_t(k * ldb), seed++);
            auto c = random_vec<T>(std::size_t(m * ldc), seed++);
            const auto c0 = c;
            const T alpha = T(0.75);
            const ops::SmallGemmArgs g{.m = m, .w = w, .k = k,
                                       .a_row = transposed_a ? 1 : lda, .a_col = transposed_a ? a_ld : 1,
                                       .ldb = ldb, .ldc = ldc};
            if (accumulate)
              ops::small_gemm<true>(g, alpha, a.data(), b.data(), c.data());
            else
              ops::small_gemm<false>(g, alpha, a.data(), b.data(), c.data());
            for (std::int64_t i = 0; i < m; ++i)
              for (std::int64_t j = 0; j < ldc; ++j) {
                const T got = c[std::size_t(i * ldc + j)];
                if (j >= w) {  // the padding past w is never written
                  REQUIRE(got == c0[std::size_t(i * ldc + j)]);
                  continue;
                }
                double s = 0;
                for (std::int64_t p = 0; p < k; ++p)
                  s += double(a[std::size_t(i * g.a_row + p * g.a_col)]) * double(b[std::size_t(p * ldb + j)]);
                const double want = double(alpha) * s + (accumulate ? double(c0[std::size_t(i * ldc + j)]) : 0.0);
                INFO("m " << m << " w " << w << " k " << k << " transposed " << transposed_a << " acc " << accumulate);
                REQUIRE(double(got) == Approx(want).margin(double(tol) * std::sqrt(double(k)) * 4));
              }
          }
}

TEMPLATE_TEST_CASE("panel_gemm equals the plain triple loop at odd sizes, every source of B, any row block",
                   "[ops][panel_gemm]", float, double) {
  using T = TestType;
  const T tol = std::is_same_v<T, float> ? T(2e-5) : T(1e-12);
  std::uint64_t seed = 100;
  for (std::int64_t m : {0, 1, 5, 6, 7, 13, 50})
    for (std::int64_t w : {1, 7, 8, 16, 17, 33, 64})
      for (std::int64_t k : {0, 1, 5, 64, 130})
        for (int source : {0, 1, 2})  // B packed from (k, w); packed from Wᵀ of a (w, k) W; in place
          for (int mode : {0, 1, 2}) {  // C = AB + bias, C = AB, C += AB
            const bool transposed_a = (m + w + k + source) % 2 == 1;
            const std::int64_t lda = k + 3, ldb = w + 2, ldc = w + 5;
            const std::int64_t a_rows = transposed_a ? k : m, a_ld = transposed_a ? m + 1 : lda;
            auto a = random_vec<T>(std::size_t(std::max<std::int64_t>(a_rows * a_ld, 1)), seed++);
            auto b = random_vec<T>(std::size_t(std::max<std::int64_t>(k * ldb, 1)), seed++);  // B[p, j] = b[p ldb + j]
            std::vector<T> bt(std::size_t(std::max<std::int64_t>(w * k, 1)));                 // W = Bᵀ, (w, k)
            for (std::int64_t p = 0; p < k; ++p)
              for (std::int64_t j = 0; j < w; ++j) bt[std::size_t(j * k + p)] = b[std::size_t(p * ldb + j)];
            auto bias = random_vec<T>(std::size_t(w), seed++);
            const auto c0 = random_vec<T>(std::size_t(std::max<std::int64_t>(m * ldc, 1)), seed++);
            std::vector<T> packed;
            const ops::PanelB<T> pb = source == 0   ? ops::pack_panels(b.data(), k, w, ldb, std::int64_t(1), packed)
                                      : source == 1 ? ops::pack_panels(bt.data(), k, w, std::int64_t(1), k, packed)
                                                    : ops::PanelB<T>{b.data(), ldb};
            const ops::PanelArgs g{.m = m, .w = w, .k = k, .a_row = transposed_a ? 1 : lda,
                                   .a_col = transposed_a ? a_ld : 1, .ldc = ldc};
            std::vector<T> first;
            for (std::int64_t block : {0, 1, 7}) {  // the row blocks change the order of work, never a bit
              auto c = c0;
              if (mode == 2)
                ops::panel_gemm<true>(g, a.data(), pb, static_cast<const T*>(nullptr), c.data(), block);
              else
                ops::panel_gemm<false>(g, a.data(), pb, mode == 0 ? bias.data() : nullptr, c.data(), block);
              if (block == 0) first = c;
              INFO("m " << m << " w " << w << " k " << k << " source " << source << " mode " << mode
                        << " transposed " << transposed_a << " block " << block);
              REQUIRE(c == first);
              for (std::int64_t i = 0; i < m; ++i)
                for (std::int64_t j = 0; j < ldc; ++j) {
                  const T got = c[std::size_t(i * ldc + j)];
                  if (j >= w) {  // the padding past w is never written
                    REQUIRE(got == c0[std::size_t(i * ldc + j)]);
                    continue;
                  }
                  double s = mode == 0 ? double(bias[std::size_t(j)]) : mode == 2 ? double(c0[std::size_t(i * ldc + j)]) : 0.0;
                  for (std::int64_t p = 0; p < k; ++p)
                    s += double(a[std::size_t(i * g.a_row + p * g.a_col)]) * double(b[std::size_t(p * ldb + j)]);
                  REQUIRE(double(got) == Approx(s).margin(double(tol) * std::sqrt(double(k + 1)) * 4));
                }
            }
          }
}

TEMPLATE_TEST_CASE("transpose_into equals the plain transpose at odd sizes", "[ops][small_gemm]", float, double) {
  using T = TestType;
  for (std::int64_t rows : {1, 3, 8, 9, 16, 50})
    for (std::int64_t cols : {1, 4, 8, 13, 16, 33}) {
      const std::int64_t lds = cols + 7;
      auto src = random_vec<T>(std::size_t(rows * lds), std::uint64_t(rows * 100 + cols));
      std::vector<T> dst(std::size_t(rows * cols), std::numeric_limits<T>::quiet_NaN());
      ops::transpose_into(src.data(), rows, cols, lds, dst.data());
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t c = 0; c < cols; ++c) REQUIRE(dst[std::size_t(c * rows + r)] == src[std::size_t(r * lds + c)]);
    }
}

TEST_CASE("the packet exp of non-positive values has Eigen's pexp bits wherever the result is normal",
          "[ops][softmax]") {
  using namespace Eigen::internal;
  using P = packet_traits<float>::type;
  constexpr int S = unpacket_traits<P>::size;
  alignas(64) float in[S], want[S], got[S];
  long compared = 0;
  for (float x0 = -100.0f; x0 <= 0.0f; x0 += 3.7e-4f) {
    for (int q = 0; q < S; ++q) in[q] = std::min(0.0f, x0 + float(q) * 1.1e-5f);
    pstore(want, pexp(pload<P>(in)));
    pstore(got, ops::pexp_nonpositive(pload<P>(in)));
    for (int q = 0; q < S; ++q) {
      INFO("x = " << in[q]);
      if (want[q] >= std::numeric_limits<float>::min()) {
        REQUIRE(got[q] == want[q]);
        ++compared;
      } else {  // exp is subnormal here: 0 or a tiny normal
        REQUIRE(got[q] >= 0.0f);
        REQUIRE(got[q] <= 2 * std::numeric_limits<float>::min());
      }
    }
  }
  REQUIRE(compared > 1000000);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (int q = 0; q < S; ++q) in[q] = q % 3 == 0 ? nan : q % 3 == 1 ? -inf : 0.0f;
  pstore(got, ops::pexp_nonpositive(pload<P>(in)));
  for (int q = 0; q < S; ++q) {
    if (q % 3 == 0) REQUIRE(std::isnan(got[q]));
    if (q % 3 == 1) REQUIRE(got[q] == 0.0f);
    if (q % 3 == 2) REQUIRE(got[q] == 1.0f);
  }
}

TEMPLATE_TEST_CASE("the packet exp of a softmax row equals std::exp, masked keys and queries included",
                   "[ops][softmax]", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 2e-6 : 1e-13;
  for (index_t n : {1, 3, 7, 8, 9, 16, 50}) {
    auto logits = random_vec<T>(std::size_t(n), std::uint64_t(n));
    std::vector<std::uint8_t> keep(std::size_t(n), 1);
    for (index_t j = 0; j < n; j += 3) keep[std::size_t(j)] = 0;
    for (bool masked : {false, true}) {
      const index_t query = n > 1 ? 1 : 0;  // kept in the masked case (j = 1 is not a multiple of 3)
      auto row = logits;
      ops::masked_softmax_row(row.data(), n, masked ? keep.data() : nullptr, query);
      double mx = -1e300, sum = 0;
      for (index_t j = 0; j < n; ++j)
        if (!masked || keep[std::size_t(j)]) mx = std::max(mx, double(logits[std::size_t(j)]));
      for (index_t j = 0; j < n; ++j)
        if (!masked || keep[std::size_t(j)]) sum += std::exp(double(logits[std::size_t(j)]) - mx);
      for (index_t j = 0; j < n; ++j) {
        const bool in = !masked || keep[std::size_t(j)];
        const double want = in ? std::exp(double(logits[std::size_t(j)]) - mx) / sum : 0.0;
        INFO("n " << n << " masked " << masked << " j " << j);
        REQUIRE(double(row[std::size_t(j)]) == Approx(want).margin(tol));
      }
    }
    if (n > 0) {  // a masked query's row is all zeros
      auto row = logits;
      ops::masked_softmax_row(row.data(), n, keep.data(), 0);
      for (auto v : row) REQUIRE(v == T(0));
    }
  }
}

TEST_CASE("the linear map over fixed row chunks matches plain sums and gives the same bits on 1 and 2 threads",
          "[ops][gemm]") {
  const index_t rows = 2600, in = 9, out = 5;  // five chunks of 520 rows
  auto x = random_vec<float>(std::size_t(rows * in), 1), w = random_vec<float>(std::size_t(out * in), 2);
  auto dy = random_vec<float>(std::size_t(rows * out), 3);
  std::vector<float> dx1(std::size_t(rows * in)), dw1(std::size_t(out * in), 0.5f), db1(std::size_t(out), -0.25f);
  auto dx2 = dx1, dw2 = dw1, db2 = db1;
  with_threads(1, [&] { ops::linear_backward(x.data(), rows, in, w.data(), out, dy.data(), dx1.data(), dw1.data(), db1.data()); });
  with_threads(2, [&] { ops::linear_backward(x.data(), rows, in, w.data(), out, dy.data(), dx2.data(), dw2.data(), db2.data()); });
  REQUIRE(dw1 == dw2);
  REQUIRE(db1 == db2);
  REQUIRE(dx1 == dx2);
  for (index_t o = 0; o < out; ++o) {
    double sb = -0.25;
    for (index_t r = 0; r < rows; ++r) sb += dy[std::size_t(r * out + o)];
    REQUIRE(db1[std::size_t(o)] == Approx(sb).margin(1e-3));
    for (index_t i = 0; i < in; ++i) {
      double s = 0.5;
      for (index_t r = 0; r < rows; ++r) s += double(dy[std::size_t(r * out + o)]) * x[std::size_t(r * in + i)];
      REQUIRE(dw1[std::size_t(o * in + i)] == Approx(s).margin(1e-3));
    }
  }
  for (index_t r = 0; r < rows; r += 97)
    for (index_t i = 0; i < in; ++i) {
      double s = 0;
      for (index_t o = 0; o < out; ++o) s += double(dy[std::size_t(r * out + o)]) * w[std::size_t(o * in + i)];
      REQUIRE(dx1[std::size_t(r * in + i)] == Approx(s).margin(1e-4));
    }
  // The forward over the same row chunks: the same bits on 1 and 2 threads.
  std::vector<float> y(std::size_t(rows * out)), b(std::size_t(out), 0.5f);
  auto y1 = y;
  with_threads(1, [&] { ops::linear_forward(x.data(), rows, in, w.data(), b.data(), out, y1.data()); });
  with_threads(2, [&] { ops::linear_forward(x.data(), rows, in, w.data(), b.data(), out, y.data()); });
  REQUIRE(y == y1);
  for (index_t r = 0; r < rows; r += 89)
    for (index_t o = 0; o < out; ++o) {
      double s = 0.5;
      for (index_t i = 0; i < in; ++i) s += double(x[std::size_t(r * in + i)]) * w[std::size_t(o * in + i)];
      REQUIRE(y[std::size_t(r * out + o)] == Approx(s).margin(1e-4));
    }
}

TEST_CASE("layer norm's chunked dgamma and dbeta match plain sums, the same on 1 and 2 threads", "[ops][layer_norm]") {
  const index_t rows = 2100, D = 7;
  auto x = random_vec<double>(std::size_t(rows * D), 4), dy = random_vec<double>(std::size_t(rows * D), 5);
  std::vector<double> gamma(std::size_t(D), 1.5), beta(std::size_t(D), 0.1), y(std::size_t(rows * D));
  std::vector<double> mean(static_cast<std::size_t>(rows)), rstd(static_cast<std::size_t>(rows));
  ops::layer_norm_forward(x.data(), rows, D, gamma.data(), beta.data(), 1e-6, y.data(), mean.data(), rstd.data());
  std::vector<double> dg1(std::size_t(D), 0.25), db1(std::size_t(D), -1.0);
  auto dg2 = dg1, db2 = db1;
  with_threads(1, [&] { ops::layer_norm_backward(x.data(), rows, D, gamma.data(), mean.data(), rstd.data(), dy.data(),
                                                 static_cast<double*>(nullptr), dg1.data(), db1.data()); });
  with_threads(2, [&] { ops::layer_norm_backward(x.data(), rows, D, gamma.data(), mean.data(), rstd.data(), dy.data(),
                                                 static_cast<double*>(nullptr), dg2.data(), db2.data()); });
  REQUIRE(dg1 == dg2);
  REQUIRE(db1 == db2);
  for (index_t j = 0; j < D; ++j) {
    double sg = 0.25, sb = -1.0;
    for (index_t r = 0; r < rows; ++r) {
      sg += dy[std::size_t(r * D + j)] * (x[std::size_t(r * D + j)] - mean[std::size_t(r)]) * rstd[std::size_t(r)];
      sb += dy[std::size_t(r * D + j)];
    }
    REQUIRE(dg1[std::size_t(j)] == Approx(sg).epsilon(1e-12).margin(1e-10));
    REQUIRE(db1[std::size_t(j)] == Approx(sb).epsilon(1e-12).margin(1e-10));
  }
}

TEST_CASE("the L1 data cache size that small_head_bytes = -1 keys on is Eigen's and plausible", "[ops][small_gemm]") {
  const index_t l1 = host::l1_data_bytes();
  CHECK(l1 == index_t(Eigen::l1CacheSize()));
  CHECK(l1 >= 4096);
  CHECK(l1 <= (index_t(1) << 20));
  CHECK(host::l1_data_bytes() == l1);  // read once
}
