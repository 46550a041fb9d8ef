// HaltingVit: runs a Vit (its parameters in a model::Model arena) with A-ViT token halting.
// Block by block, the Halter decides which tokens go on; halted tokens either leave the token
// batch (packed: the next block sees a ragged batch of the kept tokens only, so attention, MLP
// and every mixer do less work) or stay in it under a keep-mask (masked: A-ViT's public code,
// which saves nothing). Both give the same logits. The final LayerNorm and head read the
// halting-weighted output o (CLS never halts, so the logits come from the last block's CLS).
//
// It offers the interface train::train_step and train::evaluate use (forward, backward,
// zero_grad, grads, params, adam_m, adam_v), so the same loops fine-tune a halting teacher;
// backward adds the ponder and prior gradients (weights from HaltingOptions).
#pragma once
#include <chrono>
#include <type_traits>
#include <vector>

#include "seqswap/halting/halting.hpp"
#include "seqswap/model/model.hpp"
#include "seqswap/model/vit.hpp"
#include "seqswap/train/data.hpp"
#include "seqswap/train/loss.hpp"

namespace seqswap::halting {

template <class Scalar, class MixerSlot = model::DefaultMixer<Scalar>>
class HaltingVit {
 public:
  using T = Scalar;
  using Net = model::Vit<T, MixerSlot>;
  using Model = model::Model<Net>;
  using B = backend::Host;
  using Block = model::Block<T, MixerSlot>;

  HaltingVit(Model& m, HaltingOptions o) : m_(m), o_(o) { o_.validate(); }

  HaltingOptions& options() { return o_; }
  const HaltingOptions& options() const { return o_; }
  Model& model() { return m_; }

  // External halting decisions (guided distillation): masks[l] (B*N) = tokens entering block l,
  // l = 0..L-1, masks[0] all ones, each a subset of the previous; CLS always kept. The network
  // then runs on exactly those tokens while its own scores are still computed. Empty: its own.
  void set_external_masks(std::vector<std::vector<std::uint8_t>> masks) { ext_ = std::move(masks); }
  void clear_external_masks() { ext_.clear(); }

