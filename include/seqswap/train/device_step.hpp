// The training step's pieces for a model on the CUDA backend (a model::Model<Net,
// backend::Cuda>), used by train::run_loop (train/loop.hpp) and the device benchmarks: the
// batch goes up, the loss, the clip and AdamW run on the device, and only per-image losses and
// hits come back. The device ops are declared in ops/device.hpp and defined in
// ops/cuda/device_ops.cuh (a CUDA translation unit includes it).
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "seqswap/core/buffer.hpp"
#include "seqswap/core/error.hpp"
#include "seqswap/ops/device.hpp"
#include "seqswap/train/adamw.hpp"

namespace seqswap::train {

struct StepResult {
  double loss = 0;
  index_t correct = 0;
  double grad_norm = 0;
};

// Whether a model runs on the CUDA backend (a model::Model<Net, backend::Cuda>): its arena and
// activations are device memory, and the loop below keeps them there.
template <class M>
constexpr bool on_device() {
  if constexpr (requires { typename M::backend_type; })
    return backend::is_cuda<typename M::backend_type>;
  else
    return false;
}

// clip_and_step on a device model: the norm is reduced on the device, the clip scales there and
// the AdamW step runs there with the optimizer's coefficients; decay: its decay mask on the
// device; trainable (nullable, on the device): entries that are 0 do not move (their gradients
// must already be zero, so that they stay out of the norm, as on the host).
template <class M, class T = typename M::T>
double clip_and_step_device(M& model, AdamW<T>& opt, const std::uint8_t* decay, double lr, double clip_norm,
                            const std::uint8_t* trainable = nullptr) {
  auto g = model.grads();
  const auto n = static_cast<index_t>(g.size);
  const double norm = std::sqrt(ops::device::sum_squares(g.data, n));
  if (clip_norm > 0 && norm > clip_norm) ops::device::scale(g.data, n, T(clip_norm / (norm + 1e-6)));
  auto p = model.params();
  ops::device::adamw_step(p.data, g.data, model.adam_m().data(), model.adam_v().data(), n, decay, trainable,
                          opt.next_step(lr));
  return norm;
}

// What a device training step keeps between steps (allocated by the first; none after).
template <class T, class B = backend::Cuda>
struct DeviceStepScratch {
  Buffer<T, B> images, dlogits;
  Buffer<std::int32_t, B> labels;
  Buffer<double, B> loss;
  Buffer<std::uint8_t, B> correct;
  std::vector<double> host_loss;
  std::vector<std::uint8_t> host_correct;
};

// classify_step on a device model: the batch (host memory) is uploaded, the loss and its
// gradient are computed on the device, and only each image's loss and hit come back.
template <class M, class T = typename M::T, class S>
StepResult classify_step_device(M& model, const T* images, const std::int32_t* labels, index_t B,
                                index_t image_numel, double label_smoothing, S& s) {
  check(label_smoothing >= 0 && label_smoothing < 1, "cross_entropy: expected label smoothing in [0, 1), found ",
        label_smoothing);
  s.images.upload(images, static_cast<std::size_t>(B * image_numel));
  s.labels.upload(labels, static_cast<std::size_t>(B));
  auto logits = model.forward(s.images.data(), B, image_numel);
  const index_t C = logits.dim;
  for (index_t b = 0; b < B; ++b)  // the kernel trusts its labels: checked here, as the host loss does
    check(labels[b] >= 0 && labels[b] < C, "cross_entropy: expected labels in [0, ", C, "), found ", labels[b],
          " at batch index ", b);
  s.dlogits.resize(static_cast<std::size_t>(B * C));
  s.loss.resize(static_cast<std::size_t>(B));
  s.correct.resize(static_cast<std::size_t>(B));
  ops::device::cross_entropy(logits.data, s.labels.data(), B, C, label_smoothing, s.dlogits.data(), s.loss.data(),
                             s.correct.data());
  model.backward(s.dlogits.data());
  s.host_loss.resize(static_cast<std::size_t>(B));
  s.host_correct.resize(static_cast<std::size_t>(B));
  s.loss.download(s.host_loss.data(), s.host_loss.size());
  s.correct.download(s.host_correct.data(), s.host_correct.size());
  StepResult r;
  for (index_t b = 0; b < B; ++b) {
    r.loss += s.host_loss[std::size_t(b)] / double(B);
    r.correct += s.host_correct[std::size_t(b)];
  }
  return r;
}

}  // namespace seqswap::train
