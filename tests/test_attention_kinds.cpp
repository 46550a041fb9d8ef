// Kinds of sparse attention: self, local, CLS and background mass, marginal entropy and
// query-key mutual information match maps worked out by hand, masked keys are renormalised
// away, background flags come from flat patches, and the streaming accumulator pools the
// per-image values without depending on batching or the thread count.
#include <cmath>
#include <numeric>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "test_util.hpp"
#include "seqswap/analysis/attention_kinds.hpp"
#include "seqswap/attention/softmax_attention.hpp"
#include "seqswap/model/model.hpp"
#include "seqswap/model/vit.hpp"

using namespace seqswap;
using analysis::Kind;
using analysis::KindValues;

namespace {

double at(const KindValues& v, Kind k) { return v[std::size_t(int(k))]; }

// An n×n map whose row i is f(i, j).
template <class F>
std::vector<double> make_map(index_t n, F f) {
  std::vector<double> m(std::size_t(n * n));
  for (index_t i = 0; i < n; ++i)
    for (index_t j = 0; j < n; ++j) m[std::size_t(i * n + j)] = f(i, j);
  return m;
}
std::vector<double> identity(index_t n) { return make_map(n, [](index_t i, index_t j) { return double(i == j); }); }
std::vector<double> on_cls(index_t n) { return make_map(n, [](index_t, index_t j) { return double(j == 0); }); }
std::vector<double> uniform(index_t n) { return make_map(n, [n](index_t, index_t) { return 1.0 / double(n); }); }

KindValues kinds(const std::vector<double>& m, index_t grid, const std::vector<std::uint8_t>& keep = {},
                 const std::vector<std::uint8_t>& bg = {}) {
  const auto n = static_cast<index_t>(std::llround(std::sqrt(double(m.size()))));
  return analysis::kind_values(m.data(), n, keep.empty() ? nullptr : keep.data(), grid,
                               bg.empty() ? nullptr : bg.data());
}

}  // namespace

TEST_CASE("Kinds are named", "[analysis][kinds]") {
  CHECK(std::string(analysis::name(Kind::self_mass)) == "self_mass");
  CHECK(std::string(analysis::name(Kind::local_mass)) == "local_mass");
  CHECK(std::string(analysis::name(Kind::cls_mass)) == "cls_mass");
  CHECK(std::string(analysis::name(Kind::marginal_entropy)) == "marginal_entropy");
  CHECK(std::string(analysis::name(Kind::mutual_information)) == "mutual_information");
  CHECK(std::string(analysis::name(Kind::background_mass)) == "background_mass");
}

TEST_CASE("Identity attention: all self, local, query-specific", "[analysis][kinds]") {
  // N = 5 (2x2 grid): p_i = e_i. p̄ uniform: H(p̄) = log 5, every H(p_i) = 0.
  const auto v = kinds(identity(5), 2);
  CHECK(at(v, Kind::self_mass) == Approx(1.0));
  CHECK(at(v, Kind::local_mass) == Approx(1.0));  // a patch is its own neighbour
  CHECK(at(v, Kind::cls_mass) == Approx(0.0).margin(1e-15));
  CHECK(at(v, Kind::marginal_entropy) == Approx(1.0));
  CHECK(at(v, Kind::mutual_information) == Approx(1.0));
  CHECK(std::isnan(at(v, Kind::background_mass)));  // no flags given
  // Without a grid there is no local mass; the rest is unchanged.
  const auto g0 = kinds(identity(5), 0);
  CHECK(std::isnan(at(g0, Kind::local_mass)));
  CHECK(at(g0, Kind::self_mass) == Approx(1.0));
}

TEST_CASE("Every query on CLS: a sink, query-independent", "[analysis][kinds]") {
  // N = 5: only the CLS query (0) attends itself: self = 1/5. p̄ = e_0: H(p̄) = 0, H(p_i) = 0.
  const auto v = kinds(on_cls(5), 2);
  CHECK(at(v, Kind::self_mass) == Approx(0.2));
  CHECK(at(v, Kind::cls_mass) == Approx(1.0));
  CHECK(at(v, Kind::local_mass) == Approx(0.0).margin(1e-15));  // CLS is no patch neighbour
  CHECK(at(v, Kind::marginal_entropy) == Approx(0.0).margin(1e-15));
  CHECK(at(v, Kind::mutual_information) == Approx(0.0).margin(1e-15));
}