  // images (B, C*S*S) -> logits (B, classes), valid until the next forward.
  TokensView<const T, B> forward(const T* images, index_t batch, index_t numel) {
    Net& net = m_.net();
    auto p = ParamsView<const T, B>(m_.params());
    const index_t L = static_cast<index_t>(model::blocks(net).size());
    img_layout_ = Layout::dense(batch, 1, numel);
    TokensView<const T, B> img{images, img_layout_.offsets.data(), batch, numel, nullptr};
    // Embedding: patches, then CLS + positions.
    Layout patches, tokens;
    net.template get<0>().plan(img_layout_, patches);
    net.template get<1>().plan(patches, tokens);
    N_ = tokens.length(0);
    D_ = tokens.dim;
    full_ = tokens;
    const auto rows = static_cast<std::size_t>(batch * N_);
    const auto size = rows * static_cast<std::size_t>(D_);
    patch_out_.resize(patches.size());
    x0_.resize(size);
    net.template get<0>().forward(sub<0>(p), img, view_of<T, B>(patch_out_.data(), patches), pe_ctx_);
    net.template get<1>().forward(sub<1>(p), TokensView<const T, B>(view_of<const T, B>(patch_out_.data(), patches)),
                                  view_of<T, B>(x0_.data(), tokens), cls_ctx_);
    if (!ext_.empty()) {
      check(index_t(ext_.size()) == L, "HaltingVit: expected ", L, " external masks, found ", ext_.size());
      for (const auto& m : ext_)
        check(m.size() == rows, "HaltingVit: expected external masks of ", rows, " tokens, found ", m.size());
    }
    halter_.reset(batch, N_, L, o_);
    out_.assign(size, T(0));
    t_.resize(static_cast<std::size_t>(L));
    block_ctx_.resize(static_cast<std::size_t>(L));
    packed_layout_.resize(static_cast<std::size_t>(L));
    packed_rows_.resize(static_cast<std::size_t>(L));
    pin_.resize(static_cast<std::size_t>(L));
    pout_.resize(static_cast<std::size_t>(L));
    const T* in = x0_.data();
    for (index_t l = 0; l < L; ++l) {
      const auto& act = halter_.active(l);
      t_[l].resize(size);
      const auto& block = model::blocks(net)[l];
      auto pb = block_params(p, l);
      if (o_.packed) {
        auto& idx = packed_rows_[l];
        idx.clear();
        auto& lay = packed_layout_[l];
        lay.batch = batch;
        lay.dim = D_;
        lay.offsets.assign(1, 0);
        for (index_t b = 0; b < batch; ++b) {
          for (index_t i = 0; i < N_; ++i)
            if (act[b * N_ + i]) idx.push_back(b * N_ + i);
          lay.offsets.push_back(static_cast<index_t>(idx.size()));
        }
        // Layers keep pointers to their inputs for backward: one packed buffer per block.
        pin_[l].resize(idx.size() * D_);
        pout_[l].resize(idx.size() * D_);
        gather(in, idx, pin_[l].data());
        block.forward(pb, view_of<const T, B>(pin_[l].data(), packed_layout_[l]),
                      view_of<T, B>(pout_[l].data(), packed_layout_[l]), block_ctx_[l]);
        std::fill(t_[l].data(), t_[l].data() + size, T(0));
        scatter(pout_[l].data(), idx, t_[l].data());
      } else {
        block.forward(pb, view_of<const T, B>(in, full_, act.data()), view_of<T, B>(t_[l].data(), full_, act.data()),
                      block_ctx_[l]);
      }
      halter_.step(l, t_[l].data(), D_, ext_.empty() ? nullptr : (l + 1 < L ? ext_[l + 1].data() : nullptr));
      // o += w^l_k t^l_k over the tokens active at l.
      T* o = out_.data();
      const T* t = t_[l].data();
      for (std::size_t k = 0; k < rows; ++k) {
        if (!act[k]) continue;
        const T w = T(halter_.weight(l, k));
        for (index_t j = 0; j < D_; ++j) o[k * D_ + j] += w * t[k * D_ + j];
      }
      in = t_[l].data();
    }
    // Final norm over o, head on CLS.
    Layout head_out;
    net.template get<3>().plan(full_, norm_layout_);
    net.template get<4>().plan(norm_layout_, head_out);
    logits_layout_ = head_out;
    normed_.resize(size);
    logits_.resize(head_out.size());
    net.template get<3>().forward(sub<3>(p), view_of<const T, B>(out_.data(), full_),
                                  view_of<T, B>(normed_.data(), norm_layout_), norm_ctx_);
    net.template get<4>().forward(sub<4>(p), view_of<const T, B>(normed_.data(), norm_layout_),
                                  view_of<T, B>(logits_.data(), logits_layout_), head_ctx_);
    return view_of<const T, B>(logits_.data(), logits_layout_);
  }

  // Accumulates into the model's grads: the loss whose gradient w.r.t. the logits is `dlogits`,
  // plus (optional) a gradient `d_output` (B*N*D) w.r.t. the halting-weighted output o, plus the
  // ponder and prior losses, plus (optional) `d_raw_scores[l][k]` on the computed scores.
  void backward(const T* dlogits, const T* d_output = nullptr,
                const std::vector<std::vector<double>>* d_raw_scores = nullptr) {
    Net& net = m_.net();
    auto p = ParamsView<const T, B>(m_.params());
    auto g = m_.grads();
    const index_t L = halter_.layers(), batch = halter_.batch();
    const auto rows = static_cast<std::size_t>(batch * N_);
    const auto size = rows * static_cast<std::size_t>(D_);
    dnormed_.resize(size);
    dout_.resize(size);
    net.template get<4>().backward(sub<4>(p), head_ctx_, view_of<const T, B>(dlogits, logits_layout_),
                                   view_of<T, B>(dnormed_.data(), norm_layout_), gsub<4>(g));
    net.template get<3>().backward(sub<3>(p), norm_ctx_, view_of<const T, B>(dnormed_.data(), norm_layout_),
                                   view_of<T, B>(dout_.data(), full_), gsub<3>(g));
    if (d_output)
      for (std::size_t i = 0; i < size; ++i) dout_[i] += d_output[i];
    // <do_k, t^l_k> for the output weights, then the score gradients.
    dots_.assign(static_cast<std::size_t>(L), std::vector<double>(rows, 0.0));
    for (index_t l = 0; l < L; ++l) {
      const auto& act = halter_.active(l);
      for (std::size_t k = 0; k < rows; ++k) {
        if (!act[k]) continue;
        double s = 0;
        for (index_t j = 0; j < D_; ++j) s += double(dout_[k * D_ + j]) * double(t_[l][k * D_ + j]);
        dots_[l][k] = s;
      }
    }
    halter_.backward(dots_, du_, d_raw_scores);
    carry_.assign(size, T(0));
    dt_.resize(size);
    for (index_t l = L; l-- > 0;) {
      const auto& act = halter_.active(l);
      const auto& block = model::blocks(net)[l];
      // dL/dt^l = w^l do + (from block l+1) + e_0 du^l, on the tokens active at l.
      for (std::size_t k = 0; k < rows; ++k) {
        T* d = dt_.data() + k * D_;
        if (!act[k]) {
          std::fill(d, d + D_, T(0));
          continue;
        }
        const T w = T(halter_.weight(l, k));
        for (index_t j = 0; j < D_; ++j) d[j] = w * dout_[k * D_ + j] + carry_[k * D_ + j];
        d[0] += T(du_[l][k]);
      }
      auto pb = block_params(p, l);
      auto gb = block_params(g, l);
      if (o_.packed) {
        const auto& idx = packed_rows_[l];
        gdy_.resize(idx.size() * D_);
        gdx_.resize(idx.size() * D_);
        gather(dt_.data(), idx, gdy_.data());
        block.backward(pb, block_ctx_[l], view_of<const T, B>(gdy_.data(), packed_layout_[l]),
                       view_of<T, B>(gdx_.data(), packed_layout_[l]), gb);
        std::fill(carry_.begin(), carry_.end(), T(0));
        scatter(gdx_.data(), idx, carry_.data());
      } else {
        block.backward(pb, block_ctx_[l], view_of<const T, B>(dt_.data(), full_, act.data()),
                       view_of<T, B>(carry_.data(), full_, act.data()), gb);
      }
    }
    // Embedding.
    Layout patches;
    net.template get<0>().plan(img_layout_, patches);
    dpatch_.resize(patches.size());
    net.template get<1>().backward(sub<1>(p), cls_ctx_, view_of<const T, B>(carry_.data(), full_),
                                   view_of<T, B>(dpatch_.data(), patches), gsub<1>(g));
    net.template get<0>().backward(sub<0>(p), pe_ctx_, view_of<const T, B>(dpatch_.data(), patches),
                                   TokensView<T, B>{}, gsub<0>(g));
  }

