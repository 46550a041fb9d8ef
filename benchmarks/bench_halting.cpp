// Does halting save time? Forward time per image of a ViT under A-ViT halting at set keep
// ratios, with halted tokens packed out of the batch (seqswap) and kept under a mask (A-ViT's
// public code), next to the plain dense forward. Keep ratios are imposed with external masks
// (a random subset of the patch tokens per image goes on after block 0) so every ratio is exact.
//   build/release/benchmarks/bench_halting [--checkpoint models/vit-fmnist.safetensors]
//       [--batch 64] [--reps 7] [--keep 1,0.9,0.7,0.5,0.3]
// Ideal speed-up at mean keep ratio r is 1/r (work ∝ tokens; embedding and head excluded).
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "seqswap/analysis/stats.hpp"
#include "seqswap/core/rng.hpp"
#include "seqswap/model/halting_vit.hpp"
#include "seqswap/model/vit_checkpoint.hpp"

using namespace seqswap;

int main(int argc, char** argv) try {
  CLI::App app{"Forward time per image under token halting: packed vs masked vs dense"};
  std::string checkpoint = "models/vit-fmnist.safetensors";
  index_t batch = 64;
  int reps = 7;
  std::vector<double> keeps{1.0, 0.9, 0.7, 0.5, 0.3};
  app.add_option("--checkpoint", checkpoint, "ViT checkpoint (random weights of the teacher's "
                 "shape if the file is absent)");
  app.add_option("--batch", batch, "images per forward")->check(CLI::PositiveNumber);
  app.add_option("--reps", reps, "timed repetitions (median reported)")->check(CLI::PositiveNumber);
  app.add_option("--keep", keeps, "mean keep ratios over layers")->delimiter(',');
  CLI11_PARSE(app, argc, argv);

  model::VitConfig cfg;
  model::VitModel<float> m = std::filesystem::exists(checkpoint)
                                 ? model::load_vit<float>(checkpoint, &cfg)
                                 : model::VitModel<float>(model::make_vit<float>(cfg));
  if (!std::filesystem::exists(checkpoint)) m.init(0);
  const index_t N = cfg.tokens(), L = cfg.depth, numel = cfg.channels * cfg.image_size * cfg.image_size;
  Rng rng(1);
  std::vector<float> x(static_cast<std::size_t>(batch * numel));
  for (auto& v : x) v = float(rng.normal());

  const double dense_ms = analysis::median_ms([&] { m.forward(x.data(), batch, numel); }, 2, reps);
  std::printf("# %s, batch %ld, N %ld, depth %ld; median of %d\n", checkpoint.c_str(), long(batch),
              long(N), long(L), reps);
  std::printf("# dense forward (no halting): %.4f ms/image\n", dense_ms / double(batch));
  std::printf("%-6s %-12s %-12s %-14s %-14s %-8s %s\n", "keep", "packed_ms/img", "masked_ms/img",
              "packed_speedup", "masked_speedup", "ideal", "packed/ideal");
  for (double r : keeps) {
    check(r > 1.0 / double(L) - 1e-9 && r <= 1.0, "--keep: expected ratios in [1/depth, 1], found ", r);
    // All tokens enter block 0; a fixed random fraction r' of the patch tokens enters blocks
    // 1..L-1, with (1 + (L-1) r') / L = r.
    const double rp = (r * double(L) - 1.0) / double(L - 1);
    const auto kept = static_cast<index_t>(std::lround(rp * double(N - 1)));
    std::vector<std::vector<std::uint8_t>> masks(static_cast<std::size_t>(L),
                                                 std::vector<std::uint8_t>(batch * N, 1));
    for (index_t b = 0; b < batch; ++b) {
      std::vector<index_t> perm(static_cast<std::size_t>(N - 1));
      for (index_t i = 0; i < N - 1; ++i) perm[i] = i + 1;
      for (index_t i = N - 2; i > 0; --i) std::swap(perm[i], perm[rng.below(std::uint64_t(i + 1))]);
      for (index_t l = 1; l < L; ++l)
        for (index_t i = kept; i < N - 1; ++i) masks[l][b * N + perm[i]] = 0;
    }
    double ms[2];
    double actual = 0;
    for (int packed = 1; packed >= 0; --packed) {
      model::HaltingVit<float> hv(m, {.packed = packed == 1});
      hv.set_external_masks(masks);
      ms[packed] = analysis::median_ms([&] { hv.forward(x.data(), batch, numel); }, 2, reps) / double(batch);
      actual = hv.halter().mean_keep_ratio();
    }
    const double ideal = 1.0 / actual;
    const double sp = dense_ms / double(batch) / ms[1], sm = dense_ms / double(batch) / ms[0];
    std::printf("%-6.3f %-12.4f %-12.4f %-14.2f %-14.2f %-8.2f %.2f\n", actual, ms[1], ms[0], sp, sm,
                ideal, sp / ideal);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_halting: %s\n", e.what());
  return 1;
}