TEST_CASE("Uniform attention: no query dependence, local mass by neighbourhood size",
          "[analysis][kinds]") {
  // 2x2 grid, N = 5: every patch's 3x3 neighbourhood holds all 4 patches: local = 4/5.
  const auto v = kinds(uniform(5), 2);
  CHECK(at(v, Kind::self_mass) == Approx(0.2));
  CHECK(at(v, Kind::local_mass) == Approx(0.8));
  CHECK(at(v, Kind::cls_mass) == Approx(0.2));
  CHECK(at(v, Kind::marginal_entropy) == Approx(1.0));
  CHECK(at(v, Kind::mutual_information) == Approx(0.0).margin(1e-12));
  // 3x3 grid, N = 10: neighbourhoods of 4 (4 corners), 6 (4 edges), 9 (centre):
  //   local = (4·4 + 4·6 + 9) / 9 / 10 = 49/90
  const auto w = kinds(uniform(10), 3);
  CHECK(at(w, Kind::self_mass) == Approx(0.1));
  CHECK(at(w, Kind::local_mass) == Approx(49.0 / 90.0));
  CHECK(at(w, Kind::cls_mass) == Approx(0.1));
  CHECK(at(w, Kind::marginal_entropy) == Approx(1.0));
  CHECK(at(w, Kind::mutual_information) == Approx(0.0).margin(1e-12));
}

TEST_CASE("Marginal entropy and mutual information of a two-token map, by hand",
          "[analysis][kinds]") {
  // n = 2 (CLS + one patch, 1x1 grid): rows (1, 0) and (0.5, 0.5).
  //   p̄ = (0.75, 0.25): H(p̄) = −(0.75 ln 0.75 + 0.25 ln 0.25) = 0.562335
  //   H(p_0) = 0, H(p_1) = ln 2: mean 0.346574;  log N = ln 2 = 0.693147
  //   marginal = 0.811278, MI = (0.562335 − 0.346574) / 0.693147 = 0.311278
  //   self = (1 + 0.5) / 2 = 0.75; cls = 0.5 (patch query only); local = 0.5 (itself)
  const std::vector<double> m = {1.0, 0.0, 0.5, 0.5};
  const auto v = kinds(m, 1);
  CHECK(at(v, Kind::marginal_entropy) == Approx(0.811278).margin(1e-6));
  CHECK(at(v, Kind::mutual_information) == Approx(0.311278).margin(1e-6));
  CHECK(at(v, Kind::self_mass) == Approx(0.75));
  CHECK(at(v, Kind::cls_mass) == Approx(0.5));
  CHECK(at(v, Kind::local_mass) == Approx(0.5));
  // One kept token: N = 1, both entropies are defined as 0.
  const auto one = kinds({1.0}, 0);
  CHECK(at(one, Kind::marginal_entropy) == 0.0);
  CHECK(at(one, Kind::mutual_information) == 0.0);
  CHECK(at(one, Kind::self_mass) == 1.0);
  CHECK(std::isnan(at(one, Kind::cls_mass)));  // no patch query
}

