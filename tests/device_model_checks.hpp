// The device-path checks of a model, shared by two executors: tests/cuda/test_cuda_vit.cpp runs
// them on a GPU (linked with examples/cuda/device_ops.cu), tests/test_device_emulation.cpp on the
// CPU with the CUDA backend emulated (linked with tests/device_emulation.cpp). Each compares Model<Net, backend::Cuda>
// with Model<Net, backend::Host> built and initialised alike:
//   - the teacher (patch and CLS/position embeddings, layer norms, softmax attention through the
//     streamed row functions, MLPs with GELU, residuals, the classifier head): logits, every
//     parameter tensor's gradient, the input gradient; three training steps (cross-entropy
//     with label smoothing, AdamW with the decay mask: loss and parameters after each), the
//     third allocating no device memory;
//   - pre-norm blocks on a ragged batch with a keep-mask (an empty and a one-token sequence):
//     attention with the three policies (dense, top-k, threshold), minGRU summed and
//     concatenated, one direction, raster and snake scan orders; the selective SSM both ways
//     with several checkpoint chunks, 48 channels (a partial second warp of channels), state
//     sizes 16, 5 and 20 (the device's three state-vector paths); the diagonal SSM both ways and
//     one way in snake order; linear attention with the elu+1, relu and Hedgehog features;
//     retention (two head counts, a snake order); the multi-head LSTM and GRU (both ways and one
//     way, 2 and 3 heads, a snake order); the conv mixer on the patch grid (CLS rule included)
//     and in 1D:
//     outputs (masked tokens passed through exactly), input and parameter gradients (each
//     tensor by name);
//   - students with an attention block and a minGRU or a selective-SSM block, end to end;
//   - the A-ViT halting ViT, packed and masked: the same tokens halt, logits and gradients.
// The mixers' device math under test lives in ops/ssm_rows.hpp, ops/linear_attention_rows.hpp,
// ops/retention_rows.hpp, ops/conv_rows.hpp and ops/rnn_rows.hpp (functors the kernels and the
// emulation share).
// Odd sizes throughout (3 channels, 12 × 12 images, width 24 in 3 heads, 5 classes, batch 7).
// Device outputs start as NaN sentinels. Host code only: the program links the device ops
// (the real ones, examples/cuda/device_ops.cu, or the emulation, tests/device_emulation.cpp).
#pragma once
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "check_common.hpp"
#include "seqswap/mixers/conv.hpp"
#include "seqswap/mixers/linear_attention.hpp"
#include "seqswap/mixers/min_gru.hpp"
#include "seqswap/mixers/retention.hpp"
#include "seqswap/mixers/rnn.hpp"
#include "seqswap/mixers/ssm_diag.hpp"
#include "seqswap/mixers/ssm_selective.hpp"
#include "seqswap/io/dataset.hpp"
#include "seqswap/model/halting_vit.hpp"
#include "seqswap/model/model.hpp"
#include "seqswap/model/vit.hpp"
#include "seqswap/train/adamw.hpp"
#include "seqswap/train/device_step.hpp"
#include "seqswap/train/loss.hpp"

namespace seqswap::test::device_checks {

using backend::Cuda;
using backend::Host;

inline std::mt19937 gen(11);
inline std::vector<float> randv(std::size_t n, float scale = 1.0f) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& e : v) e = nd(gen) * scale;
  return v;
}

inline model::VitConfig small_config() {
  model::VitConfig c;
  c.image_size = 12;
  c.channels = 3;
  c.patch = 4;
  c.width = 24;
  c.heads = 3;
  c.depth = 2;
  c.mlp_ratio = 2.0;
  c.classes = 5;
  c.norm = io::Normalize{{0.5, 0.5, 0.5}, {0.5, 0.5, 0.5}};
  return c;
}

// 40 random images of small_config(), 5 classes.
inline io::ImageDataset synthetic_data() {
  const auto cfg = small_config();
  io::ImageDataset data;
  data.name = "synthetic";
  data.count = 40;
  data.channels = cfg.channels;
  data.size = cfg.image_size;
  data.classes = cfg.classes;
  data.norm = cfg.norm;
  std::mt19937 g(5);
  data.pixels.resize(static_cast<std::size_t>(data.count * data.image_numel()));
  for (auto& p : data.pixels) p = std::uint8_t(g() % 256);
  for (index_t i = 0; i < data.count; ++i) data.labels.push_back(std::int32_t(i % data.classes));
  return data;
}

