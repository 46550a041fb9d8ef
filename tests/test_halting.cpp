// A-ViT halting: the arithmetic on hand-built scores, the losses against hand-computed values,
// finite-difference gradients of the whole halting path, packed == masked, CLS never halts.
#include <cmath>
#include <random>

#include "seqswap/zoo/student.hpp"
#include "seqswap/model/halting_vit.hpp"
#include "seqswap/train/loss.hpp"
#if defined(SEQSWAP_ZOO_EXTERN)  // linked with the drivers' compiled copy of zoo::AnyMixer<float>
#include "zoo_instances.hpp"
#endif
#include "test_util.hpp"

using namespace seqswap;
using halting::Halter;
using halting::HaltingOptions;

namespace {
double logit(double h) { return std::log(h / (1 - h)); }

// B = 1, N = 3 (CLS + 2 tokens), L = 3, γ = 1, β = 0 so that u = logit(h).
Halter hand_built(HaltingOptions o = {.gamma = 1, .beta = 0, .eps = 0.01, .prior_mean = 1, .prior_std = 1}) {
  Halter h;
  h.reset(1, 3, 3, o);
  const double u0[3] = {0, logit(0.6), logit(0.2)};
  const double u1[3] = {0, logit(0.5), logit(0.3)};
  const double u2[3] = {0, logit(0.9), logit(0.8)};  // token 1 has halted; its value is not read
  h.step(0, u0, 1);
  h.step(1, u1, 1);
  h.step(2, u2, 1);
  return h;
}

model::VitConfig tiny() {
  return {.image_size = 8, .channels = 1, .patch = 2, .width = 8, .depth = 4, .heads = 2,
          .mlp_ratio = 2.0, .classes = 3};
}

template <class T>
std::vector<T> random_images(index_t n, index_t numel, std::uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> nd;
  std::vector<T> x(static_cast<std::size_t>(n * numel));
  for (auto& v : x) v = T(nd(g));
  return x;
}
}  // namespace

TEST_CASE("halting arithmetic on hand-built scores", "[halting]") {
  const Halter h = hand_built();
  // Token 1: c = 0.6, 1.1 -> halts at layer 1 with remainder 0.4.
  REQUIRE(h.halt_layer(1) == 1);
  REQUIRE(h.remainder(1) == Approx(0.4));
  REQUIRE(h.weight(0, 1) == Approx(0.6));
  REQUIRE(h.weight(1, 1) == Approx(0.4));
  REQUIRE(h.weight(2, 1) == 0.0);
  // Token 2: c = 0.2, 0.5, then forced h = 1 at the last layer: remainder 0.5.
  REQUIRE(h.halt_layer(2) == 2);
  REQUIRE(h.remainder(2) == Approx(0.5));
  REQUIRE(h.weight(0, 2) == Approx(0.2));
  REQUIRE(h.weight(1, 2) == Approx(0.3));
  REQUIRE(h.weight(2, 2) == Approx(0.5));
  // CLS never halts before the last layer and takes all its weight there.
  REQUIRE(h.halt_layer(0) == 2);
  REQUIRE(h.weight(0, 0) == 0.0);
  REQUIRE(h.weight(2, 0) == Approx(1.0));
  // Active sets and keep ratios over the two patch tokens.
  REQUIRE(h.active(2)[0] == 1);
  REQUIRE(h.active(2)[1] == 0);
  REQUIRE(h.active(2)[2] == 1);
  REQUIRE(h.keep_ratio(0) == 1.0);
  REQUIRE(h.keep_ratio(2) == 0.5);
  REQUIRE(h.mean_keep_ratio() == Approx((1.0 + 1.0 + 0.5) / 3));
}

TEST_CASE("ponder and prior losses against hand-computed values", "[halting]") {
  const Halter h = hand_built();
  // Ponder: mean over the patch tokens of (layers run + remainder) = ((2 + 0.4) + (3 + 0.5)) / 2.
  REQUIRE(h.ponder() == Approx(2.95));
  // H̄ = (0.6+0.2)/2, (0.5+0.3)/2, (0+0.8)/2 = 0.4 each -> q = 1/3; target ∝ (e^-½, 1, e^-½).
  const auto hbar = h.mean_scores();
  REQUIRE(hbar[0] == Approx(0.4));
  REQUIRE(hbar[1] == Approx(0.4));
  REQUIRE(hbar[2] == Approx(0.4));
  REQUIRE(h.prior() == Approx(0.030166900189269617).epsilon(1e-9));
  // The public code's variant: H̄ over images 1.. and all tokens (CLS included), KL / L.
  HaltingOptions bug{.gamma = 1, .beta = 0, .prior_mean = 1, .public_prior_bug = true};
  Halter hb;
  hb.reset(2, 2, 2, bug);
  const double u0[4] = {0, logit(0.5), 0, logit(0.25)};
  const double u1[4] = {0, 0, 0, logit(0.75)};
  hb.step(0, u0, 1);
  hb.step(1, u1, 1);
  // Image 0 is dropped and CLS (score 0) is kept: H̄ = (0 + 0.25)/2, (0 + 0.75)/2.
  const auto hb_bar = hb.mean_scores();
  REQUIRE(hb_bar[0] == Approx(0.125));
  REQUIRE(hb_bar[1] == Approx(0.375));
  // target over 2 layers at mean 1: (e^-½, 1)/(1 + e^-½); q = (0.25, 0.75); KL divided by L = 2.
  const double e = std::exp(-0.5), p0 = e / (1 + e), p1 = 1 / (1 + e);
  REQUIRE(hb.prior() == Approx((p0 * std::log(p0 / 0.25) + p1 * std::log(p1 / 0.75)) / 2));
}

