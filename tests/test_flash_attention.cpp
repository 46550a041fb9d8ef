// The streamed attention's tile functions (ops/flash_attention.hpp), run by the host executor,
// against SoftmaxAttentionCore (every policy, ragged batches with empty and one-token
// sequences, keep-masks, tied logits): the outputs and the qkv gradients, at the kernels' tile
// sizes and at small ones that cut the sequences into many ragged blocks and tiles. The CUDA
// kernels run the same tile functions (tests/cuda/test_cuda_attention.cu compares them with this
// executor).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "seqswap/attention/softmax_attention.hpp"
#include "seqswap/core/rng.hpp"
#include "seqswap/ops/flash_attention.hpp"
#include "test_util.hpp"  // Catch2

using namespace seqswap;
namespace flash = seqswap::ops::flash;

namespace {

// The conformance test's mask (tests/conformance.hpp): token 0 of each sequence kept, about a
// third of the rest dropped.
std::vector<std::uint8_t> conformance_mask(const Layout& l) {
  std::vector<std::uint8_t> keep(static_cast<std::size_t>(l.total()), 1);
  for (index_t b = 0; b < l.batch; ++b)
    for (index_t t = 1; t < l.length(b); ++t)
      if ((t * 7 + b) % 3 == 0) keep[static_cast<std::size_t>(l.offsets[b] + t)] = 0;
  return keep;
}

template <class T, class Policy>
void check_against_core(const Layout& l, index_t heads, const std::vector<std::uint8_t>& keep, index_t top_k,
                        double threshold, double tol, bool tie_rows = false) {
  using Host = backend::Host;
  attention::SoftmaxAttentionOptions o{.dim = l.dim, .heads = heads, .qkv_bias = true, .name = "attn"};
  o.top_k = top_k;
  o.threshold = threshold;
  attention::SoftmaxAttentionCore<T, Policy> core(o);
  Rng rng(7);
  std::vector<T> p(core.param_count());
  for (auto& v : p) v = T(rng.normal() * 0.5);
  std::vector<T> x(l.size());
  for (auto& v : x) v = T(rng.normal());
  if (tie_rows)  // tokens 1.. of every sequence but its last share one row: tied logits everywhere
    for (index_t b = 0; b < l.batch; ++b)
      for (index_t t = l.offsets[b] + 2; t + 1 < l.offsets[b + 1]; ++t)
        for (index_t e = 0; e < l.dim; ++e) x[t * l.dim + e] = x[(l.offsets[b] + 1) * l.dim + e];
  const std::uint8_t* kp = keep.empty() ? nullptr : keep.data();
  typename attention::SoftmaxAttentionCore<T, Policy>::template Ctx<Host> c;
  std::vector<T> pre(l.size());
  core.forward(ParamsView<const T, Host>{p.data(), p.size()}, view_of<const T>(x.data(), l, kp),
               view_of<T>(pre.data(), l, kp), c);
  std::vector<T> dpre(l.size());
  for (index_t t = 0; t < l.total(); ++t)
    for (index_t e = 0; e < l.dim; ++e) dpre[t * l.dim + e] = (kp && !kp[t]) ? T(0) : T(rng.normal());
  std::vector<T> dx(l.size()), g(p.size(), T(0));
  core.backward(ParamsView<const T, Host>{p.data(), p.size()}, c, view_of<const T>(dpre.data(), l, kp),
                view_of<T>(dx.data(), l, kp), ParamsView<T, Host>{g.data(), g.size()});

  const flash::Problem<T> fp = core.flash_problem(c.qkv.data(), l.offsets.data(), kp, l.batch);
  REQUIRE(std::string(flash::unsupported(fp)).empty());
  // The kernels' tiles, and tiles that cut every sequence into ragged blocks and tiles (one row
  // per block, blocks and tiles of unequal sizes, a tile longer than any sequence): the tiling
  // changes no operation's order, so every choice gives the same bits.
  std::vector<T> first_pre, first_dqkv;
  for (const flash::Tiles tiles : {flash::kDeviceTiles, flash::Tiles{4, 3}, flash::Tiles{1, 1}, flash::Tiles{7, 64}}) {
    CAPTURE(tiles.rows, tiles.tile);
    std::vector<T> fpre(l.size(), std::numeric_limits<T>::quiet_NaN());  // sentinels: every value written
    std::vector<flash::RowStats<T>> stats(static_cast<std::size_t>(l.total() * heads));
    flash::forward_host(fp, fpre.data(), stats.data(), tiles);
    REQUIRE(std::all_of(fpre.begin(), fpre.end(), [](T v) { return std::isfinite(v); }));
    test_util::require_close(fpre.data(), pre, tol, "pre");
    std::vector<T> delta(stats.size()), dqkv(static_cast<std::size_t>(l.total() * 3 * l.dim),
                                             std::numeric_limits<T>::quiet_NaN());
    flash::backward_host(fp, stats.data(), fpre.data(), dpre.data(), delta.data(), dqkv.data(), tiles);
    REQUIRE(std::all_of(dqkv.begin(), dqkv.end(), [](T v) { return std::isfinite(v); }));
    test_util::require_close(dqkv.data(), std::vector<T>(c.dqkv.data(), c.dqkv.data() + dqkv.size()), tol, "dqkv");
    if (first_pre.empty()) {
      first_pre = fpre;
      first_dqkv = dqkv;
    } else {
      CHECK(fpre == first_pre);
      CHECK(dqkv == first_dqkv);
    }
  }
  // The row functions with the head width fixed at compile time, as the float kernels specialise
  // them (ops/cuda/attention.cuh, by_head_width): the same bits as with the width at run time.
  const auto fixed = [&](auto width) {
    constexpr int DH = decltype(width)::value;
    CAPTURE(DH);
    std::vector<T> fpre(l.size(), std::numeric_limits<T>::quiet_NaN());
    std::vector<flash::RowStats<T>> stats(static_cast<std::size_t>(l.total() * heads));
    flash::forward_host<DH>(fp, fpre.data(), stats.data());
    CHECK(fpre == first_pre);
    std::vector<T> delta(stats.size()), dqkv(static_cast<std::size_t>(l.total() * 3 * l.dim),
                                             std::numeric_limits<T>::quiet_NaN());
    flash::backward_host<DH>(fp, stats.data(), fpre.data(), dpre.data(), delta.data(), dqkv.data());
    CHECK(dqkv == first_dqkv);
  };
  const index_t d = l.dim / heads;
  REQUIRE((d == 4 || d == 16));
  if (d == 4) fixed(std::integral_constant<int, 4>{});
  if (d == 16) fixed(std::integral_constant<int, 16>{});
  CHECK_THROWS_WITH(flash::forward_host<8>(fp, first_pre.data(), static_cast<flash::RowStats<T>*>(nullptr)),
                    Catch::Contains("a fixed head width of 8 for a problem of head width"));
}

std::vector<Layout> layouts(index_t D) {
  return {Layout::ragged({3, 17, 1, 6}, D), Layout::ragged({0, 9, 0, 1, 33}, D), Layout::dense(2, 50, D)};
}

}  // namespace