// Per parameter tensor, each relative to its own largest value: a wrong slice, or a small
// tensor's gradient lost beside the large ones, shows by name.
template <class Infos>
void expect_tensors_close(const std::vector<float>& got, const std::vector<float>& want, const Infos& infos, double tol,
                          const std::string& what) {
  for (const auto& info : infos) {
    const auto from = long(info.offset), to = long(info.offset + info.count);
    expect_close(std::vector<float>(got.begin() + from, got.begin() + to),
                 std::vector<float>(want.begin() + from, want.begin() + to), tol, what + ": gradient of " + info.name);
  }
}

inline void teacher() {
  using Net = model::Vit<float>;
  const auto cfg = small_config();
  model::Model<Net, Host> host(model::make_vit<float>(cfg));
  model::Model<Net, Cuda> dev(model::make_vit<float>(cfg));
  host.init(3);
  dev.init(3);
  const index_t B = 7, pixels = cfg.channels * cfg.image_size * cfg.image_size, C = cfg.classes;
  const std::size_t n = host.param_count();
  const auto images = randv(std::size_t(B * pixels));
  auto d_images = up(images);

  // Forward and backward with a given dy.
  const auto logits = host.forward(images.data(), B, pixels);
  const std::vector<float> want_logits(logits.data, logits.data + B * C);
  const auto d_logits = dev.forward(d_images.data(), B, pixels);
  const auto got_logits = down(d_logits.data, std::size_t(B * C));
  expect_close(got_logits, want_logits, 1e-4, "teacher logits");

  const auto dy = randv(std::size_t(B * C));
  auto d_dy = up(dy);
  std::vector<float> dx(images.size());
  Buffer<float, Cuda> d_dx;
  d_dx.assign(images.size(), std::numeric_limits<float>::quiet_NaN());
  host.zero_grad();
  dev.zero_grad();
  host.backward(dy.data(), dx.data());
  dev.backward(d_dy.data(), d_dx.data());
  const auto got_g = down(dev.grads().data, n);
  const std::vector<float> want_g(host.grads().data, host.grads().data + n);
  expect_close(got_g, want_g, 1e-4, "teacher parameter gradients (whole arena)");
  expect_tensors_close(got_g, want_g, host.params_info(), 2e-4, "teacher");
  expect_close(down(d_dx), dx, 1e-4, "teacher input gradient");

  // Training steps: cross-entropy (smoothing 0.1) and AdamW, host and device side by side.
  std::vector<std::int32_t> labels(static_cast<std::size_t>(B));
  for (index_t b = 0; b < B; ++b) labels[std::size_t(b)] = std::int32_t((b * 3) % C);
  auto d_labels = up(labels);
  train::AdamW<float> opt_h({.lr = 1e-3}, host.params_info(), n), opt_d({.lr = 1e-3}, dev.params_info(), n);
  auto d_decay = up(opt_d.decay_mask());
  Buffer<float, Cuda> d_dlogits;
  Buffer<double, Cuda> d_loss;
  Buffer<std::uint8_t, Cuda> d_correct;
  std::vector<float> dlogits(std::size_t(B * C));
  std::size_t allocations = 0;
  for (int step = 0; step < 3; ++step) {
    if (step == 2) allocations = Buffer<float, Cuda>::allocation_count() + Buffer<index_t, Cuda>::allocation_count();
    host.zero_grad();
    const auto lh = host.forward(images.data(), B, pixels);
    const auto r = train::cross_entropy(lh.data, labels.data(), B, C, 0.1, dlogits.data());
    host.backward(dlogits.data());
    opt_h.step(host.params().data, host.grads().data, host.adam_m().data(), host.adam_v().data(), n, 1e-3);

    dev.zero_grad();
    const auto ld = dev.forward(d_images.data(), B, pixels);
    d_dlogits.resize(std::size_t(B * C));
    d_loss.resize(std::size_t(B));
    d_correct.resize(std::size_t(B));
    ops::device::cross_entropy(ld.data, d_labels.data(), B, C, 0.1, d_dlogits.data(), d_loss.data(), d_correct.data());
    dev.backward(d_dlogits.data());
    ops::device::adamw_step(dev.params().data, dev.grads().data, dev.adam_m().data(), dev.adam_v().data(), index_t(n),
                            d_decay.data(), static_cast<const std::uint8_t*>(nullptr), opt_d.next_step(1e-3));
    const auto losses = down(d_loss);
    double loss = 0;
    for (double v : losses) loss += v / double(B);  // per-row losses: the host reports their mean
    if (std::abs(loss - r.loss) > 1e-4 * std::max(1.0, std::abs(r.loss))) {
      std::printf("FAILED: step %d loss: device %.7g, host %.7g\n", step, loss, r.loss);
      ++seqswap::test::failures;
    }
    expect_close(down(dev.params().data, n), std::vector<float>(host.params().data, host.params().data + n), 1e-4,
                 "parameters after training step " + std::to_string(step));
  }
  const std::size_t after = Buffer<float, Cuda>::allocation_count() + Buffer<index_t, Cuda>::allocation_count();
  if (after != allocations) {
    std::printf("FAILED: a steady-state training step made %zu device allocations (expected none)\n", after - allocations);
    ++seqswap::test::failures;
  }
}