TEST_CASE("halting score gradients match finite differences", "[halting]") {
  // J = Σ_l Σ_k a_lk w^l_k + α_p ponder + α_d prior, differentiated w.r.t. every u.
  const index_t Bn = 2, N = 4, L = 4;
  HaltingOptions o{.gamma = 1.5, .beta = 0.5, .ponder_weight = 0.3, .prior_weight = 0.7, .prior_mean = 2};
  std::mt19937_64 g(7);
  std::normal_distribution<double> nd;
  std::vector<std::vector<double>> u(L, std::vector<double>(Bn * N)), a = u;
  for (auto& r : u)
    for (auto& v : r) v = nd(g);
  for (auto& r : a)
    for (auto& v : r) v = nd(g);
  auto run = [&](const std::vector<std::vector<double>>& uu, Halter& h) {
    h.reset(Bn, N, L, o);
    for (index_t l = 0; l < L; ++l) h.step(l, uu[l].data(), 1);
    double j = h.loss();
    for (index_t l = 0; l < L; ++l)
      for (index_t k = 0; k < Bn * N; ++k) j += a[l][k] * h.weight(l, k);
    return j;
  };
  Halter h;
  run(u, h);
  // Not degenerate: some patch token halts before the last layer and some reaches it.
  bool early = false, late = false;
  for (index_t k = 0; k < Bn * N; ++k) {
    if (k % N == 0) continue;
    early |= h.halt_layer(k) < L - 1;
    late |= h.halt_layer(k) == L - 1;
  }
  REQUIRE(early);
  REQUIRE(late);
  std::vector<std::vector<double>> du;
  h.backward(a, du);
  const double step = 1e-6;
  for (index_t l = 0; l < L; ++l)
    for (index_t k = 0; k < Bn * N; ++k) {
      if (!h.active(l)[k]) continue;
      auto up = u, dn = u;
      up[l][k] += step;
      dn[l][k] -= step;
      Halter h1, h2;
      const double fd = (run(up, h1) - run(dn, h2)) / (2 * step);
      INFO("layer " << l << " token " << k);
      REQUIRE(du[l][k] == Approx(fd).margin(1e-7).epsilon(1e-5));
    }
}

TEST_CASE("CLS never halts, the last layer halts everything", "[halting]") {
  // β very negative: every patch token halts after block 0.
  model::VitModel<float> m(model::make_vit<float>(tiny()));
  m.init(3);
  model::HaltingVit<float> hv(m, {.gamma = 1, .beta = -50});
  const auto x = random_images<float>(3, 64, 1);
  hv.forward(x.data(), 3, 64);
  const auto& h = hv.halter();
  const index_t N = hv.tokens(), L = 4;
  for (index_t l = 0; l < L; ++l)
    for (index_t b = 0; b < 3; ++b) REQUIRE(h.active(l)[b * N] == 1);
  REQUIRE(h.keep_ratio(0) == 1.0);
  REQUIRE(h.keep_ratio(1) == 0.0);
  for (index_t b = 0; b < 3; ++b) {
    REQUIRE(h.halt_layer(b * N) == L - 1);
    for (index_t i = 1; i < N; ++i) REQUIRE(h.halt_layer(b * N + i) == 0);
  }
}

TEST_CASE("packed and masked halting give the same logits and gradients", "[halting]") {
  auto check_pair = [](auto& m, const std::string& what) {
    using Slot = std::decay_t<decltype(m.net().mixer(0))>;
    const auto x = random_images<float>(5, 64, 11);
    std::vector<float> logits[2], grads[2];
    double keep[2];
    for (int packed = 0; packed < 2; ++packed) {
      model::HaltingVit<float, Slot> hv(m, {.gamma = 2, .beta = -1, .packed = packed == 1});
      auto y = hv.forward(x.data(), 5, 64);
      logits[packed].assign(y.data, y.data + y.total() * y.dim);
      keep[packed] = hv.halter().mean_keep_ratio();
      std::vector<float> dl(logits[packed].size());
      for (std::size_t i = 0; i < dl.size(); ++i) dl[i] = float(std::sin(double(i)));
      hv.zero_grad();
      hv.backward(dl.data());
      auto g = hv.grads();
      grads[packed].assign(g.data, g.data + g.size);
    }
    INFO(what << ": mean keep ratio " << keep[0]);
    REQUIRE(keep[0] == keep[1]);
    REQUIRE(keep[0] < 0.9);  // tokens really halt
    REQUIRE(keep[0] > 0.3);
    test_util::require_close(logits[1].data(), logits[0], 1e-5, what + " logits");
    test_util::require_close(grads[1].data(), grads[0], 1e-4, what + " gradients");
  };
  model::VitModel<float> m(model::make_vit<float>(tiny()));
  m.init(5);
  check_pair(m, "softmax attention");
  // A student with sequential mixers in two blocks (raster scans skip masked tokens).
  zoo::StudentModel<float> s(model::make_vit<float, zoo::AnyMixer<float>>(tiny()));
  s.init(5);
  zoo::replace_layers(s, tiny(), distill::parse_plan("layers:1,2", 4), {.mixer = "min_gru"});
  check_pair(s, "min_gru student");
  zoo::replace_layers(s, tiny(), distill::parse_plan("layers:1", 4), {.mixer = "selective_ssm"});
  check_pair(s, "selective_ssm student");
}