TEST_CASE("flash: the sequence of a row, skipping empty sequences", "[flash]") {
  const std::vector<flash::idx> off{0, 0, 3, 3, 3, 4, 10};  // lengths 0, 3, 0, 0, 1, 6
  const flash::idx want[] = {1, 1, 1, 4, 5, 5, 5, 5, 5, 5};
  for (flash::idx t = 0; t < 10; ++t) CHECK(flash::sequence_of(off.data(), 6, t) == want[t]);
  const std::vector<flash::idx> one{0, 5};
  CHECK(flash::sequence_of(one.data(), 1, 4) == 0);
}

TEST_CASE("flash: order-preserving keys of floats round-trip", "[flash]") {
  const std::vector<float> v{-std::numeric_limits<float>::infinity(), -3.5f, -1e-30f, -0.0f, 0.0f, 1e-30f, 2.0f, 7e30f};
  for (std::size_t i = 0; i < v.size(); ++i) {
    CHECK(flash::from_ordered<float>(flash::ordered(v[i])) == v[i]);
    if (i > 0) CHECK(flash::ordered(v[i - 1]) <= flash::ordered(v[i]));  // -0 and 0: equal values, 0 after
  }
  CHECK(flash::ordered(-1.0) < flash::ordered(0.5));
  CHECK(flash::from_ordered<double>(flash::ordered(-2.25)) == -2.25);
}