TEST_CASE("Masked keys are ignored and rows renormalised over the kept ones", "[analysis][kinds]") {
  // n = 5 (2x2 grid), token 2 not kept. Kept query i puts 0.5 on itself and 0.5 on key 2;
  // query 2's row (all on CLS) is skipped. Renormalised over the kept keys {0, 1, 3, 4} every
  // row is e_i: self 1, local 1, cls 0, and p̄ is uniform over N = 4: marginal 1, MI 1.
  const std::vector<std::uint8_t> keep = {1, 1, 0, 1, 1};
  const auto m = make_map(5, [](index_t i, index_t j) {
    if (i == 2) return double(j == 0);
    return 0.5 * double(j == i) + 0.5 * double(j == 2);
  });
  const auto v = kinds(m, 2, keep);
  CHECK(at(v, Kind::self_mass) == Approx(1.0));
  CHECK(at(v, Kind::local_mass) == Approx(1.0));
  CHECK(at(v, Kind::cls_mass) == Approx(0.0).margin(1e-15));
  CHECK(at(v, Kind::marginal_entropy) == Approx(1.0));
  CHECK(at(v, Kind::mutual_information) == Approx(1.0));
  // Uniform rows with token 2 masked: 0.25 per kept key; local = kept patches {1, 3, 4} = 0.75.
  const auto u = kinds(uniform(5), 2, keep);
  CHECK(at(u, Kind::self_mass) == Approx(0.25));
  CHECK(at(u, Kind::local_mass) == Approx(0.75));
  CHECK(at(u, Kind::cls_mass) == Approx(0.25));
  CHECK(at(u, Kind::marginal_entropy) == Approx(1.0));
  CHECK(at(u, Kind::mutual_information) == Approx(0.0).margin(1e-12));
  // CLS masked: no CLS mass; the patches alone: uniform over 4 keys.
  const auto c = kinds(uniform(5), 2, {0, 1, 1, 1, 1});
  CHECK(std::isnan(at(c, Kind::cls_mass)));
  CHECK(at(c, Kind::self_mass) == Approx(0.25));
  CHECK(at(c, Kind::local_mass) == Approx(1.0));
  // Nothing kept: nothing defined.
  for (double x : kinds(uniform(5), 2, {0, 0, 0, 0, 0})) CHECK(std::isnan(x));
}

TEST_CASE("Background mass over flagged keys", "[analysis][kinds]") {
  // Tokens 1 and 2 flagged. Uniform rows: 2/5. Identity: queries 1 and 2 of 5: 2/5.
  const std::vector<std::uint8_t> bg = {0, 1, 1, 0, 0};
  CHECK(at(kinds(uniform(5), 2, {}, bg), Kind::background_mass) == Approx(0.4));
  CHECK(at(kinds(identity(5), 2, {}, bg), Kind::background_mass) == Approx(0.4));
  CHECK(at(kinds(on_cls(5), 2, {}, bg), Kind::background_mass) == Approx(0.0).margin(1e-15));
  // Token 2 masked: uniform over the 4 kept keys, of which only token 1 is background: 1/4.
  CHECK(at(kinds(uniform(5), 2, {1, 1, 0, 1, 1}, bg), Kind::background_mass) == Approx(0.25));
}

TEST_CASE("Background tokens are the flat patches", "[analysis][kinds]") {
  // 2 channels, 4x4 image, 2x2 patches: a 2x2 grid, 5 tokens. (channel, y, x) row-major.
  //   patch (0,0): all 0                                  -> std 0     -> background
  //   patch (0,1): channel 0 all 0, channel 1 all 1       -> std 0.5   -> not
  //   patch (1,0): 0.50 / 0.52 alternating (both channels)-> std 0.01  -> background
  //   patch (1,1): checkerboard 0 / 1                     -> std 0.5   -> not
  const index_t C = 2, S = 4, P = 2;
  std::vector<float> img(std::size_t(C * S * S), 0.0f);
  auto px = [&](index_t c, index_t y, index_t x) -> float& { return img[std::size_t((c * S + y) * S + x)]; };
  for (index_t c = 0; c < C; ++c)
    for (index_t y = 0; y < 2; ++y)
      for (index_t x = 0; x < 2; ++x) {
        px(c, y, 2 + x) = float(c);
        px(c, 2 + y, x) = (x + y) % 2 ? 0.52f : 0.50f;
        px(c, 2 + y, 2 + x) = float((x + y + c) % 2);
      }
  CHECK(analysis::background_tokens(img.data(), C, S, P, 0.05) ==
        std::vector<std::uint8_t>{0, 1, 0, 1, 0});
  CHECK(analysis::background_tokens(img.data(), C, S, P) ==
        std::vector<std::uint8_t>{0, 1, 0, 1, 0});  // the default threshold, 0.05
  // Strictly below the threshold: at 0 nothing is background; at 0.6 every patch is.
  CHECK(analysis::background_tokens(img.data(), C, S, P, 0.0) ==
        std::vector<std::uint8_t>{0, 0, 0, 0, 0});
  CHECK(analysis::background_tokens(img.data(), C, S, P, 0.6) ==
        std::vector<std::uint8_t>{0, 1, 1, 1, 1});
  CHECK_THROWS_AS(analysis::background_tokens(img.data(), C, S, 3), Error);
  CHECK_THROWS_AS(analysis::background_tokens(img.data(), C, S, P, -1.0), Error);
  CHECK_THROWS_AS(analysis::background_tokens(img.data(), 0, S, P), Error);
}

