// Layer-wise distillation with the teacher and the student on the CUDA backend, emulated on
// the CPU (tests/device_emulation.hpp): every stage-1 protocol (teacher-forced MSE before the
// projection, cosine after it, free-running with CE), the stage-1 layer losses and stage 2 with
// KL to the teacher give the host run's parameters and losses. The match losses then run as the
// device functor (distill::detail::MatchRows) reduced on the "device", the logits cross to the
// host and their gradient back, and the trainable mask lives on the device.

#include "device_model_checks.hpp"
#include "seqswap/distill/stages.hpp"
#include "test_util.hpp"

namespace {
using namespace seqswap;
using Attn = attention::SoftmaxAttention<float>;
using Mix = mixers::MinGru<float>;
using TeacherNet = model::Vit<float>;
using StudentNet = model::VitOf<float, model::Layers<Attn, 1>, model::Layers<Mix, 1>>;

// A teacher (both blocks attention) and a student (block 1 a minGRU, block 0 the teacher's
// attention), each on the host and on the device with the same parameters.
struct Pair {
  model::VitConfig cfg = test::device_checks::small_config();
  model::Model<TeacherNet, backend::Host> teacher{model::make_vit<float>(cfg)};
  model::Model<TeacherNet, backend::Cuda> dteacher{model::make_vit<float>(cfg)};
  model::Model<StudentNet, backend::Host> student{model::make_vit<float, model::Layers<Attn, 1>, model::Layers<Mix, 1>>(cfg)};
  model::Model<StudentNet, backend::Cuda> dstudent{
      model::make_vit<float, model::Layers<Attn, 1>, model::Layers<Mix, 1>>(cfg)};
  Pair() {
    teacher.init(2);
    dteacher.init(2);
    student.init(7);
    dstudent.init(7);
  }
  std::vector<float> host_params() const {
    return {student.params().data, student.params().data + student.param_count()};
  }
  std::vector<float> device_params() { return test::down(dstudent.params().data, dstudent.param_count()); }
};

std::size_t count_changed(const std::vector<float>& a, const std::vector<float>& b) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < a.size(); ++i) n += a[i] != b[i];
  return n;
}
}  // namespace

TEST_CASE("stage 1 on device models equals the host run, in every protocol", "[device][distill]") {
  const auto data = test::device_checks::synthetic_data();
  const auto plan = distill::parse_plan("layers:1", 2);
  struct Case {
    const char* what;
    distill::Stage1Options o;
  };
  const Case cases[] = {
      {"teacher-forced MSE", {.steps = 3, .batch = 8, .lr = 1e-3, .mse_weight = 1.5}},
      {"teacher-forced cosine after the projection",
       {.steps = 3, .batch = 8, .lr = 1e-3, .loss = distill::MatchLoss::cosine, .after_projection = true}},
      {"free-running + CE", {.steps = 3, .batch = 8, .lr = 1e-3, .ce_weight = 0.5, .mse_weight = 0.8, .free_running = true}},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    Pair m;
    const auto before = m.host_params();
    const auto rh = distill::stage1(m.teacher, m.student, plan, data, c.o);
    const auto rd = distill::stage1(m.dteacher, m.dstudent, plan, data, c.o);
    const auto after = m.host_params();
    CHECK(count_changed(before, after) > 100);  // the mixer trained
    CHECK(rd.final_loss == Approx(rh.final_loss).epsilon(1e-4));
    REQUIRE(rd.layer_loss.size() == 1);
    CHECK(rd.layer_loss[0] == Approx(rh.layer_loss[0]).epsilon(1e-4));
    test::failures = 0;
    test::expect_close(m.device_params(), after, 1e-4, std::string(c.what) + ": student parameters after stage 1");
    REQUIRE(test::failures == 0);
    // Only the new mixer moved, on both.
    std::vector<std::uint8_t> moved(after.size());
    for (std::size_t i = 0; i < after.size(); ++i) moved[i] = after[i] != before[i];
    for (const auto& i : m.student.params_info())
      if (i.name.rfind("blocks.1.attn.", 0) != 0 || i.name.rfind("blocks.1.attn.proj.", 0) == 0)
        for (std::size_t k = i.offset; k < i.offset + i.count; ++k) REQUIRE(!moved[k]);
  }
  // The layer losses after training (no backward), on both.
  Pair m;
  const distill::Stage1Options o{.steps = 2, .batch = 8};
  distill::stage1(m.teacher, m.student, plan, data, o);
  distill::stage1(m.dteacher, m.dstudent, plan, data, o);
  const auto lh = distill::layer_losses(m.teacher, m.student, plan, data, 16);
  const auto ld = distill::layer_losses(m.dteacher, m.dstudent, plan, data, 16);
  REQUIRE(ld.size() == 1);
  CHECK(lh[0] > 0);
  CHECK(ld[0] == Approx(lh[0]).epsilon(1e-4));
}

TEST_CASE("stage 2 with KL to the teacher on device models equals the host run", "[device][distill]") {
  const auto data = test::device_checks::synthetic_data();
  Pair m;
  const distill::Stage2Options o{.steps = 3, .batch = 8, .lr = 1e-3, .kl_weight = 0.7, .temperature = 2.0};
  const auto before = m.host_params();
  const auto rh = distill::stage2(m.teacher, m.student, data, o);
  const auto rd = distill::stage2(m.dteacher, m.dstudent, data, o);
  const auto after = m.host_params();
  CHECK(count_changed(before, after) > after.size() / 2);  // every part trains
  CHECK(rd.final_loss == Approx(rh.final_loss).epsilon(1e-4));
  test::failures = 0;
  test::expect_close(m.device_params(), after, 1e-4, "student parameters after stage 2");
  REQUIRE(test::failures == 0);
}
