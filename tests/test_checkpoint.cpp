// Checkpoints: round trip, and bad files give clear errors without touching existing data.
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <numeric>

#include <unistd.h>

#include "seqswap/model/vit_checkpoint.hpp"
#include "test_util.hpp"

using namespace seqswap;
namespace fs = std::filesystem;

namespace {
fs::path temp_dir() {
  static int n = 0;
  auto p = fs::temp_directory_path() / ("seqswap_ckpt_" + std::to_string(::getpid()) + "_" + std::to_string(n++));
  fs::create_directories(p);
  return p;
}
model::VitConfig small() {
  return {.image_size = 8, .channels = 1, .patch = 4, .width = 8, .depth = 2, .heads = 2,
          .mlp_ratio = 2.0, .classes = 3};
}
}  // namespace

TEST_CASE("checkpoint round trip reproduces the logits", "[io][checkpoint]") {
  const auto dir = temp_dir();
  const auto cfg = small();
  model::VitModel<float> m(model::make_vit<float>(cfg));
  m.init(3);
  std::vector<float> x(2 * 64);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = float(i % 7) * 0.1f;
  const auto y1 = m.forward(x.data(), 2, 64);
  std::vector<float> ref(y1.data, y1.data + 6);
  io::save_checkpoint(dir / "m.safetensors", m, cfg);

  model::VitConfig back;
  auto m2 = model::load_vit<float>(dir / "m.safetensors", &back);
  REQUIRE(back.width == cfg.width);
  REQUIRE(back.depth == cfg.depth);
  const auto y2 = m2.forward(x.data(), 2, 64);
  for (int i = 0; i < 6; ++i) REQUIRE(y2.data[i] == ref[i]);
  // timm's names and shapes
  const auto f = io::read_safetensors(dir / "m.safetensors");
  REQUIRE(f.at("blocks.1.attn.qkv.weight").shape == std::vector<std::int64_t>{24, 8});
  REQUIRE(f.at("patch_embed.proj.weight").shape == std::vector<std::int64_t>{8, 1, 4, 4});
  REQUIRE(f.at("pos_embed").shape == std::vector<std::int64_t>{1, 5, 8});
  fs::remove_all(dir);
}

TEST_CASE("bad checkpoints give clear errors", "[io][checkpoint]") {
  const auto dir = temp_dir();
  const auto cfg = small();
  model::VitModel<float> m(model::make_vit<float>(cfg));
  m.init(3);
  const auto path = dir / "m.safetensors";
  io::save_checkpoint(path, m, cfg);

  SECTION("missing file") {
    REQUIRE_THROWS_WITH(model::load_vit<float>(dir / "nope.safetensors"), Catch::Contains("not found"));
  }
  SECTION("truncated file") {
    const auto size = fs::file_size(path);
    fs::copy_file(path, dir / "t.safetensors");
    fs::resize_file(dir / "t.safetensors", size - 100);
    REQUIRE_THROWS(model::load_vit<float>(dir / "t.safetensors"));
  }
  SECTION("shape mismatch names the tensor and both shapes") {
    auto f = io::read_safetensors(path);
    model::VitModel<float> wide(model::make_vit<float>({.image_size = 8, .channels = 1, .patch = 4,
                                                        .width = 16, .depth = 2, .heads = 2,
                                                        .mlp_ratio = 2.0, .classes = 3}));
    REQUIRE_THROWS_WITH(io::load_params(wide, f),
                        Catch::Contains("patch_embed.proj.weight") && Catch::Contains("expected shape"));
  }
  SECTION("missing tensor") {
    model::VitModel<float> deeper(model::make_vit<float>({.image_size = 8, .channels = 1, .patch = 4,
                                                          .width = 8, .depth = 3, .heads = 2,
                                                          .mlp_ratio = 2.0, .classes = 3}));
    REQUIRE_THROWS_WITH(io::load_params(deeper, io::read_safetensors(path)),
                        Catch::Contains("missing tensor 'blocks.2"));
  }
  SECTION("not a seqswap checkpoint") {
    io::write_safetensors(dir / "other.safetensors",
                          {io::make_tensor<float>("w", {2}, std::vector<float>{1, 2})}, {});
    REQUIRE_THROWS_WITH(model::load_vit<float>(dir / "other.safetensors"),
                        Catch::Contains("format_version"));
  }
  SECTION("a failed save leaves the existing checkpoint intact") {
    const auto before = fs::file_size(path);
    fs::create_directories(dir / "blocker");
    // Saving onto a directory fails; the original file next to it is untouched.
    REQUIRE_THROWS(io::save_checkpoint(dir / "blocker", m, cfg));
    REQUIRE(fs::file_size(path) == before);
    REQUIRE_NOTHROW(model::load_vit<float>(path));
  }
  fs::remove_all(dir);
}