TEST_CASE("kind_values checks its arguments", "[analysis][kinds]") {
  const auto m = uniform(5);
  CHECK_THROWS_WITH(analysis::kind_values(m.data(), 5, nullptr, 3),
                    Catch::Contains("expected n = 1 + grid² = 10") && Catch::Contains("found 5"));
  CHECK_THROWS_AS(analysis::kind_values(m.data(), -1, nullptr, 0), Error);
}

// ---------------------------------------------------------------------------------------------
// Streaming.

namespace {
// Random maps for images of the given lengths (H heads): rows with mass on every key (masked
// keys too, so that renormalisation matters), an optional keep-mask and background flags
// packed like it.
struct RandomMaps {
  std::vector<double> probs;
  std::vector<std::size_t> prob_offsets{0};
  std::vector<index_t> offsets{0};
  std::vector<std::uint8_t> keep, background;
  index_t heads = 0;

  RandomMaps(const std::vector<index_t>& lengths, index_t H, bool masked, std::uint64_t seed)
      : heads(H) {
    Rng rng(seed);
    for (std::size_t b = 0; b < lengths.size(); ++b) {
      const index_t n = lengths[b];
      offsets.push_back(offsets.back() + n);
      for (index_t j = 0; j < n; ++j) {
        // CLS of image 2 masked too: that image has no CLS mass
        keep.push_back(!masked || (j == 0 ? b != 2 : rng.uniform() < 0.7));
        background.push_back(j > 0 && rng.uniform() < 0.4);
      }
      for (index_t h = 0; h < H; ++h)
        for (index_t i = 0; i < n; ++i) {
          std::vector<double> row(static_cast<std::size_t>(n));
          double s = 0;
          for (auto& v : row) s += v = std::exp(2 * rng.normal());
          for (double v : row) probs.push_back(v / s);
        }
      prob_offsets.push_back(probs.size());
    }
    if (!masked) keep.clear();
  }
  // Images lo..hi-1 (offsets stay absolute, so keep and background are shared).
  analysis::AttentionMaps<double> view(index_t lo = 0, index_t hi = -1) const {
    if (hi < 0) hi = index_t(offsets.size()) - 1;
    return {probs.data(), prob_offsets.data() + lo, offsets.data() + lo,
            keep.empty() ? nullptr : keep.data(), hi - lo, heads};
  }
};

void require_same(const analysis::KindAccumulator& a, const analysis::KindAccumulator& b) {
  for (index_t l = 0; l < a.layers(); ++l)
    for (index_t h = 0; h < a.heads(); ++h)
      for (Kind k : analysis::kAllKinds) {
        const auto& x = a.stats(l, h, k);
        const auto& y = b.stats(l, h, k);
        INFO("layer " << l << " head " << h << " " << analysis::name(k));
        REQUIRE(x.count == y.count);
        REQUIRE(x.mean == y.mean);  // same values in the same order: bitwise equal
        REQUIRE(x.m2 == y.m2);
      }
}

const std::vector<index_t> kLengths = {5, 10, 7, 17, 1, 5};  // 7: no grid, local_mass NaN
}  // namespace