TEST_CASE("external masks decide which tokens run", "[halting]") {
  model::VitModel<float> m(model::make_vit<float>(tiny()));
  m.init(9);
  const index_t Bn = 2, N = 17, L = 4;
  std::vector<std::vector<std::uint8_t>> masks(L, std::vector<std::uint8_t>(Bn * N, 1));
  for (index_t l = 1; l < L; ++l)
    for (index_t k = 0; k < Bn * N; ++k)
      masks[l][k] = (k % N == 0) || (masks[l - 1][k] && (k * 7 + l) % 4 != 0);
  model::HaltingVit<float> hv(m, {});
  hv.set_external_masks(masks);
  const auto x = random_images<float>(Bn, 64, 2);
  hv.forward(x.data(), Bn, 64);
  for (index_t l = 0; l < L; ++l) {
    REQUIRE(hv.halter().active(l) == masks[l]);
    REQUIRE(hv.block_layout(l).total() == std::count(masks[l].begin(), masks[l].end(), 1));
  }
}

TEST_CASE("halting ViT gradients match finite differences (double)", "[halting][slow]") {
  // CE + a random linear function of the halting-weighted output + ponder + prior, all with
  // weights large enough to matter, w.r.t. a sample of every parameter tensor.
  model::VitModel<double> m(model::make_vit<double>(tiny()));
  m.init(21);
  HaltingOptions o{.gamma = 2, .beta = -1.2, .ponder_weight = 0.2, .prior_weight = 0.5, .prior_mean = 2};
  model::HaltingVit<double> hv(m, o);
  const index_t Bn = 3;
  const auto x = random_images<double>(Bn, 64, 4);
  const std::int32_t labels[Bn] = {0, 2, 1};
  std::vector<double> r;
  auto loss = [&](bool grad) {
    auto y = hv.forward(x.data(), Bn, 64);
    std::vector<double> dl(static_cast<std::size_t>(Bn * 3));
    const auto ce = train::cross_entropy<double>(y.data, labels, Bn, 3, 0.0, dl.data());
    const auto& out = hv.output();
    if (r.empty()) {
      std::mt19937_64 g(5);
      std::normal_distribution<double> nd;
      r.resize(out.size());
      for (auto& v : r) v = 0.1 * nd(g);
    }
    double j = ce.loss + hv.halter().loss();
    for (std::size_t i = 0; i < out.size(); ++i) j += r[i] * out[i];
    if (grad) {
      hv.zero_grad();
      hv.backward(dl.data(), r.data());
    }
    return j;
  };
  loss(true);
  const auto& h = hv.halter();
  // Halting decisions must not sit on a threshold (else finite differences cross it).
  std::vector<index_t> halts;
  bool early = false;
  for (std::size_t k = 0; k < std::size_t(Bn * hv.tokens()); ++k) {
    halts.push_back(h.halt_layer(k));
    early |= k % std::size_t(hv.tokens()) != 0 && h.halt_layer(k) < 3;
  }
  REQUIRE(early);
  REQUIRE(h.mean_keep_ratio() < 0.95);
  std::vector<double> analytic(m.grads().data, m.grads().data + m.grads().size);
  const double step = 1e-6;
  std::mt19937_64 g(3);
  int checked = 0;
  for (const auto& info : m.params_info()) {
    for (int s = 0; s < 3; ++s) {
      const std::size_t idx = info.offset + g() % info.count;
      double* p = m.params().data + idx;
      const double saved = *p;
      *p = saved + step;
      const double jp = loss(false);
      std::vector<index_t> hp;
      for (std::size_t k = 0; k < halts.size(); ++k) hp.push_back(h.halt_layer(k));
      *p = saved - step;
      const double jm = loss(false);
      std::vector<index_t> hm;
      for (std::size_t k = 0; k < halts.size(); ++k) hm.push_back(h.halt_layer(k));
      *p = saved;
      if (hp != halts || hm != halts) continue;  // crossed a threshold: not differentiable here
      const double fd = (jp - jm) / (2 * step);
      INFO(info.name << "[" << idx - info.offset << "]");
      REQUIRE(analytic[idx] == Approx(fd).margin(1e-7).epsilon(1e-5));
      ++checked;
    }
  }
  REQUIRE(checked > int(m.params_info().size()));
}