namespace {
// Rewrites `path`'s metadata "config" with `edit` applied (tensors unchanged).
void rewrite_config(const fs::path& from, const fs::path& to, const std::function<void(nlohmann::json&)>& edit) {
  const auto f = io::read_safetensors(from);
  auto j = nlohmann::json::parse(f.metadata.at("config"));
  edit(j);
  auto meta = f.metadata;
  meta["config"] = j.dump();
  io::write_safetensors(to, f.tensors, meta);
}
}  // namespace

TEST_CASE("checkpoints are checked before they are trusted", "[io][checkpoint]") {
  // Issue 19: non-finite weights, loose numbers and a config that disagrees with the tensors.
  const auto dir = temp_dir();
  const auto cfg = small();
  model::VitModel<float> m(model::make_vit<float>(cfg));
  m.init(3);
  const auto path = dir / "m.safetensors";
  io::save_checkpoint(path, m, cfg);

  SECTION("a NaN or Inf weight is refused, naming the tensor, unless asked for") {
    m.param("blocks.1.mlp.fc2.weight")[5] = std::numeric_limits<float>::quiet_NaN();
    io::save_checkpoint(dir / "nan.safetensors", m, cfg);
    REQUIRE_THROWS_WITH(model::load_vit<float>(dir / "nan.safetensors"),
                        Catch::Contains("blocks.1.mlp.fc2.weight") && Catch::Contains("non-finite") &&
                            Catch::Contains("element 5"));
    REQUIRE_NOTHROW(model::load_vit<float>(dir / "nan.safetensors", nullptr, /*allow_non_finite=*/true));
  }
  SECTION("a fractional or out-of-range integer in the config names the key") {
    rewrite_config(path, dir / "frac.safetensors", [](nlohmann::json& j) { j["depth"] = 8.9; });
    REQUIRE_THROWS_WITH(model::load_vit<float>(dir / "frac.safetensors"),
                        Catch::Contains("'depth'") && Catch::Contains("whole number"));
    rewrite_config(path, dir / "huge.safetensors", [](nlohmann::json& j) { j["width"] = 1e40; });
    REQUIRE_THROWS_WITH(model::load_vit<float>(dir / "huge.safetensors"),
                        Catch::Contains("'width'") && Catch::Contains("out of range"));
    rewrite_config(path, dir / "eps.safetensors", [](nlohmann::json& j) { j["eps"] = -1; });
    REQUIRE_THROWS_WITH(model::load_vit<float>(dir / "eps.safetensors"), Catch::Contains("eps"));
  }
  SECTION("a config that disagrees with the tensors fails before the model is built") {
    // width 2^20 within the bounds would allocate terabytes; the tensors say 8.
    rewrite_config(path, dir / "wide.safetensors", [](nlohmann::json& j) { j["width"] = 65536; });
    REQUIRE_THROWS_WITH(model::load_vit<float>(dir / "wide.safetensors"),
                        Catch::Contains("patch_embed.proj.weight") && Catch::Contains("width"));
    rewrite_config(path, dir / "deep.safetensors", [](nlohmann::json& j) { j["depth"] = 1; });
    REQUIRE_THROWS_WITH(model::load_vit<float>(dir / "deep.safetensors"), Catch::Contains("depth 1"));
  }
  fs::remove_all(dir);
}

TEST_CASE("checkpoints say how to normalise their input", "[io][checkpoint]") {
  const auto dir = temp_dir();
  auto cfg = small();
  CHECK(cfg.norm == io::Normalize::fashion_mnist());
  cfg.norm = io::Normalize{{0.25}, {0.5}};
  model::VitModel<float> m(model::make_vit<float>(cfg));
  m.init(1);
  io::save_checkpoint(dir / "n.safetensors", m, cfg);
  const auto f = io::read_safetensors(dir / "n.safetensors");
  const auto stored = nlohmann::json::parse(f.metadata.at("config"));
  CHECK(stored.at("normalize").at("mean") == nlohmann::json::array({0.25}));
  model::VitConfig back;
  model::load_vit<float>(dir / "n.safetensors", &back);
  CHECK(back.norm == cfg.norm);
  // A config written before "normalize" existed reads as Fashion-MNIST's (the shipped teachers').
  auto j = nlohmann::json(cfg);
  j.erase("normalize");
  CHECK(j.get<model::VitConfig>().norm == io::Normalize::fashion_mnist());
  // Wrong counts and values are refused, naming what was expected.
  j["normalize"] = {{"mean", {0.1, 0.2, 0.3}}, {"std", {0.5}}};
  REQUIRE_THROWS_WITH(j.get<model::VitConfig>(), Catch::Contains("1 or 1 values") && Catch::Contains("found 3"));
  j["normalize"] = {{"mean", {0.1}}, {"std", {0.0}}};
  REQUIRE_THROWS_WITH(j.get<model::VitConfig>(), Catch::Contains("positive normalisation std"));
  j["normalize"] = {{"mean", "x"}};
  REQUIRE_THROWS_WITH(j.get<model::VitConfig>(), Catch::Contains("\"std\""));
  CHECK(io::parse_normalize("imagenet") == io::Normalize::imagenet());
  CHECK(io::parse_normalize("0.5,0.4,0.3/0.2,0.2,0.2").mean.size() == 3);
  REQUIRE_THROWS_WITH(io::parse_normalize("0.5"), Catch::Contains("MEAN"));
  REQUIRE_THROWS_WITH(io::parse_normalize("0.5/x"), Catch::Contains("'x'"));
}

