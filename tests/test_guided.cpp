// Sparsity-guided distillation: the halting distillation loss and its gradient, guided stages
// on a tiny halting teacher (budget honoured, stage 1 lowers the kept-token loss).
#include <cmath>
#include <random>

#include "seqswap/distill/guided.hpp"
#include "seqswap/zoo/student.hpp"
#if defined(SEQSWAP_ZOO_EXTERN)  // linked with the drivers' compiled copy of zoo::AnyMixer<float>
#include "zoo_instances.hpp"
#endif
#include "test_util.hpp"

using namespace seqswap;
using halting::Halter;
using halting::HaltingOptions;

namespace {
model::VitConfig tiny() {
  return {.image_size = 8, .channels = 1, .patch = 2, .width = 16, .depth = 3, .heads = 2,
          .mlp_ratio = 2.0, .classes = 3};
}
io::ImageDataset synthetic(index_t n, std::uint64_t seed) {
  io::ImageDataset d;
  d.name = "synthetic";
  d.count = n;
  d.size = 8;
  d.classes = 3;
  Rng rng(seed);
  for (index_t i = 0; i < n; ++i) {
    const auto y = std::int32_t(rng.below(3));
    for (index_t r = 0; r < 8; ++r)
      for (index_t c = 0; c < 8; ++c)
        d.pixels.push_back(std::uint8_t(rng.below(100) + (c * 3 / 8 == y ? 120 : 0)));
    d.labels.push_back(y);
  }
  return d;
}
}  // namespace

TEST_CASE("halting distillation loss: zero for identical scores, gradient matches finite differences",
          "[halting][guided]") {
  const index_t B = 2, N = 5, L = 4;
  HaltingOptions o{.gamma = 1, .beta = 0.3};
  std::mt19937_64 g(1);
  std::normal_distribution<double> nd;
  std::vector<std::vector<double>> ut(L, std::vector<double>(B * N)), us = ut;
  for (index_t l = 0; l < L; ++l)
    for (index_t k = 0; k < B * N; ++k) {
      ut[l][k] = nd(g);
      us[l][k] = ut[l][k] + 0.5 * nd(g);
    }
  Halter t;
  t.reset(B, N, L, o);
  for (index_t l = 0; l < L; ++l) t.step(l, ut[l].data(), 1);
  const auto masks = distill::teacher_masks<double>(t);
  auto student = [&](const std::vector<std::vector<double>>& u) {
    Halter s;
    s.reset(B, N, L, o);
    for (index_t l = 0; l < L; ++l) s.step(l, u[l].data(), 1, l + 1 < L ? masks[l + 1].data() : nullptr);
    return s;
  };
  distill::GuidedOptions go;
  std::vector<std::vector<double>> draw;
  REQUIRE(distill::halting_distill_loss(t, student(ut), go, draw) == Approx(0.0).margin(1e-12));
  const Halter s = student(us);
  for (index_t l = 0; l < L; ++l) REQUIRE(s.active(l) == t.active(l));
  distill::halting_distill_loss(t, s, go, draw);
  // draw is w.r.t. the raw scores; compare through u: d/du = draw · γ σ (1 − σ).
  for (index_t l = 0; l < L; ++l)
    for (index_t k = 0; k < B * N; ++k) {
      if (!t.active(l)[k] || k % N == 0) continue;
      auto up = us, dn = us;
      up[l][k] += 1e-6;
      dn[l][k] -= 1e-6;
      std::vector<std::vector<double>> tmp;
      const double fd = (distill::halting_distill_loss(t, student(up), go, tmp) -
                         distill::halting_distill_loss(t, student(dn), go, tmp)) / 2e-6;
      const double r = s.raw(l, k);
      INFO("layer " << l << " token " << k);
      REQUIRE(draw[l][k] * r * (1 - r) == Approx(fd).margin(1e-8).epsilon(1e-5));
    }
}

TEST_CASE("checkpoint halting options round-trip and bad metadata is a clear error", "[halting][guided]") {
  io::SafetensorsFile f;
  f.path = "x.safetensors";
  REQUIRE_FALSE(model::read_halting_options(f).has_value());
  HaltingOptions o{.beta = 12, .ponder_weight = 5e-3};
  f.metadata["halting"] = nlohmann::json(o).dump();
  const auto r = model::read_halting_options(f);
  REQUIRE(r.has_value());
  REQUIRE(r->beta == 12);
  REQUIRE(r->ponder_weight == 5e-3);
  f.metadata["halting"] = "{\"gamma\": 10}";
  REQUIRE_THROWS_WITH(model::read_halting_options(f), Catch::Contains("missing key 'beta'"));
  f.metadata["halting"] = "{not json";
  REQUIRE_THROWS_WITH(model::read_halting_options(f), Catch::Contains("not valid JSON"));
}

