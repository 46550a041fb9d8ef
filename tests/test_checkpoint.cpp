// Checkpoints: round trip, and bad files give clear errors without touching existing data.
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>

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
