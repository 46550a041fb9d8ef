// The minGRU mixer passes the conformance test (both combinations of directions, forward-only,
// a non-identity scan order), counts its parameters exactly, stays finite at N = 16384, its
// bidirectional form is the sum of two one-directional scans, and it matches PyTorch
// (tests/reference/mixers/min_gru.py).
#include <cmath>

#include "conformance.hpp"
#include "seqswap/io/safetensors.hpp"
#include "seqswap/mixers/min_gru.hpp"
#include "mixer_fixture.hpp"
#include "test_util.hpp"

using namespace seqswap;
using conformance::check_layer;
using mixers::MinGru;
using mixers::MinGruOptions;
using Host = backend::Host;
using Combine = MinGruOptions::Combine;

TEST_CASE("MinGru conforms", "[conformance][mixer][min_gru]") {
  const index_t D = 4;
  std::vector<MinGruOptions> configs = {
      {.dim = D, .expand = 2, .chunk = 4},  // bidirectional, summed
      {.dim = D, .expand = 1, .combine = Combine::concat, .chunk = 4},
      {.dim = D, .expand = 2, .bidirectional = false, .chunk = 0},
      {.dim = D, .expand = 1, .order = {order::Grid::snake, order::Cls::middle}, .chunk = 4},
  };
  for (const auto& o : configs) {
    MinGru<double> m(o);
    for (const auto& in : conformance::standard_layouts(D)) {
      check_layer(m, in, {.mixer = true});
      check_layer(m, in, {.keep = conformance::some_mask(in), .mixer = true});
    }
  }
}

TEST_CASE("MinGru parameter count", "[mixer][min_gru]") {
  for (index_t D : {4, 6})
    for (index_t expand : {1, 2})
      for (bool bi : {true, false})
        for (Combine comb : {Combine::sum, Combine::concat}) {
          MinGru<float> m({.dim = D, .expand = expand, .bidirectional = bi, .combine = comb});
          const index_t E = expand * D, dirs = bi ? 2 : 1;
          const index_t Et = (bi && comb == Combine::concat) ? 2 * E : E;
          // directions · (2E·D + 2E) + E_total·D + D
          const auto formula = static_cast<std::size_t>(dirs * (2 * E * D + 2 * E) + Et * D + D);
          std::size_t sum = 0;
          std::vector<std::string> names;
          m.visit_params([&](const ParamInfo& i) {
            REQUIRE(i.count == numel(i.shape));
            REQUIRE(i.offset == sum);
            sum += i.count;
            names.push_back(i.name);
          }, "blocks.0", 0);
          REQUIRE(m.param_count() == formula);
          REQUIRE(sum == formula);
          REQUIRE(names.front() == "blocks.0.attn.fwd.weight");
          REQUIRE(names.back() == "blocks.0.attn.proj.bias");
          REQUIRE(names.size() == static_cast<std::size_t>(2 * dirs + 2));
        }
}

TEST_CASE("MinGru is stable for N = 16384", "[mixer][min_gru]") {
  const index_t D = 4, N = 16384;
  MinGru<float> m({.dim = D, .expand = 1});
  Rng rng(11);
  auto p = test_util::random_vector<float>(m.param_count(), rng, 8.0);  // saturating gates both ways
  auto x = test_util::random_vector<float>(static_cast<std::size_t>(N * D), rng, 4.0);
  const Layout l = Layout::dense(1, N, D);
  MinGru<float>::Ctx<Host> ctx;
  std::vector<float> y(l.size()), dy(l.size(), 1.0f), dx(l.size()), g(p.size(), 0.0f);
  m.forward(ParamsView<const float, Host>{p.data(), p.size()}, view_of<const float>(x.data(), l),
            view_of<float>(y.data(), l), ctx);
  m.backward(ParamsView<const float, Host>{p.data(), p.size()}, ctx,
             view_of<const float>(dy.data(), l), view_of<float>(dx.data(), l),
             ParamsView<float, Host>{g.data(), g.size()});
  for (float v : y) REQUIRE(std::isfinite(v));
  for (float v : dx) REQUIRE(std::isfinite(v));
  for (float v : g) REQUIRE(std::isfinite(v));
  // The chunked scan agrees with the sequential reference at this length.
  MinGru<float> seq({.dim = D, .expand = 1, .chunk = 0});
  const auto r = test_util::run_mixer(seq, p, x, l);
  test_util::require_close(y.data(), r.y, 1e-4, "chunked vs sequential y");
}