TEST_CASE("guided stages honour the budget and stage 1 lowers the kept-token loss", "[halting][guided]") {
  const auto cfg = tiny();
  model::VitModel<float> teacher(model::make_vit<float>(cfg));
  teacher.init(2);
  const HaltingOptions th{.gamma = 2, .beta = -1};
  const auto data = synthetic(256, 3);
  // The student: the teacher with a minGRU in block 1.
  auto make_student = [&] {
    zoo::StudentModel<float> s(model::make_vit<float, zoo::AnyMixer<float>>(cfg));
    for (const auto& i : teacher.params_info())  // the teacher's weights, by name
      std::copy(teacher.params().data + i.offset, teacher.params().data + i.offset + i.count, s.param(i.name));
    zoo::replace_layers(s, cfg, distill::parse_plan("layers:1", cfg.depth), {.mixer = "min_gru"});
    return s;
  };
  const auto plan = distill::parse_plan("layers:1", cfg.depth);
  distill::Stage1Options o1{.steps = 1, .batch = 16, .lr = 3e-3};
  auto s0 = make_student();
  const auto first = distill::guided_stage1(teacher, th, s0, plan, data, o1, {});
  o1.steps = 60;
  auto s1 = make_student();
  const auto trained = distill::guided_stage1(teacher, th, s1, plan, data, o1, {});
  REQUIRE(trained.steps == 60);
  INFO("first-step loss " << first.final_loss << ", last 10% " << trained.final_loss);
  REQUIRE(trained.final_loss < 0.7 * first.final_loss);
  // Only the new mixer moved.
  for (const auto& i : s1.params_info()) {
    if (i.name.rfind("blocks.1.attn.", 0) == 0) continue;
    const float* a = s1.params().data + i.offset;
    const float* b = s0.params().data + i.offset;
    INFO(i.name);
    REQUIRE(std::equal(a, a + i.count, b));
  }
  distill::Stage2Options o2{.steps = 7, .batch = 16};
  const auto r2 = distill::guided_stage2(teacher, th, s1, data, o2, {});
  REQUIRE(r2.steps == 7);
  REQUIRE(std::isfinite(r2.final_loss));
}

TEST_CASE("a student compared on the teacher's kept tokens: accuracy, the teacher's, top-1 agreement",
          "[halting][guided]") {
  const auto cfg = tiny();
  model::VitModel<float> teacher(model::make_vit<float>(cfg));
  teacher.init(2);
  const HaltingOptions th{.gamma = 2, .beta = -1};
  const auto data = synthetic(70, 5);  // 70: a ragged last batch of 6 at batch 16
  model::VitModel<float> same(model::make_vit<float>(cfg));
  std::copy_n(teacher.params().data, teacher.param_count(), same.params().data);
  const auto self = distill::compare_on_teacher_masks(teacher, th, same, data, 16);
  REQUIRE(self.agreement == 1.0);
  REQUIRE(self.accuracy == self.teacher_accuracy);
  model::VitModel<float> other(model::make_vit<float>(cfg));
  other.init(9);
  const auto c = distill::compare_on_teacher_masks(teacher, th, other, data, 16);
  // By hand: the same three numbers from the two models' top-1 classes image by image.
  HaltingOptions o = th;
  o.packed = true;
  model::HaltingVit thv(teacher, o);
  model::HaltingVit ohv(other, o);
  index_t agree = 0, right = 0, teacher_right = 0;
  io::BatchLoader loader(data, 16, false, 0);  // the same batches, so the same halting decisions
  std::vector<float> x;
  std::vector<std::int32_t> y;
  while (const index_t n = loader.next(x, y)) {
    const auto tl = thv.forward(x.data(), n, 64);
    std::vector<std::int32_t> t(std::size_t(n), 0);
    for (index_t i = 0; i < n; ++i)
      for (std::int32_t k = 1; k < 3; ++k)
        if (tl.data[i * 3 + k] > tl.data[i * 3 + t[std::size_t(i)]]) t[std::size_t(i)] = k;
    ohv.set_external_masks(distill::teacher_masks<float>(thv.halter()));
    const auto sl = ohv.forward(x.data(), n, 64);
    for (index_t i = 0; i < n; ++i) {
      std::int32_t s = 0;
      for (std::int32_t k = 1; k < 3; ++k)
        if (sl.data[i * 3 + k] > sl.data[i * 3 + s]) s = k;
      agree += s == t[std::size_t(i)];
      right += s == y[std::size_t(i)];
      teacher_right += t[std::size_t(i)] == y[std::size_t(i)];
    }
  }
  REQUIRE(c.agreement == Approx(double(agree) / 70.0));
  REQUIRE(c.accuracy == Approx(double(right) / 70.0));
  REQUIRE(c.teacher_accuracy == Approx(double(teacher_right) / 70.0));
  REQUIRE(c.agreement < 1.0);
}