// One pre-norm block (mixer + MLP) on a ragged, masked batch, through Model so that the arena
// and contexts are the backend's.
template <class Mix>
void block(const std::string& name, const typename Mix::Options& mixer_options,
           const Offsets& offsets = {0, 5, 5, 6, 23, 40}) {  // an empty and a one-token sequence
  using Blk = model::Block<float, Mix>;
  const auto cfg = small_config();
  const auto make = [&] {
    using namespace layers;
    return Blk(model::Residual(model::Sequential(LayerNorm<float>({.dim = cfg.width, .eps = cfg.eps, .name = "norm1"}),
                                                 Mix(mixer_options))),
               model::Residual(model::Sequential(LayerNorm<float>({.dim = cfg.width, .eps = cfg.eps, .name = "norm2"}),
                                                 Mlp<float>({.dim = cfg.width, .hidden = cfg.hidden(), .name = "mlp"}))));
  };
  model::Model<Blk, Host> host(make());
  model::Model<Blk, Cuda> dev(make());
  host.init(4);
  dev.init(4);
  const index_t batch = static_cast<index_t>(offsets.size()) - 1, rows = offsets.back(), D = cfg.width;
  std::vector<std::uint8_t> keep(static_cast<std::size_t>(rows), 1);
  for (index_t t = 0; t < rows; ++t)
    if (t % 4 == 3 || t == 5) keep[std::size_t(t)] = 0;
  const auto x = randv(std::size_t(rows * D)), dy = randv(std::size_t(rows * D));
  auto d_x = up(x), d_dy = up(dy);
  auto d_keep = up(keep);

  const auto yh = host.forward(TokensView<const float, Host>{x.data(), offsets.data(), batch, D, keep.data()});
  const std::vector<float> want_y(yh.data, yh.data + rows * D);
  const auto yd = dev.forward(TokensView<const float, Cuda>{d_x.data(), offsets.data(), batch, D, d_keep.data()});
  const auto got_y = down(yd.data, want_y.size());
  expect_close(got_y, want_y, 1e-4, name + " block output");
  bool masked_exact = true;
  for (index_t t = 0; t < rows; ++t)
    for (index_t j = 0; j < D && !keep[std::size_t(t)]; ++j)
      masked_exact = masked_exact && got_y[std::size_t(t * D + j)] == x[std::size_t(t * D + j)];
  if (!masked_exact) {
    std::printf("FAILED: %s block: masked tokens must pass through unchanged\n", name.c_str());
    ++seqswap::test::failures;
  }

  std::vector<float> dx(x.size());
  Buffer<float, Cuda> d_dx;
  d_dx.assign(x.size(), std::numeric_limits<float>::quiet_NaN());
  host.zero_grad();
  dev.zero_grad();
  host.backward(dy.data(), dx.data());
  dev.backward(d_dy.data(), d_dx.data());
  const std::size_t n = host.param_count();
  const auto got_g = down(dev.grads().data, n);
  const std::vector<float> want_g(host.grads().data, host.grads().data + n);
  expect_close(got_g, want_g, 2e-4, name + " block parameter gradients");
  expect_tensors_close(got_g, want_g, host.params_info(), 2e-4, name + " block");
  expect_close(down(d_dx), dx, 1e-4, name + " block input gradient");
}


