// The halting ViT: the same ViT with its body under the Halting combinator (model/halting.hpp),
// and HaltingVit, a view that runs a ViT model's own parameters (its arena, shared) with
// halting — so a teacher is fine-tuned, evaluated or distilled from with and without halting
// from one set of weights. Halting options travel in checkpoints as metadata "halting".
#pragma once
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

#include "seqswap/io/json.hpp"
#include "seqswap/io/safetensors.hpp"
#include "seqswap/model/halting.hpp"
#include "seqswap/model/model.hpp"
#include "seqswap/model/vit.hpp"

namespace seqswap::model {

template <class T, class M = DefaultMixer<T>>
using HaltingVitNet = VitNet<T, Halting<Repeat<Block<T, M>>>>;

// The halting ViT of `vit`'s layers (copies of them: layers hold only their options).
template <class T, class M>
HaltingVitNet<T, M> with_halting(const Vit<T, M>& vit, const halting::HaltingOptions& o) {
  return HaltingVitNet<T, M>(vit.patch_embed(), vit.cls_pos_embed(), Halting<Repeat<Block<T, M>>>(vit.body(), o),
                             vit.norm(), vit.head());
}

// Runs `m`'s parameters with A-ViT halting. It offers the interface of a model that the
// training loop and train::evaluate use (forward, backward, zero_grad, grads, params, ...),
// so the same loop fine-tunes a halting teacher; backward adds the ponder and prior gradients.
// Build it after the model's mixers are seated: it copies the layers at construction.
// On backend::Cuda (a device model) images, logits, gradients and block outputs are device
// memory; the Halter (halter()) is on the host either way.
template <class Scalar, class M = DefaultMixer<Scalar>, class Backend = backend::Host>
class HaltingVit {
 public:
  using T = Scalar;
  using Net = HaltingVitNet<T, M>;
  using ModelType = Model<Vit<T, M>, Backend>;
  using scalar_type = T;
  using B = Backend;
  using backend_type = Backend;

  HaltingVit(ModelType& m, const halting::HaltingOptions& o) : m_(m), net_(with_halting<Scalar, M>(m.net(), o)) {}

  const halting::HaltingOptions& options() const { return net_.body().options(); }
  ModelType& model() { return m_; }
  const Net& net() const { return net_; }
  typename Net::template Ctx<B>& context() { return run_.context(); }

  // External halting decisions (guided distillation): masks[l] (B*N) = tokens entering block l,
  // l = 0..L-1, masks[0] all ones, each a subset of the previous; CLS always kept. The network
  // then runs on exactly those tokens while its own scores are still computed. Empty: its own.
  void set_external_masks(std::vector<std::vector<std::uint8_t>> masks) { halting().external = std::move(masks); }
  void clear_external_masks() { halting().external.clear(); }

  // images (B, C*S*S) -> logits (B, classes), valid until the next forward.
  TokensView<const T, B> forward(const T* images, index_t batch, index_t numel) {
    return run_.forward(net_, ParamsView<const T, B>(m_.params()), images, batch, numel);
  }
  // Accumulates into the model's grads: the loss whose gradient w.r.t. the logits is `dlogits`,
  // plus (optional) a gradient `d_output` (B*N*D) w.r.t. the halting-weighted output o, plus the
  // ponder and prior losses, plus (optional) `d_raw_scores[l][k]` on the computed scores.
  void backward(const T* dlogits, const T* d_output = nullptr,
                const std::vector<std::vector<double>>* d_raw_scores = nullptr) {
    auto& h = halting();
    h.extra_dy = d_output;
    h.d_raw = d_raw_scores;
    run_.backward(net_, ParamsView<const T, B>(m_.params()), m_.grads(), dlogits, nullptr);
    h.extra_dy = nullptr;
    h.d_raw = nullptr;
  }

  void zero_grad() { m_.zero_grad(); }
  const auto& params_info() const { return m_.params_info(); }
  std::size_t param_count() const { return m_.param_count(); }
  auto grads() { return m_.grads(); }
  auto params() { return m_.params(); }
  Buffer<T, B>& adam_m() { return m_.adam_m(); }
  Buffer<T, B>& adam_v() { return m_.adam_v(); }

  const halting::Halter& halter() { return halting().halter; }
  // The block outputs t^l (B*N*D; rows of tokens inactive at l are zero in the packed path)
  // and the halting-weighted output o of the last forward.
  const Buffer<T, B>& block_output(index_t l) { return halting().t.at(l); }
  std::span<const T> output() { return halting().output(); }
  index_t tokens() { return halting().tokens(); }
  index_t width() { return halting().full.dim; }
  const Layout& block_layout(index_t l) { return halting().block_layout(options(), std::size_t(l)); }
  // Packed path: the full-batch row (b*N + i) of each packed row of block l.
  const std::vector<index_t>& packed_rows(index_t l) { return halting().packed_rows.at(l); }

 private:
  auto& halting() { return std::get<2>(run_.context().ctx); }

  ModelType& m_;
  Net net_;
  Runner<Net, B> run_;
};

// HaltingVit hv(model, options): the scalar and mixer types come from the model's ViT.
template <class Net, class Backend>
HaltingVit(Model<Net, Backend>&, const halting::HaltingOptions&)
    -> HaltingVit<typename Net::scalar_type, typename Net::BodyType::LayerType::MixerType, Backend>;

}  // namespace seqswap::model

namespace seqswap::halting {

inline void to_json(nlohmann::json& j, const HaltingOptions& o) {
  j = nlohmann::json{{"gamma", o.gamma}, {"beta", o.beta}, {"eps", o.eps}, {"ponder_weight", o.ponder_weight},
                     {"prior_weight", o.prior_weight}, {"prior_mean", o.prior_mean},
                     {"prior_std", o.prior_std}, {"packed", o.packed}, {"public_prior_bug", o.public_prior_bug}};
}
inline void from_json(const nlohmann::json& j, HaltingOptions& o) {
  const std::string what = "halting options";
  o.gamma = io::json_value<double>(j, "gamma", what);
  o.beta = io::json_value<double>(j, "beta", what);
  o.eps = io::json_value<double>(j, "eps", what);
  o.ponder_weight = io::json_value<double>(j, "ponder_weight", what);
  o.prior_weight = io::json_value<double>(j, "prior_weight", what);
  o.prior_mean = io::json_value<double>(j, "prior_mean", what);
  o.prior_std = io::json_value<double>(j, "prior_std", what);
  io::json_read_optional(j, "packed", o.packed, what);
  io::json_read_optional(j, "public_prior_bug", o.public_prior_bug, what);
  o.validate();
}

}  // namespace seqswap::halting

namespace seqswap::model {

// The halting options a checkpoint was fine-tuned with (metadata "halting"), if any.
inline std::optional<halting::HaltingOptions> read_halting_options(const io::SafetensorsFile& f) {
  auto it = f.metadata.find("halting");
  if (it == f.metadata.end()) return std::nullopt;
  halting::HaltingOptions o;
  try {
    from_json(nlohmann::json::parse(it->second), o);
  } catch (const nlohmann::json::exception& e) {
    fail("checkpoint ", f.path.string(), ": metadata 'halting' is not valid JSON (", e.what(), ")");
  } catch (const Error& e) {
    fail("checkpoint ", f.path.string(), ": ", e.what());
  }
  return o;
}

}  // namespace seqswap::model