TEST_CASE("MinGru: bidirectional = forward scan + reversed scan", "[mixer][min_gru]") {
  const index_t D = 3, expand = 2, E = expand * D;
  // Lengths that are not CLS + square grid, so Grid::reversed reverses each whole sequence.
  const Layout l = Layout::ragged({3, 7, 8}, D);
  Rng rng(3);
  const auto x = test_util::random_vector<double>(l.size(), rng, 1.0);
  const auto keep = conformance::some_mask(l);
  for (Combine comb : {Combine::sum, Combine::concat}) {
    MinGru<double> bi({.dim = D, .expand = expand, .combine = comb});
    MinGru<double> fwd({.dim = D, .expand = expand, .bidirectional = false});
    MinGru<double> rev({.dim = D, .expand = expand, .bidirectional = false,
                        .order = {order::Grid::reversed, order::Cls::head}});
    const auto p = test_util::random_vector<double>(bi.param_count(), rng, 0.7);
    const std::size_t dir = static_cast<std::size_t>(2 * E * D + 2 * E);
    // one-directional parameters: that direction's Linear, then a proj of the right width
    std::vector<double> pf(p.begin(), p.begin() + dir), pr(p.begin() + dir, p.begin() + 2 * dir);
    const std::vector<double> proj_tail(fwd.param_count() - dir, 0.0);
    pf.insert(pf.end(), proj_tail.begin(), proj_tail.end());
    pr.insert(pr.end(), proj_tail.begin(), proj_tail.end());
    for (const std::uint8_t* k : {static_cast<const std::uint8_t*>(nullptr), keep.data()}) {
      const auto rb = test_util::run_mixer(bi, p, x, l, k), rf = test_util::run_mixer(fwd, pf, x, l, k), rr = test_util::run_mixer(rev, pr, x, l, k);
      const index_t Et = bi.width();
      for (index_t t = 0; t < l.total(); ++t)
        for (index_t e = 0; e < E; ++e) {
          if (comb == Combine::sum) {
            REQUIRE(rb.pre[t * Et + e] == Approx(rf.pre[t * E + e] + rr.pre[t * E + e]).margin(1e-12));
          } else {
            REQUIRE(rb.pre[t * Et + e] == Approx(rf.pre[t * E + e]).margin(1e-12));
            REQUIRE(rb.pre[t * Et + E + e] == Approx(rr.pre[t * E + e]).margin(1e-12));
          }
        }
    }
    // Forward-only is causal in scan order: changing the last token of a sequence changes no
    // other row; the bidirectional mixer sees it everywhere.
    auto x2 = x;
    const index_t last = l.offsets[2] - 1;  // last token of sequence 1
    for (index_t j = 0; j < D; ++j) x2[last * D + j] += 1.0;
    const auto f1 = test_util::run_mixer(fwd, pf, x, l), f2 = test_util::run_mixer(fwd, pf, x2, l);
    const auto b1 = test_util::run_mixer(bi, p, x, l), b2 = test_util::run_mixer(bi, p, x2, l);
    for (index_t t = l.offsets[1]; t < last; ++t)
      for (index_t e = 0; e < E; ++e) REQUIRE(f1.pre[t * E + e] == f2.pre[t * E + e]);
    const index_t col = l.offsets[1] * bi.width() + bi.width() - 1;  // a bwd column when concat
    REQUIRE(b1.pre[col] != b2.pre[col]);
  }
}

TEST_CASE("MinGru in a scan order = the identity-order mixer on permuted tokens", "[mixer][min_gru]") {
  const index_t D = 3;
  const Layout l = Layout::ragged({10, 17, 5}, D);  // 1+3x3, 1+4x4, 1+2x2
  const order::ScanOrder so{order::Grid::snake, order::Cls::middle};
  MinGru<double> ordered({.dim = D, .order = so, .chunk = 3});
  MinGru<double> plain({.dim = D, .chunk = 3});
  Rng rng(5);
  const auto p = test_util::random_vector<double>(plain.param_count(), rng, 0.7);
  const auto x = test_util::random_vector<double>(l.size(), rng, 1.0);
  const auto keep = conformance::some_mask(l);
  const auto perm = order::batch_permutation(so, l.offsets.data(), l.batch);
  std::vector<double> xs(x.size());
  order::gather_rows(x.data(), perm, D, xs.data());
  std::vector<std::uint8_t> keep_s(keep.size());
  for (std::size_t k = 0; k < perm.size(); ++k) keep_s[k] = keep[perm[k]];
  const auto ro = test_util::run_mixer(ordered, p, x, l, keep.data());
  auto rp = test_util::run_mixer(plain, p, xs, l, keep_s.data());
  std::vector<double> back(x.size());
  order::scatter_rows(rp.y.data(), perm, D, back.data());
  test_util::require_close(ro.y.data(), back, 1e-12, "ordered y vs permuted identity y");
  // and the order matters
  const auto ri = test_util::run_mixer(plain, p, x, l, keep.data());
  REQUIRE(test_util::rel_error(ro.y.data(), ri.y) > 1e-3);
}

TEST_CASE("MinGru matches PyTorch", "[reference][mixer][min_gru]") {
  const auto f = io::read_safetensors(test_util::fixture("mixers/min_gru.safetensors"));
  const index_t B = 2, N = 10, D = 6;
  MinGru<float> m({.dim = D, .expand = 2, .order = {order::Grid::snake, order::Cls::middle},
                   .chunk = 4});
  test_util::check_mixer_fixture(m, f, B, N, D);
}