  void zero_grad() { m_.zero_grad(); }
  auto grads() { return m_.grads(); }
  auto params() { return m_.params(); }
  Buffer<T>& adam_m() { return m_.adam_m(); }
  Buffer<T>& adam_v() { return m_.adam_v(); }

  const Halter& halter() const { return halter_; }
  // The block outputs t^l (B*N*D; rows of tokens inactive at l are zero in the packed path)
  // and the halting-weighted output o of the last forward.
  const Buffer<T>& block_output(index_t l) const { return t_.at(l); }
  const std::vector<T>& output() const { return out_; }
  index_t tokens() const { return N_; }
  index_t width() const { return D_; }
  // Block l's context of the last forward (packed: over the kept tokens only).
  auto& block_context(index_t l) { return block_ctx_.at(l); }
  const Layout& block_layout(index_t l) const { return o_.packed ? packed_layout_.at(l) : full_; }
  // Packed path: the full-batch row (b*N + i) of each packed row of block l.
  const std::vector<index_t>& packed_rows(index_t l) const { return packed_rows_.at(l); }

 private:
  template <std::size_t I, class P>
  auto sub(P p) const { return p.sub(m_.net().template param_offset<I>(), m_.net().template get<I>().param_count()); }
  template <std::size_t I, class P>
  auto gsub(P g) const { return g.sub(m_.net().template param_offset<I>(), m_.net().template get<I>().param_count()); }
  template <class P>
  auto block_params(P p, index_t l) const {
    const auto& net = m_.net();
    return p.sub(net.template param_offset<2>() + model::blocks(net).param_offset(l),
                 model::blocks(net)[l].param_count());
  }
  void gather(const T* full, const std::vector<index_t>& idx, T* packed) const {
#pragma omp parallel for schedule(static) if (idx.size() > 2048)
    for (std::size_t r = 0; r < idx.size(); ++r)
      std::copy(full + idx[r] * D_, full + (idx[r] + 1) * D_, packed + r * D_);
  }
  void scatter(const T* packed, const std::vector<index_t>& idx, T* full) const {
#pragma omp parallel for schedule(static) if (idx.size() > 2048)
    for (std::size_t r = 0; r < idx.size(); ++r)
      std::copy(packed + r * D_, packed + (r + 1) * D_, full + idx[r] * D_);
  }