TEST_CASE("The accumulator pools kind_values over images and heads", "[analysis][kinds]") {
  const index_t H = 3;
  for (bool masked : {false, true}) {
    INFO("masked " << masked);
    analysis::KindAccumulator acc(2, H);
    const RandomMaps m0(kLengths, H, masked, 11), m1(kLengths, H, masked, 12);
    acc.add(0, m0.view(), m0.background.data());
    acc.add(1, m1.view());  // no background for layer 1
    CHECK(acc.images(0) == index_t(kLengths.size()));
    for (index_t l = 0; l < 2; ++l) {
      const RandomMaps& m = l == 0 ? m0 : m1;
      const auto maps = m.view();
      for (Kind k : analysis::kAllKinds) {
        std::vector<double> all;
        for (index_t h = 0; h < H; ++h) {
          std::vector<double> vals;
          for (index_t b = 0; b < maps.batch; ++b) {
            const index_t n = maps.length(b);
            const auto v = analysis::kind_values(
                maps.map(b, h), n, maps.keep_of(b), analysis::grid_side_for(n, 0),
                l == 0 ? m.background.data() + maps.offsets[b] : nullptr);
            if (!std::isnan(at(v, k))) vals.push_back(at(v, k));
          }
          all.insert(all.end(), vals.begin(), vals.end());
          const auto& s = acc.stats(l, h, k);
          INFO("layer " << l << " head " << h << " " << analysis::name(k));
          REQUIRE(s.count == std::int64_t(vals.size()));
          if (!vals.empty())
            CHECK(s.mean == Approx(std::accumulate(vals.begin(), vals.end(), 0.0) / double(vals.size())));
        }
        const auto p = acc.pooled(l, k);
        INFO("layer " << l << " " << analysis::name(k));
        REQUIRE(p.count == std::int64_t(all.size()));
        if (!all.empty())
          CHECK(p.mean == Approx(std::accumulate(all.begin(), all.end(), 0.0) / double(all.size())));
      }
    }
    // local_mass: the 7-token image has no grid, the 1-token image no patch query: 4 of 6.
    CHECK(acc.pooled(0, Kind::local_mass).count == 4 * H);
    CHECK(acc.pooled(0, Kind::self_mass).count == 6 * H);
    CHECK(acc.pooled(0, Kind::background_mass).count == 6 * H);
    CHECK(acc.pooled(1, Kind::background_mass).count == 0);
    // cls_mass: no patch query in the 1-token image; CLS masked in image 2 when masked.
    CHECK(acc.pooled(0, Kind::cls_mass).count == (masked ? 4 : 5) * H);
  }
}

TEST_CASE("Streaming in batches equals one pass, with 1 or 2 threads", "[analysis][kinds]") {
  const index_t H = 4;
  const RandomMaps m(kLengths, H, true, 21);
  analysis::KindAccumulator once(1, H), streamed(1, H);
  once.add(0, m.view(), m.background.data());
  for (auto [lo, hi] : {std::pair<index_t, index_t>{0, 2}, {2, 3}, {3, 6}})
    streamed.add(0, m.view(lo, hi), m.background.data());
  require_same(once, streamed);
  CHECK(streamed.images(0) == 6);
#ifdef _OPENMP
  const int before = omp_get_max_threads();
  omp_set_num_threads(1);
  analysis::KindAccumulator one(1, H);
  one.add(0, m.view(), m.background.data());
  omp_set_num_threads(2);
  analysis::KindAccumulator two(1, H);
  two.add(0, m.view(), m.background.data());
  omp_set_num_threads(before);
  require_same(one, two);
  require_same(one, once);
#endif
}

