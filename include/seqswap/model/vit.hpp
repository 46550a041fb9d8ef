// The vision transformer: PatchEmbed -> ClsPosEmbed -> Repeat<Block> -> LayerNorm -> Head,
// a block being x = x + Mixer(LN1(x)); x = x + MLP(LN2(x)). Built from a runtime config.
#pragma once
#include <cmath>
#include <string>

#include <nlohmann/json.hpp>

#include "seqswap/attention/softmax_attention.hpp"
#include "seqswap/layers/classifier_head.hpp"
#include "seqswap/layers/cls_pos_embed.hpp"
#include "seqswap/layers/layer_norm.hpp"
#include "seqswap/layers/mlp.hpp"
#include "seqswap/layers/patch_embed.hpp"
#include "seqswap/model/repeat.hpp"
#include "seqswap/model/residual.hpp"
#include "seqswap/model/sequential.hpp"
#include "seqswap/model/slot.hpp"

namespace seqswap::model {

struct VitConfig {
  index_t image_size = 28;
  index_t channels = 1;
  index_t patch = 4;
  index_t width = 64;
  index_t depth = 8;
  index_t heads = 4;
  double mlp_ratio = 4.0;
  index_t classes = 10;
  double eps = 1e-6;  // layer norm

  index_t num_patches() const { return (image_size / patch) * (image_size / patch); }
  index_t tokens() const { return num_patches() + 1; }
  index_t hidden() const { return static_cast<index_t>(std::lround(mlp_ratio * double(width))); }

  void validate() const {
    check(image_size > 0 && channels > 0 && patch > 0 && width > 0 && depth > 0 && heads > 0 &&
              classes > 1 && mlp_ratio > 0,
          "ViT config: expected positive sizes and at least 2 classes, found image_size=",
          image_size, " channels=", channels, " patch=", patch, " width=", width, " depth=", depth,
          " heads=", heads, " mlp_ratio=", mlp_ratio, " classes=", classes);
    check(image_size % patch == 0, "ViT config: expected image_size (", image_size,
          ") to be a multiple of patch (", patch, ")");
    check(width % heads == 0, "ViT config: expected width (", width, ") divisible by heads (",
          heads, ")");
  }
};

inline void to_json(nlohmann::json& j, const VitConfig& c) {
  j = nlohmann::json{{"image_size", c.image_size}, {"channels", c.channels}, {"patch", c.patch},
                     {"width", c.width},           {"depth", c.depth},       {"heads", c.heads},
                     {"mlp_ratio", c.mlp_ratio},   {"classes", c.classes},   {"eps", c.eps}};
}
inline void from_json(const nlohmann::json& j, VitConfig& c) {
  auto get = [&](const char* key, auto& v) {
    if (!j.contains(key)) fail("ViT config: missing key '", key, "' in ", j.dump());
    try {
      j.at(key).get_to(v);
    } catch (const nlohmann::json::exception&) {
      fail("ViT config: key '", key, "' has the wrong type: ", j.at(key).dump());
    }
  };
  get("image_size", c.image_size);
  get("channels", c.channels);
  get("patch", c.patch);
  get("width", c.width);
  get("depth", c.depth);
  get("heads", c.heads);
  get("mlp_ratio", c.mlp_ratio);
  get("classes", c.classes);
  if (j.contains("eps")) get("eps", c.eps);
  c.validate();
}

template <class T>
using DefaultMixer = Slot<attention::SoftmaxAttention<T>>;

template <class T, class MixerSlot = DefaultMixer<T>>
using Block = Sequential<Residual<Sequential<layers::LayerNorm<T>, MixerSlot>>,
                         Residual<Sequential<layers::LayerNorm<T>, layers::Mlp<T>>>>;

template <class T, class MixerSlot = DefaultMixer<T>>
using Vit = Sequential<layers::PatchEmbed<T>, layers::ClsPosEmbed<T>,
                       Repeat<Block<T, MixerSlot>>, layers::LayerNorm<T>,
                       layers::ClassifierHead<T>>;

template <class T, class MixerSlot = DefaultMixer<T>>
Block<T, MixerSlot> make_block(const VitConfig& c) {
  using namespace layers;
  auto mixer = MixerSlot(attention::SoftmaxAttention<T>(
      {.dim = c.width, .heads = c.heads, .qkv_bias = true, .name = "attn"}));
  return Block<T, MixerSlot>(
      Residual(Sequential(LayerNorm<T>({.dim = c.width, .eps = c.eps, .name = "norm1"}),
                          std::move(mixer))),
      Residual(Sequential(LayerNorm<T>({.dim = c.width, .eps = c.eps, .name = "norm2"}),
                          Mlp<T>({.dim = c.width, .hidden = c.hidden(), .name = "mlp"}))));
}

template <class T, class MixerSlot = DefaultMixer<T>>
Vit<T, MixerSlot> make_vit(const VitConfig& c) {
  using namespace layers;
  c.validate();
  std::vector<Block<T, MixerSlot>> blocks;
  for (index_t i = 0; i < c.depth; ++i) blocks.push_back(make_block<T, MixerSlot>(c));
  return Vit<T, MixerSlot>(
      PatchEmbed<T>({.image_size = c.image_size, .channels = c.channels, .patch = c.patch,
                     .dim = c.width, .name = "patch_embed"}),
      ClsPosEmbed<T>({.num_patches = c.num_patches(), .dim = c.width}),
      Repeat<Block<T, MixerSlot>>(std::move(blocks), "blocks"),
      LayerNorm<T>({.dim = c.width, .eps = c.eps, .name = "norm"}),
      ClassifierHead<T>({.dim = c.width, .classes = c.classes, .name = "head"}));
}

// Accessors into a Vit.
template <class V>
auto& blocks(V& vit) { return vit.template get<2>(); }
// The mixer slot of block i.
template <class V>
auto& mixer_slot(V& vit, std::size_t i) {
  return blocks(vit)[i].template get<0>().inner().template get<1>();
}

// Where block l's mixer sits in the arena (elements from the start of the Vit's parameters).
template <class V>
std::size_t mixer_param_offset(const V& vit, std::size_t l) {
  const auto& block = blocks(vit)[l];
  return vit.template param_offset<2>() + blocks(vit).param_offset(l) +
         block.template get<0>().inner().template param_offset<1>();
}

// Into the context of a Vit's last forward: block l's context, its mixer's context, and the
// mixer's input LN1(x_l) (what stage-1 distillation feeds a student mixer).
template <class VitCtx>
auto& block_context(VitCtx& ctx, std::size_t l) {
  return std::get<2>(ctx.ctx).ctx.at(l);
}
// The same from one block's context (e.g. a HaltingVit's, over packed tokens).
template <class BlockCtx>
auto& block_mixer_context(BlockCtx& bc) {
  return std::get<1>(std::get<0>(bc.ctx).inner.ctx);
}
template <class T, class B = backend::Host, class BlockCtx>
TokensView<const T, B> block_mixer_input(BlockCtx& bc) {
  auto& attn_branch = std::get<0>(bc.ctx).inner;  // Sequential<LN1, mixer> ctx
  return view_of<const T, B>(attn_branch.act[0].data(), attn_branch.layouts[1], attn_branch.keep[1]);
}
template <class VitCtx>
auto& mixer_context(VitCtx& ctx, std::size_t l) {
  return block_mixer_context(block_context(ctx, l));
}
template <class T, class B = backend::Host, class VitCtx>
TokensView<const T, B> mixer_input(VitCtx& ctx, std::size_t l) {
  return block_mixer_input<T, B>(block_context(ctx, l));
}

}  // namespace seqswap::model
