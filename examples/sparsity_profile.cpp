// sparsity_profile: attention sparsity per layer and head of a ViT checkpoint on the first N
// Fashion-MNIST test images (METHOD.md "Attention sparsity"; experiment 1), streamed batch by
// batch: no attention map outlives its forward.
//
//   sparsity_profile --checkpoint models/vit-fmnist.safetensors --images 1000 --out results/sparsity
//
// Writes OUT/profile.json (layers x heads x metrics, rankings, Kendall τ), OUT/profile.csv, and,
// when gnuplot is installed, OUT/s_ent_by_layer.png and OUT/s_ent_heads.png drawn by OUT/plots.gp
// from OUT/s_ent_layers.dat and OUT/s_ent_heads.dat. The last line printed is the layer
// ranking by S_ent, sparsest first.
#include <CLI/CLI.hpp>

#include "data.hpp"
#include "flags.hpp"
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "seqswap/analysis/profile.hpp"
#include "seqswap/io/atomic_file.hpp"
#include "seqswap/io/plot.hpp"
#include "seqswap/model/vit_checkpoint.hpp"
#include "seqswap/train/loop.hpp"

using namespace seqswap;
using analysis::Metric;
using analysis::Variant;
namespace fs = std::filesystem;


int main(int argc, char** argv) try {
  CLI::App app{"Attention sparsity per layer and head of a ViT on test images (Fashion-MNIST or an image folder)"};
  std::string checkpoint, out_dir;
  DataFlags data;
  index_t images = 0, batch = 64;
  analysis::SparsityOptions opt;
  app.add_option("--checkpoint", checkpoint, "safetensors checkpoint")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--images", images, "profile the first N test images")->required()->check(flags::FiniteNonNegative);
  app.add_option("--out", out_dir, "output folder (created if missing)")->required();
  app.add_option("--batch", batch, "images per forward")->check(flags::FinitePositive);
  app.add_option("--p", opt.top_p, "mass p of the top-p width, in (0, 1]")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--tau", opt.tau, "below_tau counts entries below tau/N")
      ->check(flags::FiniteNonNegative);
  data.add(app);
  CLI11_PARSE(app, argc, argv);
  check(images >= 1, "expected --images >= 1, found ", images);
  check(batch >= 1, "expected --batch >= 1, found ", batch);
  opt.validate();

  model::VitConfig cfg;
  auto m = model::load_vit<float>(checkpoint, &cfg);
  auto test_set = data.load(io::Split::test, cfg);
  check(images <= test_set.count, "--images ", images, " exceeds the ", test_set.count, " test images");
  test_set = test_set.head(images);
  // Fail before the long part when the output folder cannot be made.
  const fs::path dir(out_dir);
  std::error_code ec;
  fs::create_directories(dir, ec);
  check(!ec && fs::is_directory(dir), "cannot create the output folder '", out_dir, "'",
        ec ? ": " + ec.message() : std::string());
  io::Progress progress("sparsity_profile", long((test_set.count + batch - 1) / batch), /*interval_s=*/0.0);
  const auto profile = analysis::profile_model(m, cfg, test_set, batch, opt, &progress);
  nlohmann::json j = profile;
  j["checkpoint"] = checkpoint;
  j["data"] = test_set.name;
  j["model"] = cfg;
  io::write_file_atomic(dir / "profile.json", j.dump(2) + "\n");
  analysis::write_csv(dir / "profile.csv", profile);
  analysis::write_profile_plots(dir, profile, "sparsity_profile");

  std::printf("layer  S_ent mean ± std (all keys)  drop CLS       top-p width  distance\n");
  for (index_t l = 0; l < profile.layers; ++l) {
    if (!profile.measured[std::size_t(l)]) {
      std::printf("%5ld  (not attention)\n", long(l));
      continue;
    }
    const auto& s = profile.layer_summary(l, Metric::entropy_sparsity);
    const auto& d = profile.layer_summary(l, Metric::entropy_sparsity, Variant::drop_cls);
    std::printf("%5ld  %.4f ± %.4f              %.4f ± %.4f  %.4f       %.3f\n", long(l), s.mean,
                s.std, d.mean, d.std, profile.layer_summary(l, Metric::top_p_width).mean,
                profile.layer_summary(l, Metric::distance).mean);
  }
  std::printf("wrote %s/profile.json, profile.csv\n", dir.c_str());
  std::printf("ranking by S_ent (sparsest first):");
  for (index_t l : profile.ranking()) std::printf(" %ld", long(l));
  std::printf("\n");
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "sparsity_profile: error: %s\n", e.what());
  return 1;
}
