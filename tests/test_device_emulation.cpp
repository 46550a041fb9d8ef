// The layers' device paths run on the CPU: the checks of tests/device_model_checks.hpp (the
// teacher, attention and minGRU blocks, a student: Model<Net, backend::Cuda> against
// Model<Net, backend::Host>) with the CUDA backend emulated by tests/device_emulation.hpp (linked:
// the seqswap_device_emulation object stands in for the real device ops). The
// same checks run on a GPU in cuda.test_cuda_vit. A machine without a GPU thus still executes
// every layer's backend::Cuda branch (its ops, pointers, sizes, offsets and contexts) and the
// training loop's device step; only the kernels themselves need the GPU.
#include "device_model_checks.hpp"
#include "test_util.hpp"

TEST_CASE("device paths, emulated on the CPU, equal the host paths", "[device]") {
  seqswap::test::failures = 0;
  seqswap::test::device_checks::run_all();
  REQUIRE(seqswap::test::failures == 0);
}

#include "seqswap/train/loop.hpp"


// train::run_loop with a device model: batches uploaded by the step, the finiteness checks,
// the clip and AdamW on the device; the same run on the host model gives the same parameters
// and AdamW moments (6 steps, warm-up and cosine schedule, clip at 1); train::evaluate on the
// device model gives the host's loss and accuracy.
TEST_CASE("the training loop keeps a device model on the device and matches the host run", "[device]") {
  using namespace seqswap;
  const auto cfg = test::device_checks::small_config();
  const auto data = test::device_checks::synthetic_data();

  model::Model<model::Vit<float>, backend::Host> host(model::make_vit<float>(cfg));
  model::Model<model::Vit<float>, backend::Cuda> dev(model::make_vit<float>(cfg));
  host.init(2);
  dev.init(2);
  const index_t numel = data.image_numel();
  const train::LoopOptions o{.steps = 6, .batch = 8, .lr = 1e-3, .min_lr = 1e-4, .warmup_steps = 2, .clip_norm = 1.0,
                             .seed = 3, .quiet = true};
  std::vector<float> dlogits;
  const auto rh = train::run_loop(host, data, o, [&](long, const float* im, const std::int32_t* lab, index_t n) {
    return train::classify_step(host, im, lab, n, numel, 0.1, dlogits).loss;
  });
  train::DeviceStepScratch<float> scratch;
  const auto rd = train::run_loop(dev, data, o, [&](long, const float* im, const std::int32_t* lab, index_t n) {
    return train::classify_step_device(dev, im, lab, n, numel, 0.1, scratch).loss;
  });
  CHECK(rd.final_loss == Approx(rh.final_loss).epsilon(1e-4));
  const std::size_t n = host.param_count();
  test::failures = 0;
  test::expect_close(test::down(dev.params().data, n), std::vector<float>(host.params().data, host.params().data + n),
                     1e-4, "parameters after 6 steps");
  test::expect_close(test::down(dev.adam_m()), std::vector<float>(host.adam_m().data(), host.adam_m().data() + n), 1e-3,
                     "AdamW m after 6 steps");
  REQUIRE(test::failures == 0);
  const auto eh = train::evaluate(host, data, 16), ed = train::evaluate(dev, data, 16);
  CHECK(ed.accuracy == eh.accuracy);
  CHECK(ed.loss == Approx(eh.loss).epsilon(1e-4));
  CHECK(ed.count == data.count);

  // A NaN parameter stops the device run at the loss, as on the host.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Buffer<float, backend::Cuda>::upload_to(&nan, dev.param("head.weight"), 1);
  REQUIRE_THROWS_WITH(train::run_loop(dev, data, o,
                                      [&](long, const float* im, const std::int32_t* lab, index_t k) {
                                        return train::classify_step_device(dev, im, lab, k, numel, 0.1, scratch).loss;
                                      }),
                      Catch::Contains("the loss is not finite"));
}

// A trainable mask (every other parameter tensor frozen, the weight matrices among them) on a
// device model, with a clip that binds at every step (so frozen gradients left in the norm
// would show): the frozen values do not move, and the run equals the host's.
TEST_CASE("a trainable mask freezes the same parameters on a device model as on the host", "[device]") {
  using namespace seqswap;
  const auto cfg = test::device_checks::small_config();
  const auto data = test::device_checks::synthetic_data();
  model::Model<model::Vit<float>, backend::Host> host(model::make_vit<float>(cfg));
  model::Model<model::Vit<float>, backend::Cuda> dev(model::make_vit<float>(cfg));
  host.init(4);
  dev.init(4);
  const std::size_t n = host.param_count();
  std::vector<std::uint8_t> mask(n, 0);
  for (std::size_t t = 1; t < host.params_info().size(); t += 2) {
    const auto& i = host.params_info()[t];
    std::fill(mask.begin() + long(i.offset), mask.begin() + long(i.offset + i.count), 1);
  }
  const std::vector<float> before(host.params().data, host.params().data + n);
  const index_t numel = data.image_numel();
  const train::LoopOptions o{.steps = 4, .batch = 8, .lr = 1e-3, .clip_norm = 0.05, .seed = 3, .quiet = true};
  std::vector<float> dlogits;
  train::run_loop(host, data, o,
                  [&](long, const float* im, const std::int32_t* lab, index_t k) {
                    return train::classify_step(host, im, lab, k, numel, 0.1, dlogits).loss;
                  },
                  {.mask = mask.data()});
  train::DeviceStepScratch<float> scratch;
  train::run_loop(dev, data, o,
                  [&](long, const float* im, const std::int32_t* lab, index_t k) {
                    return train::classify_step_device(dev, im, lab, k, numel, 0.1, scratch).loss;
                  },
                  {.mask = mask.data()});
  const auto after = test::down(dev.params().data, n);
  std::size_t moved_frozen = 0, moved = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (!mask[i] && after[i] != before[i]) ++moved_frozen;
    if (mask[i] && after[i] != before[i]) ++moved;
  }
  CHECK(moved_frozen == 0);
  // The last step's gradients, as the loop left them: zero on the frozen entries on both.
  const auto g = test::down(dev.grads().data, n);
  std::size_t frozen_grads = 0;
  for (std::size_t i = 0; i < n; ++i) frozen_grads += !mask[i] && g[i] != 0.0f;
  CHECK(frozen_grads == 0);
  const auto trainable = static_cast<std::size_t>(std::count(mask.begin(), mask.end(), std::uint8_t(1)));
  CHECK(moved > trainable / 2);  // the trainable entries do move
  test::failures = 0;
  test::expect_close(after, std::vector<float>(host.params().data, host.params().data + n), 1e-4,
                     "parameters after 4 masked steps");
  REQUIRE(test::failures == 0);
}
