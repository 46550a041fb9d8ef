// The tiny ViT against PyTorch (tests/reference/make_fixtures.py): logits, loss, every
// parameter gradient and the input gradient, float32, relative error <= 1e-4.
#include <catch2/catch.hpp>

#include "seqswap/io/checkpoint.hpp"
#include "seqswap/model/model.hpp"
#include "seqswap/model/vit.hpp"
#include "seqswap/train/loss.hpp"
#include "test_util.hpp"

using namespace seqswap;

TEST_CASE("tiny ViT matches PyTorch: logits, loss, every gradient", "[reference]") {
  const auto f = io::read_safetensors(test_util::fixture("vit_tiny.safetensors"));
  const auto cfg_json = nlohmann::json::parse(f.metadata.at("config"));
  model::VitConfig cfg;
  from_json(cfg_json, cfg);
  model::Model m(model::make_vit<float>(cfg));
  io::load_params(m, f, /*strict=*/false);

  const auto x = f.at("input").to_vector<float>();
  const auto labels64 = f.at("labels").to_vector<std::int64_t>();
  const index_t B = cfg_json.at("batch");
  std::vector<std::int32_t> labels(labels64.begin(), labels64.end());
  auto logits = m.forward(x.data(), B, cfg.channels * cfg.image_size * cfg.image_size);
  test_util::require_close(logits.data, f.at("logits").to_vector<float>(), 1e-4, "logits");

  std::vector<float> dlogits(static_cast<std::size_t>(B * cfg.classes));
  const auto r = train::cross_entropy(logits.data, labels.data(), B, cfg.classes,
                                      cfg_json.at("label_smoothing").get<double>(), dlogits.data());
  CHECK(r.loss == Approx(f.at("loss").to_vector<float>()[0]).epsilon(1e-5));

  std::vector<float> dx(x.size());
  m.zero_grad();
  m.backward(dlogits.data(), dx.data());
  for (const auto& i : m.params_info()) {
    INFO("parameter " << i.name);
    test_util::require_close(m.grad(i.name), f.at("grad." + i.name).to_vector<float>(), 1e-4,
                             i.name);
  }
  test_util::require_close(dx.data(), f.at("grad.input").to_vector<float>(), 1e-4, "grad.input");
}
