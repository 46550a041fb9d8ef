// Small pieces checked against hand computations: the GEMM wrapper (ops/gemm.hpp), the
// schedule (train/schedule.hpp), AdamW and clipping (train/adamw.hpp), the output projection's
// masked backward (layers/output_projection.hpp), Residual's masking (model/residual.hpp) and
// the mixer registry (zoo/registry.hpp).
#include "seqswap/backend/host.hpp"
#include "seqswap/layers/gelu.hpp"
#include "seqswap/ops/gelu.hpp"
#include "seqswap/layers/output_projection.hpp"
#include "seqswap/io/progress.hpp"
#include "seqswap/mixers/projected.hpp"
#include "seqswap/zoo/registry.hpp"
#include "seqswap/model/residual.hpp"
#include "seqswap/ops/gemm.hpp"
#include "seqswap/train/adamw.hpp"
#include "seqswap/train/schedule.hpp"
#include "test_util.hpp"

using namespace seqswap;

TEST_CASE("linear_forward equals the naive triple loop", "[ops][gemm]") {
  const index_t rows = 5, in = 3, out = 4;
  std::vector<double> x(rows * in), w(out * in), b(out), y(rows * out);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = double(i) * 0.1 - 0.7;
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = double(i % 5) * 0.3 - 0.5;
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = double(i);
  ops::linear_forward(x.data(), rows, in, w.data(), b.data(), out, y.data());
  for (index_t r = 0; r < rows; ++r)
    for (index_t o = 0; o < out; ++o) {
      double s = b[o];
      for (index_t k = 0; k < in; ++k) s += x[r * in + k] * w[o * in + k];
      REQUIRE(y[r * out + o] == Approx(s).margin(1e-12));
    }
  REQUIRE(host::max_threads() >= 1);
}

TEST_CASE("cosine schedule with linear warm-up", "[train][schedule]") {
  const train::CosineSchedule s{.base_lr = 1.0, .min_lr = 0.1, .warmup_steps = 4, .total_steps = 14};
  REQUIRE(s.at(0) == Approx(0.25));
  REQUIRE(s.at(3) == Approx(1.0));
  REQUIRE(s.at(4) == Approx(1.0));          // cosine starts at the peak
  REQUIRE(s.at(9) == Approx(0.55));         // half way: min + (base - min) / 2
  REQUIRE(s.at(14) == Approx(0.1));
  REQUIRE(s.at(100) == Approx(0.1));        // clamped after the end
}

TEST_CASE("AdamW step and gradient clipping match hand values", "[train][adamw]") {
  std::vector<ParamInfo> infos{{"w", {2}, 0, 2, true, Init::zeros, 0.0}, {"b", {1}, 2, 1, false, Init::zeros, 0.0}};
  train::AdamW<double> opt({.lr = 0.1, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.5}, infos, 3);
  std::vector<double> p{1.0, -2.0, 3.0}, g{0.5, 0.5, -1.0}, m(3, 0.0), v(3, 0.0);
  opt.step(p.data(), g.data(), m.data(), v.data(), 3, 0.1);
  // first step: m̂ = g, v̂ = g², update = lr · g/(|g| + eps) = ±0.1; decay only on w: p·(1 − lr·wd)
  REQUIRE(p[0] == Approx(1.0 * 0.95 - 0.1).epsilon(1e-6));
  REQUIRE(p[1] == Approx(-2.0 * 0.95 - 0.1).epsilon(1e-6));
  REQUIRE(p[2] == Approx(3.0 + 0.1).epsilon(1e-6));
  std::vector<std::uint8_t> frozen{1, 0, 1};
  const double before = p[1];
  opt.step(p.data(), g.data(), m.data(), v.data(), 3, 0.1, frozen.data());
  REQUIRE(p[1] == before);  // a frozen entry does not move
  std::vector<double> gg{3.0, 4.0};
  REQUIRE(train::clip_grad_norm(gg.data(), 2, 1.0) == Approx(5.0));
  REQUIRE(std::hypot(gg[0], gg[1]) == Approx(1.0).epsilon(1e-5));
  REQUIRE_THROWS_WITH(opt.step(p.data(), g.data(), m.data(), v.data(), 2, 0.1), Catch::Contains("built for 3"));
}

TEST_CASE("projection_backward: masked rows pass nothing, dpre_in skips the projection", "[layers][projection]") {
  layers::Linear<double> proj({.in = 2, .out = 3, .bias = true, .name = "proj"});
  std::vector<double> p(proj.param_count(), 0.5), g(p.size(), 0.0);
  const Layout pre = Layout::dense(1, 3, 2);
  const std::vector<std::uint8_t> keep{1, 0, 1};
  std::vector<double> x(pre.size(), 1.0), y(9);
  layers::Linear<double>::Ctx<backend::Host> ctx;
  proj.forward(ParamsView<const double>{p.data(), p.size()}, view_of<const double>(x.data(), pre),
               view_of<double>(y.data(), Layout::dense(1, 3, 3)), ctx);
  Buffer<double> scratch, dpre;
  const std::vector<double> dy(9, 1.0);
  layers::projection_backward<double, backend::Host>(proj, {p.data(), p.size()}, {g.data(), g.size()}, ctx, dy.data(),
                                                     nullptr, pre, keep.data(), 3, scratch, dpre);
  REQUIRE(dpre[2] == 0.0);  // token 1 is masked
  REQUIRE(dpre[3] == 0.0);
  REQUIRE(dpre[0] == Approx(1.5));
  REQUIRE(g.back() == Approx(2.0));  // bias gradient sums the two kept rows only
  const std::vector<double> din{7, 7, 7, 7, 7, 7};
  std::fill(g.begin(), g.end(), 0.0);
  layers::projection_backward<double, backend::Host>(proj, {p.data(), p.size()}, {g.data(), g.size()}, ctx, nullptr,
                                                     din.data(), pre, keep.data(), 3, scratch, dpre);
  REQUIRE(dpre[0] == 7.0);
  REQUIRE(dpre[2] == 0.0);
  for (double v : g) REQUIRE(v == 0.0);  // the projection receives nothing
}