// Forward both models on the same images (d_images: their device copy, alive until backward, as
// the layer contract asks): the device logits against the host's.
template <class HM, class DM>
void compare_logits(HM& host, DM& dev, const std::vector<float>& images, const Buffer<float, Cuda>& d_images, index_t B,
                    const std::string& what) {
  const auto pixels = static_cast<index_t>(images.size()) / B;
  const auto lh = host.forward(images.data(), B, pixels);
  const std::vector<float> want(lh.data, lh.data + lh.total() * lh.dim);
  const auto ld = dev.forward(d_images.data(), B, pixels);
  expect_close(down(ld.data, want.size()), want, 1e-4, what + " logits");
}
// Backward both from the same dy: the device parameter gradients against the host's.
template <class HM, class DM>
void compare_gradients(HM& host, DM& dev, const std::vector<float>& dy, const std::string& what) {
  auto d_dy = up(dy);
  host.zero_grad();
  dev.zero_grad();
  host.backward(dy.data());
  dev.backward(d_dy.data());
  const std::size_t n = host.param_count();
  expect_close(down(dev.grads().data, n), std::vector<float>(host.grads().data, host.grads().data + n), 2e-4,
               what + " parameter gradients");
}

// A student: attention in block 0, the mixer Mix in block 1 (Chain of Repeats), logits and
// gradients.
template <class Mix>
void student(const std::string& what) {
  using model::Layers;
  using Attn = attention::SoftmaxAttention<float>;
  using Net = model::VitOf<float, Layers<Attn, 1>, Layers<Mix, 1>>;
  const auto cfg = small_config();
  model::Model<Net, Host> host(model::make_vit<float, Layers<Attn, 1>, Layers<Mix, 1>>(cfg));
  model::Model<Net, Cuda> dev(model::make_vit<float, Layers<Attn, 1>, Layers<Mix, 1>>(cfg));
  host.init(9);
  dev.init(9);
  const index_t B = 5, pixels = cfg.channels * cfg.image_size * cfg.image_size;
  const auto images = randv(std::size_t(B * pixels));
  const auto d_images = up(images);
  compare_logits(host, dev, images, d_images, B, what);
  compare_gradients(host, dev, randv(std::size_t(B * cfg.classes)), what);
}

// The A-ViT halting ViT (the teacher's blocks under model::Halting), packed and masked: tokens
// halt (the same keep ratios on both backends), logits and gradients (the ponder and prior
// losses included) equal the host's.
inline void halting_vit(bool packed) {
  auto cfg = small_config();
  cfg.depth = 3;
  const halting::HaltingOptions o{.gamma = 2, .beta = -1, .packed = packed};
  using M = model::DefaultMixer<float>;
  using Net = model::HaltingVitNet<float, M>;
  model::Model<Net, Host> host(model::with_halting<float, M>(model::make_vit<float>(cfg), o));
  model::Model<Net, Cuda> dev(model::with_halting<float, M>(model::make_vit<float>(cfg), o));
  host.init(6);
  dev.init(6);
  const std::string what = packed ? "halting (packed)" : "halting (masked)";
  const index_t B = 6, pixels = cfg.channels * cfg.image_size * cfg.image_size;
  const auto images = randv(std::size_t(B * pixels));
  const auto d_images = up(images);
  compare_logits(host, dev, images, d_images, B, what);
  const auto& hh = std::get<2>(host.context().ctx).halter;
  const auto& hd = std::get<2>(dev.context().ctx).halter;
  expect(hh.mean_keep_ratio() == hd.mean_keep_ratio(), what + ": the same tokens halt on both backends");
  double worst = 0;  // the scores the Halter read: cumulative halting scores and remainders per token
  bool same_layers = true;
  for (std::size_t k = 0; k < std::size_t(B * cfg.tokens()); ++k) {
    worst = std::max({worst, std::abs(hh.cumulative(k) - hd.cumulative(k)), std::abs(hh.remainder(k) - hd.remainder(k))});
    same_layers = same_layers && hh.halt_layer(k) == hd.halt_layer(k);
  }
  expect(same_layers && worst < 1e-5, what + ": every token's halting layer, cumulative score and remainder as on the host "
                                              "(largest difference " + std::to_string(worst) + ")");
  expect(hh.mean_keep_ratio() < 0.9 && hh.mean_keep_ratio() > 0.3,
         what + ": tokens really halt (mean keep ratio " + std::to_string(hh.mean_keep_ratio()) + ")");
  compare_gradients(host, dev, randv(std::size_t(B * cfg.classes)), what);
}

