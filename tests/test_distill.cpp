// Layer-wise distillation: students built from plans, stage 1 and stage 2 on a tiny model.
#include "seqswap/distill/stages.hpp"
#include "seqswap/zoo/student.hpp"
#include "test_util.hpp"

using namespace seqswap;

namespace {
model::VitConfig tiny() {
  return {.image_size = 8, .channels = 1, .patch = 2, .width = 16, .depth = 3, .heads = 2,
          .mlp_ratio = 2.0, .classes = 3};
}
// Random 8x8 images whose label is which third of the image is brightest (learnable).
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
zoo::StudentModel<float> teacher_model(std::uint64_t seed) {
  zoo::StudentModel<float> t(model::make_vit<float, zoo::AnyMixer<float>>(tiny()));
  t.init(seed);
  return t;
}
}  // namespace

TEST_CASE("student parameters = teacher - replaced attention + mixers", "[distill]") {
  auto teacher = teacher_model(1);
  const auto cfg = tiny();
  for (const std::string mixer : {"min_gru", "linear_attention", "selective_ssm", "multi_head_lstm"}) {
    auto student = teacher;
    const auto plan = distill::parse_plan("layers:0,2", cfg.depth);
    zoo::replace_layers(student, cfg, plan, {.mixer = mixer});
    std::size_t expected = teacher.param_count();
    for (index_t l : plan.layers)
      expected = expected - distill::mixer_params(teacher, l) + distill::mixer_params(student, l);
    INFO(mixer);
    REQUIRE(student.param_count() == expected);
    REQUIRE(student.net().mixer(0).kind_name() == mixer);
    REQUIRE(student.net().mixer(1).kind_name() == "softmax_attention");
    // the teacher's projection is reused by name
    REQUIRE(student.param("blocks.2.attn.proj.weight")[5] == teacher.param("blocks.2.attn.proj.weight")[5]);
  }
  auto student = teacher;
  REQUIRE_THROWS_WITH(zoo::replace_layers(student, cfg, distill::parse_plan("single:1", 3), {.mixer = "mamba"}),
                      Catch::Contains("unknown mixer 'mamba'") && Catch::Contains("min_gru"));
  REQUIRE_THROWS_WITH(zoo::replace_layers(student, cfg, distill::parse_plan("single:1", 3),
                                              {.mixer = "min_gru", .mixer_options = {{"expnad", 2}}}),
                      Catch::Contains("unknown option 'expnad'"));
}

TEST_CASE("a student whose mixers are copies of the teacher's attention reproduces its logits", "[distill]") {
  auto teacher = teacher_model(2);
  const auto cfg = tiny();
  auto student = teacher;
  zoo::replace_layers(student, cfg, distill::parse_plan("layers:0,1,2", 3), {.mixer = "softmax_attention"});
  REQUIRE(student.param_count() == teacher.param_count());
  const auto data = synthetic(5, 3);
  io::BatchLoader loader(data, 5, false, 0);
  std::vector<float> x;
  std::vector<std::int32_t> y;
  loader.next(x, y);
  const auto t = teacher.forward(x.data(), 5, 64);
  std::vector<float> tl(t.data, t.data + 15);
  const auto s = student.forward(x.data(), 5, 64);
  for (int i = 0; i < 15; ++i) REQUIRE(s.data[i] == tl[i]);
}

TEST_CASE("stage 1 lowers the layer loss, honours the budget and moves only the new mixers", "[distill]") {
  auto teacher = teacher_model(3);
  const auto cfg = tiny();
  const auto data = synthetic(128, 4);
  for (const std::string mixer : {"min_gru", "linear_attention"}) {
    auto student = teacher;
    const auto plan = distill::parse_plan("layers:1,2", 3);
    zoo::replace_layers(student, cfg, plan, {.mixer = mixer, .seed = 5});
    const auto before_params = std::vector<float>(student.params().data, student.params().data + student.param_count());
    const auto before = distill::layer_losses(teacher, student, plan, data, 64);
    const auto r = distill::stage1(teacher, student, plan, data, {.steps = 60, .batch = 32, .lr = 3e-3});
    const auto after = distill::layer_losses(teacher, student, plan, data, 64);
    INFO(mixer << ": layer losses " << before[0] << " -> " << after[0] << ", " << before[1] << " -> " << after[1]);
    REQUIRE(r.steps == 60);
    for (std::size_t k = 0; k < 2; ++k) REQUIRE(after[k] < 0.7 * before[k]);
    // Only blocks 1 and 2's new mixers (minus their projections) moved.
    for (const auto& i : student.params_info()) {
      const bool mixer_param = (i.name.rfind("blocks.1.attn.", 0) == 0 || i.name.rfind("blocks.2.attn.", 0) == 0) &&
                               i.name.find(".attn.proj.") == std::string::npos;
      bool moved = false;
      for (std::size_t k = 0; k < i.count; ++k) moved |= student.params().data[i.offset + k] != before_params[i.offset + k];
      INFO(i.name);
      if (!mixer_param) REQUIRE_FALSE(moved);
    }
  }
}

TEST_CASE("stage 2 trains every parameter and lowers the loss", "[distill]") {
  auto teacher = teacher_model(4);
  const auto cfg = tiny();
  const auto data = synthetic(256, 6);
  auto student = teacher;
  const auto plan = distill::parse_plan("single:1", 3);
  zoo::replace_layers(student, cfg, plan, {.mixer = "min_gru"});
  const auto before = train::evaluate(student, data);
  const auto r = distill::stage2(teacher, student, data, {.steps = 80, .batch = 32, .lr = 3e-3, .kl_weight = 0.5,
                                                          .temperature = 2.0});
  const auto after = train::evaluate(student, data);
  INFO("loss " << before.loss << " -> " << after.loss << ", accuracy " << before.accuracy << " -> " << after.accuracy);
  REQUIRE(r.steps == 80);
  REQUIRE(after.loss < before.loss);
  REQUIRE(after.accuracy > 0.6);
  // Issue 19: stage 2 recorded -5 steps where stage 1 refused them.
  REQUIRE_THROWS_WITH(distill::stage2(teacher, student, data, {.steps = -5}),
                      Catch::Contains("stage 2: expected steps >= 0, found -5"));
}