TEST_CASE("Residual leaves masked tokens unchanged", "[model][residual]") {
  model::Residual<layers::Gelu<double>> r;
  const Layout l = Layout::dense(1, 3, 2);
  const std::vector<std::uint8_t> keep{1, 0, 1};
  std::vector<double> x{1, 2, 3, 4, 5, 6}, y(6);
  model::Residual<layers::Gelu<double>>::Ctx<backend::Host> c;
  r.forward({}, view_of<const double>(x.data(), l, keep.data()), view_of<double>(y.data(), l, keep.data()), c);
  REQUIRE(y[2] == 3.0);
  REQUIRE(y[3] == 4.0);
  REQUIRE(y[0] > 1.0);
}

TEST_CASE("the mixer registry seats every named mixer and names the unknown", "[mixers][registry]") {
  const model::VitConfig cfg{.width = 64, .heads = 4};
  zoo::AnyMixer<float> slot;
  for (const auto& n : zoo::mixer_names()) {
    zoo::seat_mixer(slot, n, cfg);
    INFO(n);
    REQUIRE(slot.kind_name() == n);
    REQUIRE(slot.param_count() > 0);
  }
  zoo::seat_mixer(slot, "softmax_attention", cfg);
  REQUIRE(slot.param_count() == 4 * 64 * 64 + 4 * 64);
  REQUIRE_THROWS_WITH(zoo::seat_mixer(slot, "transformer", cfg),
                      Catch::Contains("unknown mixer 'transformer'") && Catch::Contains("selective_ssm"));
  REQUIRE_THROWS_WITH(zoo::seat_mixer(slot, "linear_attention", cfg, {{"feature", "cosine"}}),
                      Catch::Contains("unknown feature 'cosine'"));
  REQUIRE_THROWS_WITH(zoo::seat_mixer(slot, "min_gru", cfg, {{"order", "spiral"}}), Catch::Contains("spiral"));
  // Issue 19: a fraction or 1e40 for an integer option was truncated or undefined behaviour.
  REQUIRE_THROWS_WITH(zoo::seat_mixer(slot, "min_gru", cfg, {{"expand", 2.5}}),
                      Catch::Contains("'expand'") && Catch::Contains("whole number"));
  REQUIRE_THROWS_WITH(zoo::seat_mixer(slot, "selective_ssm", cfg, {{"state", 1e40}}),
                      Catch::Contains("'state'") && Catch::Contains("out of range"));
  REQUIRE_THROWS_WITH(zoo::seat_mixer(slot, "min_gru", cfg, {{"bidirectional", 1}}),
                      Catch::Contains("'bidirectional'") && Catch::Contains("true or false"));
  REQUIRE(slot.kind_name() == "softmax_attention");  // a refused seat leaves the slot as it was
}

TEST_CASE("float GELU (rational erf) matches the double-precision GELU", "[ops][gelu]") {
  // Every 1/64 from -12 to 12 (both clamps of the rational erf included), and sizes past the
  // backward's 2048-element chunk.
  std::vector<float> xf;
  for (int i = -768; i <= 768; ++i) xf.push_back(float(i) / 64.0f);
  const std::size_t n = xf.size();
  std::vector<double> xd(xf.begin(), xf.end()), yd(n), gd(n), ones(n, 1.0);
  std::vector<float> yf(n), gf(n), onesf(n, 1.0f);
  ops::gelu_forward(xd.data(), n, yd.data());
  ops::gelu_backward(xd.data(), ones.data(), n, gd.data());
  ops::gelu_forward(xf.data(), n, yf.data());
  ops::gelu_backward(xf.data(), onesf.data(), n, gf.data());
  for (std::size_t i = 0; i < n; ++i) {
    INFO("x = " << xd[i]);
    REQUIRE(std::abs(yf[i] - yd[i]) <= 2e-6 * std::max(1.0, std::abs(yd[i])));
    REQUIRE(std::abs(gf[i] - gd[i]) <= 2e-6);
  }
  // In place (dx = dy), as Mlp's backward calls it.
  std::vector<float> d = onesf;
  ops::gelu_backward(xf.data(), d.data(), n, d.data());
  REQUIRE(d == gf);
}

TEST_CASE("the parts every composed mixer is made of", "[mixers][parts]") {
  // mixers/projected.hpp's MixerCore contract holds for every core, and the composed mixers are
  // Mixers; io/progress.hpp formats the ETA the drivers print.
  static_assert(mixers::MixerCore<mixers::MinGruCore<double>>);
  static_assert(mixers::MixerCore<mixers::RetentionCore<float>>);
  static_assert(mixers::MixerCore<mixers::ConvCore<double, mixers::conv::Seq1d>>);
  static_assert(Mixer<mixers::Projected<mixers::Ordered<mixers::MinGruCore<float>>>, backend::Host>);
  REQUIRE(io::Progress::hms(3725.2) == "1:02:05");
  REQUIRE(io::Progress::hms(0) == "0:00:00");
}