TEST_CASE("flash: dense attention equals the core's (double)", "[flash]") {
  for (const auto& l : layouts(12)) {
    check_against_core<double, sparse::Dense>(l, 3, {}, 0, 0, 1e-11);
    check_against_core<double, sparse::Dense>(l, 3, conformance_mask(l), 0, 0, 1e-11);
  }
}

TEST_CASE("flash: top-k and threshold equal the core's (double)", "[flash]") {
  for (const auto& l : layouts(8)) {
    const auto mask = conformance_mask(l);
    for (index_t k : {1, 3, 5}) check_against_core<double, sparse::TopK>(l, 2, mask, k, 0, 1e-11);
    check_against_core<double, sparse::TopK>(l, 2, {}, 4, 0, 1e-11);
    for (double tau : {0.3, 1.0}) check_against_core<double, sparse::Threshold>(l, 2, mask, 0, tau, 1e-11);
    check_against_core<double, sparse::Threshold>(l, 2, {}, 0, 0.5, 1e-11);
  }
}

TEST_CASE("flash: top-k breaks tied logits by key index, as the core does", "[flash]") {
  const Layout l = Layout::ragged({8, 11}, 8);
  for (index_t k : {2, 3, 6}) check_against_core<double, sparse::TopK>(l, 2, {}, k, 0, 1e-11, true);
}

TEST_CASE("flash: float within float tolerance", "[flash]") {
  for (const auto& l : layouts(16)) {
    const auto mask = conformance_mask(l);
    check_against_core<float, sparse::Dense>(l, 4, mask, 0, 0, 2e-5);
    check_against_core<float, sparse::Threshold>(l, 4, mask, 0, 0.3, 2e-5);
  }
  // Head width 16, a width the float kernels are specialised for.
  const Layout l = Layout::ragged({3, 50, 1}, 64);
  check_against_core<float, sparse::Dense>(l, 4, conformance_mask(l), 0, 0, 2e-5);
}

TEST_CASE("flash: blocks of a ragged batch, in sequence order", "[flash]") {
  const std::vector<flash::idx> off{0, 0, 5, 5, 6, 14};  // lengths 0, 5, 0, 1, 8
  // rows 4: sequence 1 in 2 blocks (0, 4), sequence 3 in 1, sequence 4 in 2 (0, 4); then none.
  const flash::idx want_b[] = {1, 1, 3, 4, 4}, want_r0[] = {0, 4, 0, 0, 4};
  for (flash::idx k = 0; k < 5; ++k) {
    flash::idx b = -1, r0 = -1;
    REQUIRE(flash::locate_block(off.data(), 5, 4, k, b, r0));
    CHECK(b == want_b[k]);
    CHECK(r0 == want_r0[k]);
  }
  flash::idx b = 0, r0 = 0;
  CHECK_FALSE(flash::locate_block(off.data(), 5, 4, 5, b, r0));
  CHECK(flash::max_blocks(14, 5, 4) >= 5);  // the launch's bound covers every block
  for (flash::idx rows : {1, 2, 3, 64}) {
    flash::idx blocks = 0;
    for (flash::idx s = 0; s < 5; ++s) blocks += (off[s + 1] - off[s] + rows - 1) / rows;
    CHECK(flash::max_blocks(14, 5, rows) >= blocks);
  }
}

TEST_CASE("flash: unsupported problems are named", "[flash]") {
  flash::Problem<float> p{.dim = 10, .heads = 3};
  CHECK(std::string(flash::unsupported(p)) == "width not divisible by heads");
  p = {.dim = 258, .heads = 2};
  CHECK(std::string(flash::unsupported(p)).find("128") != std::string::npos);
  p = {.dim = 8, .heads = 2, .threshold = 1.5};
  CHECK(!std::string(flash::unsupported(p)).empty());
}
