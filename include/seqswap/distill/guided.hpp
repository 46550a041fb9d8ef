// Sparsity-guided distillation from an A-ViT halting teacher (METHOD.md, last paragraphs of
// "A-ViT token halting"). The student is the halting teacher with some mixers replaced.
//
// Stage 1: the teacher runs with halting, packed; each new mixer reads the teacher's LN1 output
// of exactly the tokens the teacher kept at that layer and matches the teacher's pre-projection
// output there (so the loss is over kept tokens only). Option `kept_tokens_only = false`: the
// FAR form, every token (the teacher's weights run densely, no halting).
// Stage 2: the student runs on the teacher's kept tokens per layer (external masks) with CE
// (+ KL to the teacher's logits) + w_h · [Σ_l KL_Bern(h_t^l ‖ h_s^l) + 5 Σ_l (keep_s^l − keep_t^l)²],
// w_h = 0.1. KL_Bern is averaged over the patch tokens the teacher keeps at l; the keep ratios
// are the soft ones, keep^l = mean over patch tokens of clamp(1 − Σ_{l'<l} h^{l'}, 0, 1),
// computed alike for teacher and student (for saturated scores they equal the hard fractions),
// so that the term is differentiable in the student's scores.
#pragma once
#include <algorithm>
#include <cmath>
#include <optional>

#include "seqswap/distill/stages.hpp"
#include "seqswap/model/halting_vit.hpp"