  Model& m_;
  HaltingOptions o_;
  Halter halter_;
  std::vector<std::vector<std::uint8_t>> ext_;
  index_t N_ = 0, D_ = 0;
  Layout img_layout_, full_, norm_layout_, logits_layout_;
  std::vector<Layout> packed_layout_;
  std::vector<std::vector<index_t>> packed_rows_;
  typename std::decay_t<decltype(std::declval<Net&>().template get<0>())>::template Ctx<B> pe_ctx_;
  typename std::decay_t<decltype(std::declval<Net&>().template get<1>())>::template Ctx<B> cls_ctx_;
  typename std::decay_t<decltype(std::declval<Net&>().template get<3>())>::template Ctx<B> norm_ctx_;
  typename std::decay_t<decltype(std::declval<Net&>().template get<4>())>::template Ctx<B> head_ctx_;
  std::vector<typename Block::template Ctx<B>> block_ctx_;
  Buffer<T> patch_out_, x0_, normed_, logits_, dnormed_, dt_, dpatch_, gdy_, gdx_;
  std::vector<Buffer<T>> t_, pin_, pout_;
  std::vector<T> out_, dout_, carry_;
  std::vector<std::vector<double>> dots_, du_;
};

inline void to_json(nlohmann::json& j, const HaltingOptions& o) {
  j = nlohmann::json{{"gamma", o.gamma}, {"beta", o.beta}, {"eps", o.eps}, {"ponder_weight", o.ponder_weight},
                     {"prior_weight", o.prior_weight}, {"prior_mean", o.prior_mean},
                     {"prior_std", o.prior_std}, {"packed", o.packed}, {"public_prior_bug", o.public_prior_bug}};
}
inline void from_json(const nlohmann::json& j, HaltingOptions& o) {
  auto get = [&](const char* key, auto& v) {
    if (!j.contains(key)) fail("halting options: missing key '", key, "' in ", j.dump());
    try {
      j.at(key).get_to(v);
    } catch (const nlohmann::json::exception&) {
      fail("halting options: key '", key, "' has the wrong type: ", j.at(key).dump());
    }
  };
  get("gamma", o.gamma);
  get("beta", o.beta);
  get("eps", o.eps);
  get("ponder_weight", o.ponder_weight);
  get("prior_weight", o.prior_weight);
  get("prior_mean", o.prior_mean);
  get("prior_std", o.prior_std);
  if (j.contains("packed")) get("packed", o.packed);
  if (j.contains("public_prior_bug")) get("public_prior_bug", o.public_prior_bug);
  o.validate();
}

// What a halting model does on a dataset: accuracy, and how many tokens each block sees.
struct HaltingEval {
  double accuracy = 0, loss = 0;
  std::vector<double> keep;  // (L) mean fraction of patch tokens entering block l
  double mean_keep = 0;      // mean over layers
  double ponder = 0;         // mean (layers run + remainder) of the patch tokens
  index_t count = 0;
  double ms_per_image = 0;   // forward wall time (batch `batch`, this machine, this run)
};

template <class HV>
HaltingEval evaluate_halting(HV& hv, const train::ImageDataset& data, index_t batch = 256,
                             train::Normalize norm = {}) {
  using T = typename HV::T;
  train::BatchLoader loader(data, batch, /*shuffle=*/false, 0, norm);
  std::vector<float> images;
  std::vector<std::int32_t> labels;
  std::vector<T> x;
  HaltingEval e;
  double loss_sum = 0, ponder_sum = 0, secs = 0;
  index_t correct = 0;
  while (index_t n = loader.next(images, labels)) {
    x.assign(images.begin(), images.end());
    const auto t0 = std::chrono::steady_clock::now();
    auto logits = hv.forward(x.data(), n, data.image_numel());
    secs += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto r = train::cross_entropy<T>(logits.data, labels.data(), n, logits.dim, 0.0, nullptr);
    loss_sum += r.loss * double(n);
    correct += r.correct;
    const auto& h = hv.halter();
    e.keep.resize(static_cast<std::size_t>(h.layers()), 0.0);
    for (index_t l = 0; l < h.layers(); ++l) e.keep[l] += h.keep_ratio(l) * double(n);
    ponder_sum += h.ponder() * double(n);
    e.count += n;
  }
  check(e.count > 0, "evaluate_halting: the dataset '", data.name, "' is empty");
  for (auto& k : e.keep) k /= double(e.count);
  for (double k : e.keep) e.mean_keep += k / double(e.keep.size());
  e.loss = loss_sum / double(e.count);
  e.accuracy = double(correct) / double(e.count);
  e.ponder = ponder_sum / double(e.count);
  e.ms_per_image = 1e3 * secs / double(e.count);
  return e;
}

}  // namespace seqswap::halting
