// Layer-wise distillation: students built from plans, stage 1 and stage 2 on a tiny model.
#include "seqswap/distill/stages.hpp"
#include "seqswap/zoo/student.hpp"
#if defined(SEQSWAP_ZOO_EXTERN)  // linked with the drivers' compiled copy of zoo::AnyMixer<float>
#include "zoo_instances.hpp"
#endif
#include "test_util.hpp"

#include <unistd.h>

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
// For every tensor of `student`: (whether it belongs to blocks 1 and 2's new mixers, minus
// their projections; whether any element differs from `before`).
template <class M>
std::vector<std::tuple<std::string, bool, bool>> moved_params(const M& student, const std::vector<float>& before) {
  std::vector<std::tuple<std::string, bool, bool>> v;
  for (const auto& i : student.params_info()) {
    const bool mixer_param = (i.name.rfind("blocks.1.attn.", 0) == 0 || i.name.rfind("blocks.2.attn.", 0) == 0) &&
                             i.name.find(".attn.proj.") == std::string::npos;
    bool moved = false;
    for (std::size_t k = 0; k < i.count; ++k) moved |= student.params().data[i.offset + k] != before[i.offset + k];
    v.emplace_back(i.name, mixer_param, moved);
  }
  return v;
}
// The first n images of synthetic(n, seed), as one batch of floats.
std::vector<float> synthetic_batch(index_t n, std::uint64_t seed) {
  const auto data = synthetic(n, seed);
  io::BatchLoader loader(data, n, false, 0);
  std::vector<float> x;
  std::vector<std::int32_t> y;
  loader.next(x, y);
  return x;
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
  const auto x = synthetic_batch(5, 3);
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
    for (const auto& [name, mixer_param, moved] : moved_params(student, before_params)) {
      INFO(name);
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

TEST_CASE("free-running stage 1: the tapped layer terms give the finite-difference gradient", "[distill]") {
  // Double precision: loss(θ) = Σ_k mean (pre_k(student) − pre_k(teacher))² + w CE, the student
  // run end to end; the gradient of every layer term enters at its mixer's pre-projection
  // output and flows through the whole student, so earlier replaced mixers feel later terms.
  const auto cfg = tiny();
  zoo::StudentModel<double> teacher(model::make_vit<double, zoo::AnyMixer<double>>(cfg));
  teacher.init(11);
  auto student = teacher;
  const auto plan = distill::parse_plan("layers:0,2", cfg.depth);
  zoo::replace_layers(student, cfg, plan, {.mixer = "min_gru", .seed = 3});
  const index_t B = 2;
  Rng rng(4);
  std::vector<double> x(std::size_t(B * 64));
  for (auto& v : x) v = rng.normal();
  const std::int32_t labels[B] = {1, 2};
  const distill::Stage1Options o{.ce_weight = 0.7, .mse_weight = 1.3, .free_running = true};
  std::vector<distill::detail::TermScratch<double, backend::Host>> taps;
  std::vector<double> dlogits, terms;
  const auto loss = [&](bool backward) {
    teacher.forward(x.data(), B, 64);
    const auto logits = student.forward(x.data(), B, 64);
    dlogits.assign(std::size_t(B * logits.dim), 0.0);
    double total = o.ce_weight * train::cross_entropy(logits.data, labels, B, logits.dim, o.label_smoothing, dlogits.data()).loss;
    for (auto& v : dlogits) v *= o.ce_weight;
    for (double v : distill::detail::tap_layer_terms(teacher, student, plan, o, taps, terms)) total += o.mse_weight * v;
    if (backward) {
      student.zero_grad();
      student.backward(dlogits.data());
    }
    distill::detail::untap_layer_terms(student, plan);
    return total;
  };
  loss(true);
  const std::vector<double> g(student.grads().data, student.grads().data + student.param_count());
  int checked = 0;
  for (const auto& i : student.params_info()) {
    if (i.name.find(".attn.") == std::string::npos) continue;  // the mixers (0, 2) and block 1's attention
    for (std::size_t k = 0; k < i.count; k += std::max<std::size_t>(1, i.count / 3)) {
      double* p = student.params().data + i.offset + k;
      const double keep = *p, h = 1e-6;
      *p = keep + h;
      const double up = loss(false);
      *p = keep - h;
      const double down = loss(false);
      *p = keep;
      const double fd = (up - down) / (2 * h);
      INFO(i.name << "[" << k << "]: analytic " << g[i.offset + k] << ", finite difference " << fd);
      REQUIRE(std::abs(g[i.offset + k] - fd) <= 1e-6 + 1e-5 * std::abs(fd));
      ++checked;
    }
  }
  REQUIRE(checked > 20);
}

TEST_CASE("free-running stage 1 lowers the free-running error and moves only the new mixers", "[distill]") {
  auto teacher = teacher_model(3);
  const auto cfg = tiny();
  const auto data = synthetic(128, 4);
  auto student = teacher;
  const auto plan = distill::parse_plan("layers:1,2", 3);
  zoo::replace_layers(student, cfg, plan, {.mixer = "min_gru", .seed = 5});
  const auto before_params = std::vector<float>(student.params().data, student.params().data + student.param_count());
  const auto before = distill::layer_errors(teacher, student, plan, data, 64);
  const auto r = distill::stage1(teacher, student, plan, data,
                                 {.steps = 60, .batch = 32, .lr = 3e-3, .free_running = true});
  const auto after = distill::layer_errors(teacher, student, plan, data, 64);
  REQUIRE(r.steps == 60);
  REQUIRE(r.layer_loss.size() == 2);
  for (std::size_t k = 0; k < 2; ++k) {
    INFO("layer " << plan.layers[k] << ": normalised error (free) " << before.nmse_free[k] << " -> " << after.nmse_free[k]
                  << ", (forced) " << before.nmse[k] << " -> " << after.nmse[k]);
    REQUIRE(after.nmse_free[k] < 0.8 * before.nmse_free[k]);
    REQUIRE(after.nmse[k] < before.nmse[k]);
    REQUIRE(after.nmse[k] > 0);
  }
  // The first replaced layer reads the teacher's own input both ways: forced = free there.
  REQUIRE(after.nmse[0] == Approx(after.nmse_free[0]).epsilon(1e-5));
  for (const auto& [name, mixer_param, moved] : moved_params(student, before_params)) {
    INFO(name);
    REQUIRE(moved == mixer_param);
  }
  REQUIRE_THROWS_WITH(distill::stage1(teacher, student, plan, data,
                                      {.steps = 1, .batch = 8, .after_projection = true, .free_running = true}),
                      Catch::Contains("free-running matches the pre-projection output"));
}

TEST_CASE("the normalised error: 1 for each sequence's mean token, 0 for the target itself", "[distill]") {
  // Two sequences (3 and 2 tokens), 2 channels; token 1 of sequence 0 masked out.
  const std::vector<float> target = {1, 10, 5, 99, 3, 20, 4, -1, 6, 1};
  const index_t offsets[] = {0, 3, 5};
  const std::uint8_t keep[] = {1, 0, 1, 1, 1};
  const TokensView<const float> t{target.data(), offsets, 2, 2, keep};
  // mean over kept tokens: seq 0 (1,10),(3,20) -> (2, 15); seq 1 (4,-1),(6,1) -> (5, 0)
  std::vector<float> mean_out = {2, 15, 0, 0, 2, 15, 5, 0, 5, 0};
  const auto e = distill::detail::error_sums(TokensView<const float>{mean_out.data(), offsets, 2, 2, keep}, t);
  // sst = (1+25) + (1+25) + (1+1) + (1+1) = 56; sse = sst (the mean predicts every kept token)
  REQUIRE(e.sst == Approx(56.0));
  REQUIRE(e.sse == Approx(56.0));
  REQUIRE(e.n == 8.0);
  REQUIRE(distill::detail::error_sums(t, t).sse == 0.0);
}

TEST_CASE("a student checkpoint loads back with its mixers (metadata 'student', and the older form)", "[distill]") {
  auto teacher = teacher_model(4);
  const auto cfg = tiny();
  auto student = teacher;
  const std::vector<std::string> per_layer{"min_gru", distill::kKeepAttention, "selective_ssm"};
  const nlohmann::json options{{"expand", 2}};
  zoo::replace_layers(student, cfg, per_layer, {.mixer_options = options, .seed = 5});
  student.init(9);  // weights that differ from the teacher's and any fresh initialisation
  const auto dir = std::filesystem::temp_directory_path() / ("seqswap_student_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto x = synthetic_batch(4, 7);
  const auto s = student.forward(x.data(), 4, 64);
  const std::vector<float> want(s.data, s.data + 12);

  io::save_checkpoint(dir / "s.safetensors", student, cfg, zoo::student_metadata(per_layer, options));
  model::VitConfig got_cfg;
  zoo::StudentDescription d;
  auto back = zoo::load_student<float>(dir / "s.safetensors", &got_cfg, &d);
  REQUIRE(d.mixer_per_layer == per_layer);
  REQUIRE(d.mixer_options == options);
  REQUIRE(back.param_count() == student.param_count());
  REQUIRE(back.net().mixer(0).kind_name() == "min_gru");
  REQUIRE(back.net().mixer(1).kind_name() == "softmax_attention");
  const auto b = back.forward(x.data(), 4, 64);
  for (int i = 0; i < 12; ++i) REQUIRE(b.data[i] == want[std::size_t(i)]);

  // The form replace_layers wrote before: "mixers" (replaced layers) + one "mixer" name.
  auto one = teacher;
  zoo::replace_layers(one, cfg, distill::parse_plan("layers:0,2", 3), {.mixer = "selective_ssm"});
  io::save_checkpoint(dir / "old.safetensors", one, cfg, {{"mixers", "[0,2]"}, {"mixer", "selective_ssm"}});
  auto old = zoo::load_student<float>(dir / "old.safetensors", nullptr, &d);
  REQUIRE(d.mixer_per_layer == std::vector<std::string>{"selective_ssm", distill::kKeepAttention, "selective_ssm"});
  REQUIRE(old.param_count() == one.param_count());

  // A plain teacher loads as a student with attention everywhere.
  io::save_checkpoint(dir / "t.safetensors", teacher, cfg);
  REQUIRE(zoo::load_student<float>(dir / "t.safetensors").param_count() == teacher.param_count());

  // Metadata that names an unknown mixer, or too few layers, is refused by name.
  io::save_checkpoint(dir / "bad.safetensors", student, cfg, zoo::student_metadata({"min_gru", "mamba", "attention"}));
  REQUIRE_THROWS_WITH(zoo::load_student<float>(dir / "bad.safetensors"),
                      Catch::Contains("unknown mixer 'mamba'") && Catch::Contains("bad.safetensors"));
  io::save_checkpoint(dir / "short.safetensors", student, cfg, zoo::student_metadata({"min_gru"}));
  REQUIRE_THROWS_WITH(zoo::load_student<float>(dir / "short.safetensors"),
                      Catch::Contains("names 1 layers, the config's depth is 3"));
  // Metadata that disagrees with the tensors fails in the strict load, not silently.
  io::save_checkpoint(dir / "mismatch.safetensors", student, cfg,
                      zoo::student_metadata({"selective_ssm", "attention", "min_gru"}, options));
  REQUIRE_THROWS(zoo::load_student<float>(dir / "mismatch.safetensors"));
  std::filesystem::remove_all(dir);
}