namespace seqswap::distill {

using halting::Halter;
using halting::HaltingOptions;

struct GuidedOptions {
  bool kept_tokens_only = true;  // stage-1 loss on the teacher's kept tokens (else all, dense)
  double halting_weight = 0.1;   // w_h
  double keep_weight = 5.0;      // the 5 in front of Σ (keep_s − keep_t)²
};

// Soft keep ratios (see above) from a Halter's raw scores.
inline std::vector<double> soft_keep(const Halter& h) {
  const index_t L = h.layers(), B = h.batch(), N = h.tokens();
  std::vector<double> keep(static_cast<std::size_t>(L), 0.0);
  if (N < 2) return keep;
  for (index_t b = 0; b < B; ++b)
    for (index_t i = 1; i < N; ++i) {
      double c = 0;
      const auto k = static_cast<std::size_t>(b * N + i);
      for (index_t l = 0; l < L; ++l) {
        keep[l] += std::clamp(1.0 - c, 0.0, 1.0);
        c += h.raw(l, k);
      }
    }
  for (auto& v : keep) v /= double(B * (N - 1));
  return keep;
}

// The halting distillation loss of a student that ran on the teacher's masks, and its gradient
// w.r.t. the student's raw scores (ASSIGNED to draw, weighted by w_h).
inline double halting_distill_loss(const Halter& t, const Halter& s, const GuidedOptions& o,
                                   std::vector<std::vector<double>>& draw) {
  const index_t L = t.layers(), B = t.batch(), N = t.tokens();
  const auto K = static_cast<std::size_t>(B * N);
  draw.assign(static_cast<std::size_t>(L), std::vector<double>(K, 0.0));
  if (N < 2) return 0.0;
  double loss = 0;
  for (index_t l = 0; l < L; ++l) {
    std::size_t n = 0;
    for (std::size_t k = 0; k < K; ++k) n += (k % std::size_t(N) != 0 && t.active(l)[k]) ? 1 : 0;
    if (n == 0) continue;
    for (std::size_t k = 0; k < K; ++k) {
      if (k % std::size_t(N) == 0 || !t.active(l)[k]) continue;
      const double p = std::clamp(t.raw(l, k), 1e-6, 1 - 1e-6), q = std::clamp(s.raw(l, k), 1e-6, 1 - 1e-6);
      loss += (p * std::log(p / q) + (1 - p) * std::log((1 - p) / (1 - q))) / double(n);
      draw[l][k] += (-p / q + (1 - p) / (1 - q)) / double(n);
    }
  }
  const auto kt = soft_keep(t), ks = soft_keep(s);
  for (index_t l = 0; l < L; ++l) {
    const double d = ks[l] - kt[l];
    loss += o.keep_weight * d * d;
    // d keep_s^l / d h_s^{l'}_k = −1/K' for l' < l while 0 < 1 − c < 1.
    const double g = 2.0 * o.keep_weight * d / double(B * (N - 1));
    for (index_t b = 0; b < B; ++b)
      for (index_t i = 1; i < N; ++i) {
        const auto k = static_cast<std::size_t>(b * N + i);
        double c = 0;
        for (index_t lp = 0; lp < l; ++lp) c += s.raw(lp, k);
        if (c <= 0.0 || c >= 1.0) continue;
        for (index_t lp = 0; lp < l; ++lp)
          if (s.active(lp)[k]) draw[lp][k] -= g;
      }
  }
  for (auto& row : draw)
    for (auto& v : row) v *= o.halting_weight;
  return o.halting_weight * loss;
}

template <class T>
std::vector<std::vector<std::uint8_t>> teacher_masks(const Halter& h) {
  std::vector<std::vector<std::uint8_t>> m;
  for (index_t l = 0; l < h.layers(); ++l) m.push_back(h.active(l));
  return m;
}

// Stage 1 from a halting teacher. `teacher` is the halting teacher's dense model, `th` its
// halting options; `student` a StudentModel with `plan`'s mixers re-seated.
template <class TM, class SM>
StageResult guided_stage1(TM& teacher, const HaltingOptions& th, SM& student, const Plan& plan,
                          const io::ImageDataset& data, const Stage1Options& o, const GuidedOptions& go,
                          io::Progress* progress = nullptr) {
  if (!go.kept_tokens_only) return stage1(teacher, student, plan, data, o, progress);
  using T = typename SM::T;
  static_assert(std::is_same_v<T, float>, "guided_stage1: float models");
  static_assert(!train::on_device<SM>(), "guided_stage1: host models (the halting teacher runs on the host)");
  check(o.steps >= 0, "guided stage 1: expected steps >= 0, found ", o.steps);
  check(o.ce_weight == 0, "guided stage 1: the CE option is not supported (the student would need "
        "the teacher's masks end to end; use stage 2)");
  HaltingOptions tho = th;
  tho.packed = true;
  model::HaltingVit hv(teacher, tho);
  std::vector<double> layer_loss(plan.layers.size(), 0.0);
  const auto mask = detail::mixer_mask(student, plan, o.train_projection);
  detail::MixerContexts<backend::Host> ctxs(plan.layers.size());
  detail::TermScratch<T, backend::Host> scratch;
  const long tail_from = train::tail_start(o.steps);
  const auto step = [&](long s, const float* images, const std::int32_t*, index_t n) {
    hv.forward(images, n, data.image_numel());  // the teacher's blocks over the tokens it keeps
    double total = 0;
    for (std::size_t k = 0; k < plan.layers.size(); ++k) {
      const double loss = detail::layer_loss(hv, student, std::size_t(plan.layers[k]), ctxs, k, o, scratch, true);
      total += loss;
      if (s >= tail_from) layer_loss[k] += loss;
    }
    return total;
  };
  char keep[32];
  const auto note = [&] {
    std::snprintf(keep, sizeof keep, "keep %.3f", hv.halter().mean_keep_ratio());
    return std::string(keep);
  };
  auto res = detail::stage_result(train::run_loop(student, data, detail::loop_options("guided stage1", o), step,
                                                  {.mask = mask.data(), .progress = progress, .note = note}));
  detail::average_tail(layer_loss, o.steps);
  res.layer_loss = std::move(layer_loss);
  return res;
}

// Stage 2: every student parameter trains on CE (+ KL) + the halting distillation loss while
// the student runs on the teacher's kept tokens.
template <class TM, class SM>
StageResult guided_stage2(TM& teacher, const HaltingOptions& th, SM& student, const io::ImageDataset& data,
                          const Stage2Options& o, const GuidedOptions& go, io::Progress* progress = nullptr) {
  using T = typename SM::T;
  check(o.steps >= 0, "guided stage 2: expected steps >= 0, found ", o.steps);
  HaltingOptions tho = th;
  tho.packed = true;
  HaltingOptions sho = tho;
  sho.ponder_weight = sho.prior_weight = 0;  // the student follows the teacher's decisions
  model::HaltingVit thv(teacher, tho);
  model::HaltingVit shv(student, sho);
  std::vector<T> dlogits, tprob;
  std::vector<std::vector<double>> draw;
  const auto step = [&](long, const float* images, const std::int32_t* labels, index_t n) {
    auto tl = thv.forward(images, n, data.image_numel());
    const index_t C = tl.dim;
    if (o.kl_weight > 0) detail::softmax_at(tl.data, n, C, o.temperature, tprob);
    shv.set_external_masks(teacher_masks<T>(thv.halter()));
    auto logits = shv.forward(images, n, data.image_numel());
    dlogits.resize(std::size_t(n * C));
    const auto r = train::cross_entropy(logits.data, labels, n, C, o.label_smoothing, dlogits.data());
    double loss = r.loss;
    if (o.kl_weight > 0)
      loss += detail::add_logit_kl(tprob.data(), logits.data, n, C, o.temperature, o.kl_weight, dlogits.data());
    loss += halting_distill_loss(thv.halter(), shv.halter(), go, draw);
    shv.backward(dlogits.data(), nullptr, &draw);
    return loss;
  };
  return detail::stage_result(
      train::run_loop(student, data, detail::loop_options("guided stage2", o), step, {.progress = progress}));
}

// A guided student on `data`, run on the halting teacher's kept tokens: its accuracy, the
// halting teacher's, and top-1 agreement (the fraction of images where both pick the same class).
struct MaskedComparison {
  double accuracy = 0;
  double teacher_accuracy = 0;
  double agreement = 0;
};

template <class TM, class SM>
MaskedComparison compare_on_teacher_masks(TM& teacher, const HaltingOptions& th, SM& student,
                                          const io::ImageDataset& data, index_t batch = 256) {
  HaltingOptions o = th;
  o.packed = true;
  model::HaltingVit thv(teacher, o);
  model::HaltingVit shv(student, o);
  io::BatchLoader loader(data, batch, /*shuffle=*/false, 0);
  std::vector<float> images;
  std::vector<std::int32_t> labels, teacher_top;
  index_t correct = 0, teacher_correct = 0, agree = 0, seen = 0;
  const auto top1 = [](const auto* row, index_t C) { return std::int32_t(std::max_element(row, row + C) - row); };
  while (index_t n = loader.next(images, labels)) {
    auto tlogits = thv.forward(images.data(), n, data.image_numel());
    const index_t C = tlogits.dim;
    teacher_top.resize(std::size_t(n));
    for (index_t i = 0; i < n; ++i) {
      teacher_top[std::size_t(i)] = top1(tlogits.data + i * C, C);
      teacher_correct += teacher_top[std::size_t(i)] == labels[std::size_t(i)];
    }
    shv.set_external_masks(teacher_masks<float>(thv.halter()));
    auto logits = shv.forward(images.data(), n, data.image_numel());
    for (index_t i = 0; i < n; ++i) {
      const auto k = top1(logits.data + i * C, C);
      correct += k == labels[std::size_t(i)];
      agree += k == teacher_top[std::size_t(i)];
    }
    seen += n;
  }
  check(seen > 0, "compare_on_teacher_masks: the dataset '", data.name, "' is empty");
  return {double(correct) / double(seen), double(teacher_correct) / double(seen), double(agree) / double(seen)};
}

// Accuracy of a guided student on `data` when it runs on the halting teacher's kept tokens.
template <class TM, class SM>
double evaluate_on_teacher_masks(TM& teacher, const HaltingOptions& th, SM& student, const io::ImageDataset& data,
                                 index_t batch = 256) {
  return compare_on_teacher_masks(teacher, th, student, data, batch).accuracy;
}

}  // namespace seqswap::distill
