// The teacher's training step on the device: Model<Vit<float>, backend::Cuda>, one step =
// zero_grad, forward, softmax cross-entropy (label smoothing 0.1), backward, global-norm clip
// and AdamW (train::clip_and_step_device), the batch already on the device. Two shapes:
//   fmnist    the shipped teacher (28 × 28 × 1, patch 4, width 64, depth 8, 4 heads), batch 128
//   deit_tiny timm's deit_tiny_patch16_224 (224 × 224 × 3, patch 16, width 192, depth 12, 3 heads,
//             1,000 classes), batch 64
// Prints the median over 15 timed steps after 3 warm-up steps (CUDA events around each step),
// in the format benchmarks/gpu/check.sh puts beside PyTorch eager's step on the same shapes.
// Then a student's step on the fmnist shape: attention in blocks 0-3, the bidirectional
// selective SSM (state 16) in blocks 4-7, B 128 (no PyTorch counterpart: it has no Mamba here).
// FP32 GEMMs (cuBLAS pedantic: no TF32). Without a device it prints "skipped" and exits 0.
//   bench_cuda_teacher [fmnist|deit_tiny|student|all] [STEPS]   (default all, 15 timed steps)
// One shape and few steps serve a profiler (benchmarks/gpu/profile.sh).
#include <algorithm>
#include <cstdlib>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "seqswap/mixers/ssm_selective.hpp"
#include "seqswap/model/model.hpp"
#include "seqswap/model/vit.hpp"
#include "seqswap/ops/cuda/device_ops.cuh"
#include "seqswap/train/device_step.hpp"

using namespace seqswap;

namespace {

template <class Net>
void time_step(const char* what, const char* name, const model::VitConfig& cfg, Net net, index_t B, int steps) {
  model::Model<Net, backend::Cuda> m(std::move(net));
  m.init(0);
  const index_t numel = cfg.channels * cfg.image_size * cfg.image_size;
  std::mt19937 g(1);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> images(std::size_t(B * numel));
  for (auto& v : images) v = nd(g);
  std::vector<std::int32_t> labels(static_cast<std::size_t>(B));
  for (index_t b = 0; b < B; ++b) labels[std::size_t(b)] = std::int32_t(b % cfg.classes);
  Buffer<float, backend::Cuda> d_images, d_dlogits;
  Buffer<std::int32_t, backend::Cuda> d_labels;
  Buffer<double, backend::Cuda> d_loss;
  Buffer<std::uint8_t, backend::Cuda> d_correct, d_decay;
  d_images.upload(images.data(), images.size());
  d_labels.upload(labels.data(), labels.size());
  train::AdamW<float> opt({.lr = 1e-4}, m.params_info(), m.param_count());
  d_decay.upload(opt.decay_mask().data(), opt.decay_mask().size());
  const auto step = [&] {
    m.zero_grad();
    const auto logits = m.forward(d_images.data(), B, numel);
    d_dlogits.resize(std::size_t(B * logits.dim));
    d_loss.resize(std::size_t(B));
    d_correct.resize(std::size_t(B));
    ops::device::cross_entropy(logits.data, d_labels.data(), B, logits.dim, 0.1, d_dlogits.data(), d_loss.data(),
                               d_correct.data());
    m.backward(d_dlogits.data());
    train::clip_and_step_device(m, opt, d_decay.data(), 1e-4, 1.0);
  };
  for (int w = 0; w < 3; ++w) step();
  SEQSWAP_CUDA_CHECK(cudaDeviceSynchronize());
  cudaEvent_t e0, e1;
  SEQSWAP_CUDA_CHECK(cudaEventCreate(&e0));
  SEQSWAP_CUDA_CHECK(cudaEventCreate(&e1));
  std::vector<float> ms;
  const cudaStream_t s = seqswap::cuda::context().stream();
  for (int r = 0; r < steps; ++r) {
    SEQSWAP_CUDA_CHECK(cudaEventRecord(e0, s));
    step();
    SEQSWAP_CUDA_CHECK(cudaEventRecord(e1, s));
    SEQSWAP_CUDA_CHECK(cudaEventSynchronize(e1));
    float t = 0;
    SEQSWAP_CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  const float median = ms[ms.size() / 2];
  std::printf("%s training step %s B %lld: seqswap %.3f ms (median of %d; min %.3f, max %.3f), %.0f images/s\n",
              what, name, (long long)B, median, steps, ms.front(), ms.back(), double(B) / (median * 1e-3));
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string only = argc > 1 ? argv[1] : "all";
  const int steps = argc > 2 ? std::atoi(argv[2]) : 15;
  if ((only != "all" && only != "fmnist" && only != "deit_tiny" && only != "student") || steps < 1) {
    std::fprintf(stderr, "bench_cuda_teacher: expected [fmnist|deit_tiny|student|all] [STEPS >= 1], found '%s' '%s'\n",
                 argc > 1 ? argv[1] : "", argc > 2 ? argv[2] : "");
    return 2;
  }
  if (!seqswap::cuda::device_available()) {
    std::printf("bench_cuda_teacher: no CUDA device: skipped\n");
    return 0;
  }
  const model::VitConfig fmnist{}, deit = model::vit_arch("deit_tiny_patch16_224");
  const auto want = [&](const char* n) { return only == "all" || only == n; };
  if (want("fmnist")) time_step("teacher", "fmnist", fmnist, model::make_vit<float>(fmnist), 128, steps);
  if (want("deit_tiny")) time_step("teacher", "deit_tiny", deit, model::make_vit<float>(deit), 64, steps);
  using model::Layers;
  using Attn = attention::SoftmaxAttention<float>;
  using Ssm = mixers::SelectiveSsm<float>;
  if (want("student"))
    time_step("student (4 attention + 4 selective SSM)", "fmnist", fmnist,
              model::make_vit<float, Layers<Attn, 4>, Layers<Ssm, 4>>(fmnist), 128, steps);
  return 0;
}
