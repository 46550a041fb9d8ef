// Google Benchmark: every mixer the drivers know (zoo::mixer_names()), seated with its
// default options for a ViT of width 192 and 3 heads, forward and forward + backward.
//   build/release/benchmarks/bench_mixers [--benchmark_filter='N:(50|197)/'] [--benchmark_out=f]
// Names: BM_mixer_forward/<mixer>/B:8/N:<N>/D:192/... and BM_mixer_forward_backward/<mixer>/...
// Counter: items = tokens (B·N). Backward also computes dx (as inside a ViT). A mixer that
// rejects a shape is skipped with its own error: conv_mixer needs N = 1 + G² (1024, 4096 are not).
// Softmax attention keeps its B·H·N² probabilities only up to N = 512 (store_probs_up_to);
// longer sequences take its memory-bounded path. At N = 4096 it and the sequential LSTM/GRU
// may run a single timed iteration (plus one untimed warm-up).
#include <benchmark/benchmark.h>

#include <exception>
#include <string>
#include <vector>

#include "seqswap/analysis/cost.hpp"
#include "seqswap/zoo/registry.hpp"
#include "seqswap/model/model.hpp"
#include "seqswap/model/vit.hpp"

using namespace seqswap;

namespace {

constexpr index_t kBatch = 8;
constexpr index_t kWidth = 192;
constexpr index_t kHeads = 3;
constexpr double kMinTime = 0.2;  // s per case: the whole suite in minutes, not a precise figure
const std::vector<index_t> kTokens{50, 197, 1024, 4096};

// One mixer on B sequences of N tokens; range(0) = B, range(1) = N, range(2) = D. The rig
// (analysis/cost.hpp) is the study's too: the same initialisation, inputs and warm-up.
void run_mixer(benchmark::State& s, const std::string& name, bool backward) {
  const index_t B = s.range(0), N = s.range(1), D = s.range(2);
  model::VitConfig cfg;
  cfg.width = D;
  cfg.heads = kHeads;
  zoo::AnyMixer<float> slot;
  zoo::seat_mixer(slot, name, cfg);
  try {
    analysis::MixerRig rig(std::move(slot), B, N, D);
    auto step = [&] { benchmark::DoNotOptimize(backward ? rig.forward_backward() : rig.forward()); };
    step();  // untimed: sizes every context buffer, so iterations measure steady state
    for (auto _ : s) step();
  } catch (const std::exception& e) {
    s.SkipWithError(e.what());
    return;
  }
  s.SetItemsProcessed(s.iterations() * B * N);
}

void register_mixers() {
  for (const auto& name : zoo::mixer_names())
    for (const bool backward : {false, true}) {
      const std::string bench =
          std::string(backward ? "BM_mixer_forward_backward/" : "BM_mixer_forward/") + name;
      auto* b = benchmark::RegisterBenchmark(bench.c_str(), run_mixer, name, backward);
      b->ArgNames({"B", "N", "D"});
      for (const index_t n : kTokens) b->Args({kBatch, n, kWidth});
      b->MinTime(kMinTime)->UseRealTime()->Unit(benchmark::kMillisecond);
    }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  register_mixers();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