// timm's DeiT-Tiny (timm.create_model("deit_tiny_patch16_224").state_dict(), timm 0.9-1.0:
// init_values=None leaves no ls1/ls2 tensors, global_pool="token" leaves fc_norm an Identity):
// 152 tensors, in this order, with these shapes.
TEST_CASE("named architectures have timm's tensor names and shapes", "[io][checkpoint]") {
  using S = std::vector<std::int64_t>;
  std::vector<std::pair<std::string, S>> timm = {{"cls_token", {1, 1, 192}}, {"pos_embed", {1, 197, 192}},
                                                 {"patch_embed.proj.weight", {192, 3, 16, 16}},
                                                 {"patch_embed.proj.bias", {192}}};
  for (int b = 0; b < 12; ++b) {
    const std::string p = "blocks." + std::to_string(b) + ".";
    for (const auto& [n, s] : std::vector<std::pair<std::string, S>>{
             {"norm1.weight", {192}}, {"norm1.bias", {192}}, {"attn.qkv.weight", {576, 192}}, {"attn.qkv.bias", {576}},
             {"attn.proj.weight", {192, 192}}, {"attn.proj.bias", {192}}, {"norm2.weight", {192}}, {"norm2.bias", {192}},
             {"mlp.fc1.weight", {768, 192}}, {"mlp.fc1.bias", {768}}, {"mlp.fc2.weight", {192, 768}}, {"mlp.fc2.bias", {192}}})
      timm.emplace_back(p + n, s);
  }
  for (const auto& t : std::vector<std::pair<std::string, S>>{
           {"norm.weight", {192}}, {"norm.bias", {192}}, {"head.weight", {1000, 192}}, {"head.bias", {1000}}})
    timm.push_back(t);
  REQUIRE(timm.size() == 152);

  const auto cfg = model::vit_arch("deit_tiny_patch16_224");
  CHECK(cfg.norm == io::Normalize::imagenet());
  model::VitModel<float> m(model::make_vit<float>(cfg));
  std::map<std::string, S> ours;
  for (const auto& i : m.params_info()) ours[i.name] = S(i.shape.begin(), i.shape.end());
  CHECK(ours.size() == timm.size());
  std::size_t count = 0;
  for (const auto& [name, shape] : timm) {
    INFO(name);
    REQUIRE(ours.count(name) == 1);
    CHECK(ours[name] == shape);
    count += std::size_t(std::accumulate(shape.begin(), shape.end(), std::int64_t{1}, std::multiplies<>()));
  }
  CHECK(count == 5717416);  // timm's DeiT-Tiny parameter count
  CHECK(m.param_count() == count);
  CHECK(model::vit_arch("deit_small_patch16_224").width == 384);
  CHECK(model::vit_arch("vit_base_patch16_224").norm == io::Normalize{{0.5}, {0.5}});
  REQUIRE_THROWS_WITH(model::vit_arch("deit_huge_patch16_224"), Catch::Contains("deit_tiny_patch16_224"));

  // A file with timm's names and no seqswap metadata loads with --arch (load_vit_arch), and not
  // without it.
  const auto dir = temp_dir();
  m.init(2);
  std::vector<io::TensorData> tensors;
  for (const auto& i : m.params_info())
    tensors.push_back(io::make_tensor<float>(i.name, {i.shape.begin(), i.shape.end()},
                                             std::vector<float>(m.params().data + i.offset, m.params().data + i.offset + i.count)));
  io::write_safetensors(dir / "timm.safetensors", tensors, {});
  model::VitConfig back;
  auto loaded = model::load_vit_arch<float>(dir / "timm.safetensors", "deit_tiny_patch16_224", &back);
  CHECK(std::equal(m.params().data, m.params().data + m.param_count(), loaded.params().data));
  CHECK(back.norm == io::Normalize::imagenet());
  REQUIRE_THROWS_WITH(model::load_vit<float>(dir / "timm.safetensors"), Catch::Contains("format_version"));
  REQUIRE_THROWS_WITH(model::load_vit_arch<float>(dir / "timm.safetensors", "deit_small_patch16_224"),
                      Catch::Contains("blocks.11.norm1.weight") || Catch::Contains("patch_embed.proj.weight"));
}