TEST_CASE("The accumulator checks its arguments and writes JSON", "[analysis][kinds]") {
  CHECK_THROWS_AS(analysis::KindAccumulator(0, 2), Error);
  CHECK_THROWS_AS(analysis::KindAccumulator(2, 0), Error);
  CHECK_THROWS_AS(analysis::KindAccumulator(2, 2, -1), Error);
  analysis::KindAccumulator acc(3, 2);  // layer 2 is never fed
  const RandomMaps m({5, 5}, 3, false, 1);
  CHECK_THROWS_WITH(acc.add(0, m.view()), Catch::Contains("expected 2 heads, found 3"));
  CHECK_THROWS_WITH(acc.add(3, m.view()), Catch::Contains("layer 3 out of range (3 layers)"));
  CHECK_THROWS_AS(acc.stats(0, 2, Kind::self_mass), Error);
  CHECK_THROWS_AS(acc.pooled(-1, Kind::self_mass), Error);

  // Layer 0 identity maps, layer 1 uniform (N = 5, 2x2 grid), 2 images x 2 heads.
  auto fill = [](RandomMaps f, bool ident) {
    for (std::size_t r = 0; r < f.probs.size() / 5; ++r)
      for (std::size_t j = 0; j < 5; ++j) f.probs[r * 5 + j] = ident ? double(j == r % 5) : 0.2;
    return f;
  };
  const RandomMaps id = fill(RandomMaps({5, 5}, 2, false, 2), true);
  const RandomMaps un = fill(RandomMaps({5, 5}, 2, false, 3), false);
  acc.add(0, id.view());
  acc.add(1, un.view(), un.background.data());
  CHECK(acc.pooled(0, Kind::mutual_information).mean == Approx(1.0));
  CHECK(acc.pooled(1, Kind::mutual_information).mean == Approx(0.0).margin(1e-12));
  const auto j = acc.to_json();
  CHECK(j["heads"] == 2);
  CHECK(j["kinds"].size() == std::size_t(analysis::kKinds));
  CHECK(j["kinds"][4] == "mutual_information");
  REQUIRE(j["layers"].size() == 3);
  CHECK(j["layers"][0]["images"] == 2);
  CHECK(j["layers"][0]["count"]["self_mass"] == 4);
  CHECK(double(j["layers"][0]["mean"]["self_mass"]) == Approx(1.0));
  CHECK(double(j["layers"][1]["mean"]["local_mass"]) == Approx(0.8));
  CHECK(double(j["layers"][1]["heads"][1]["self_mass"]) == Approx(0.2));
  CHECK(j["layers"][1]["heads"].size() == 2);
  CHECK(j["layers"][0]["mean"]["background_mass"].is_null());  // not measured
  CHECK(!j["layers"][1]["mean"]["background_mass"].is_null());
  CHECK(j["layers"][2]["images"] == 0);
  CHECK(j["layers"][2]["mean"]["self_mass"].is_null());
  CHECK(j["layers"][2]["count"]["self_mass"] == 0);
}

TEST_CASE("Kinds of a ViT's maps, read out of its context", "[analysis][kinds]") {
  using Slot = model::Slot<attention::SoftmaxAttention<double>>;
  // 8x8 images, 2x2 patches: a 4x4 grid, 17 tokens
  const model::VitConfig cfg{.image_size = 8, .channels = 1, .patch = 2, .width = 8, .depth = 2,
                             .heads = 2, .mlp_ratio = 2.0, .classes = 3};
  model::Model<model::Vit<double, Slot>> m(model::make_vit<double, Slot>(cfg));
  m.init(5);
  Rng rng(9);
  const index_t B = 3, E = cfg.image_size * cfg.image_size;
  // The left half of each image is flat (0), the right half noise: 8 background patches.
  std::vector<double> x(std::size_t(B * E), 0.0);
  std::vector<std::uint8_t> bg;
  for (index_t b = 0; b < B; ++b) {
    for (index_t y = 0; y < cfg.image_size; ++y)
      for (index_t c = cfg.image_size / 2; c < cfg.image_size; ++c)
        x[std::size_t(b * E + y * cfg.image_size + c)] = rng.normal();
    const auto f = analysis::background_tokens(x.data() + b * E, 1, cfg.image_size, cfg.patch);
    CHECK(std::count(f.begin(), f.end(), 1) == 8);
    bg.insert(bg.end(), f.begin(), f.end());
  }
  m.forward(x.data(), B, E);
  analysis::KindAccumulator from_model(cfg.depth, cfg.heads), by_hand(cfg.depth, cfg.heads);
  from_model.add_model(m, bg.data());
  const auto maps = analysis::attention_maps(m);
  for (index_t l = 0; l < cfg.depth; ++l) by_hand.add(l, *maps[std::size_t(l)], bg.data());
  require_same(from_model, by_hand);
  for (index_t l = 0; l < cfg.depth; ++l)
    for (Kind k : analysis::kAllKinds) {
      INFO("layer " << l << " " << analysis::name(k));
      CHECK(from_model.pooled(l, k).count == B * cfg.heads);
      const double v = from_model.pooled(l, k).mean;
      CHECK(v >= -1e-12);
      CHECK(v <= 1.0 + 1e-12);
    }
  analysis::KindAccumulator wrong(cfg.depth + 1, cfg.heads);
  CHECK_THROWS_AS(wrong.add_model(m, nullptr), Error);
}