// Every check above.
inline void run_all() {
  teacher();
  const auto cfg = small_config();
  using attention::SoftmaxAttention;
  block<SoftmaxAttention<float>>("attention dense", {.dim = cfg.width, .heads = cfg.heads});
  block<SoftmaxAttention<float, sparse::TopK>>("attention top-k 3", {.dim = cfg.width, .heads = cfg.heads, .top_k = 3});
  block<SoftmaxAttention<float, sparse::Threshold>>("attention threshold 0.5",
                                                    {.dim = cfg.width, .heads = cfg.heads, .threshold = 0.5});
  using mixers::MinGruOptions;
  block<mixers::MinGru<float>>("minGRU sum, raster", {.dim = cfg.width});
  block<mixers::MinGru<float>>("minGRU concat, expand 2, snake",
                               {.dim = cfg.width, .expand = 2, .combine = MinGruOptions::Combine::concat,
                                .order = {.grid = order::Grid::snake, .cls = order::Cls::middle}});
  block<mixers::MinGru<float>>("minGRU one direction", {.dim = cfg.width, .bidirectional = false});
  using mixers::SelectiveSsm;
  block<SelectiveSsm<float>>("selective SSM both ways, expand 2, chunk 4",
                             {.dim = cfg.width, .expand = 2, .chunk = 4});
  block<SelectiveSsm<float>>("selective SSM one direction, state 5, conv 3, snake",
                             {.dim = cfg.width, .state = 5, .conv = 3, .bidirectional = false,
                              .order = {.grid = order::Grid::snake, .cls = order::Cls::middle}});
  block<SelectiveSsm<float>>("selective SSM state 20, dt_rank 3", {.dim = cfg.width, .state = 20, .dt_rank = 3});
  block<mixers::DiagonalSsm<float>>("diagonal SSM both ways, state 5", {.dim = cfg.width, .state = 5});
  block<mixers::DiagonalSsm<float>>("diagonal SSM one direction, snake",
                                    {.dim = cfg.width, .bidirectional = false,
                                     .order = {.grid = order::Grid::snake, .cls = order::Cls::middle}});
  using mixers::LinearAttention;
  namespace feature = mixers::feature;
  block<LinearAttention<float>>("linear attention elu+1", {.dim = cfg.width, .heads = cfg.heads});
  block<LinearAttention<float, feature::Relu>>("linear attention relu, no qkv bias",
                                               {.dim = cfg.width, .heads = 2, .qkv_bias = false});
  block<LinearAttention<float, feature::Hedgehog>>("linear attention hedgehog", {.dim = cfg.width, .heads = cfg.heads});
  block<mixers::Retention<float>>("retention, 3 heads", {.dim = cfg.width, .heads = cfg.heads});
  block<mixers::Retention<float>>("retention, 2 heads, no qkv bias, snake, decay offset 1.5",
                                  {.dim = cfg.width, .heads = 2, .qkv_bias = false, .decay_offset = 1.5,
                                   .order = {.grid = order::Grid::snake, .cls = order::Cls::middle}});
  block<mixers::MultiHeadLstm<float>>("multi-head LSTM both ways, 3 heads", {.dim = cfg.width, .heads = cfg.heads});
  block<mixers::MultiHeadGru<float>>("multi-head GRU both ways, 2 heads, snake",
                                     {.dim = cfg.width, .heads = 2,
                                      .order = {.grid = order::Grid::snake, .cls = order::Cls::middle}});
  block<mixers::MultiHeadGru<float>>("multi-head GRU one direction", {.dim = cfg.width, .heads = cfg.heads,
                                                                      .bidirectional = false});
  block<mixers::MultiHeadLstm<float>>("multi-head LSTM one direction, 2 heads",
                                      {.dim = cfg.width, .heads = 2, .bidirectional = false});
  // Grid2d needs CLS + G×G sequences: G = 3, 2, 3 and CLS alone.
  block<mixers::ConvMixer<float, mixers::conv::Grid2d>>("conv mixer 3x3 on the grid", {.dim = cfg.width, .kernel = 3},
                                                        {0, 10, 15, 25, 26});
  block<mixers::ConvMixer<float, mixers::conv::Seq1d>>("conv mixer 1D k 5, snake",
                                                       {.dim = cfg.width, .kernel = 5,
                                                        .order = {.grid = order::Grid::snake, .cls = order::Cls::middle}});
  student<mixers::MinGru<float>>("student (attention + minGRU)");
  student<SelectiveSsm<float>>("student (attention + selective SSM)");
  halting_vit(true);
  halting_vit(false);
}

}  // namespace seqswap::test::device_checks
