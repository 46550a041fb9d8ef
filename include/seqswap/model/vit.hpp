// The vision transformer: PatchEmbed -> ClsPosEmbed -> body -> LayerNorm -> Head, a block
// being x = x + Mixer(LN1(x)); x = x + MLP(LN2(x)). The body is a stack of blocks:
//   Repeat<Block<T, M>>              one mixer type M in every block (M may be a runtime Slot)
//   Chain<Repeat<Block<T, M1>>, ...> mixers fixed per block at compile time (make_vit<T, Layers<M1, 4>, ...>)
//   Halting<Repeat<Block<T, M>>>     the same blocks under A-ViT halting (model/halting_vit.hpp)
// Everything is reached by name: vit.block(i), vit.mixer(i), Block::mixer_input(ctx), ...
#pragma once
#include <cmath>
#include <string>

#include <nlohmann/json.hpp>

#include "seqswap/attention/softmax_attention.hpp"
#include "seqswap/io/json.hpp"
#include "seqswap/io/normalize.hpp"
#include "seqswap/layers/classifier_head.hpp"
#include "seqswap/layers/cls_pos_embed.hpp"
#include "seqswap/layers/layer_norm.hpp"
#include "seqswap/layers/mlp.hpp"
#include "seqswap/layers/patch_embed.hpp"
#include "seqswap/model/chain.hpp"
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
  // How the model's input pixels are normalised (stored with the config in every checkpoint;
  // a config without it, as written before it existed, means Fashion-MNIST's statistics).
  io::Normalize norm;

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
    // Bounds before anything is sized from them (a corrupt config must not overflow or
    // allocate terabytes before the real error).
    check(image_size <= 8192 && channels <= 64 && width <= 65536 && depth <= 4096 && classes <= 1000000 &&
              std::isfinite(mlp_ratio) && mlp_ratio <= 64,
          "ViT config: expected image_size <= 8192, channels <= 64, width <= 65536, depth <= 4096, "
          "classes <= 1000000, mlp_ratio <= 64; found image_size=", image_size, " channels=", channels,
          " width=", width, " depth=", depth, " classes=", classes, " mlp_ratio=", mlp_ratio);
    check(std::isfinite(eps) && eps > 0 && eps < 1, "ViT config: expected layer-norm eps in (0, 1), found ", eps);
    norm.check_for(channels, "ViT config");
  }
};

// The ViT/DeiT shapes of timm by name (patch 16, 224 x 224 RGB, 1,000 classes, ImageNet's
// normalisation, layer-norm eps 1e-6): a timm checkpoint of that model has exactly the tensor
// names and shapes of make_vit(vit_arch(name)) (tests/test_checkpoint.cpp lists them).
inline const std::vector<std::string>& vit_arch_names() {
  static const std::vector<std::string> names = {"deit_tiny_patch16_224", "deit_small_patch16_224",
                                                 "deit_base_patch16_224", "vit_tiny_patch16_224",
                                                 "vit_small_patch16_224", "vit_base_patch16_224"};
  return names;
}
inline VitConfig vit_arch(const std::string& name) {
  VitConfig c;
  c.image_size = 224;
  c.channels = 3;
  c.patch = 16;
  c.mlp_ratio = 4.0;
  c.classes = 1000;
  c.eps = 1e-6;
  c.depth = 12;
  c.norm = io::Normalize::imagenet();
  const std::string size = name.substr(0, name.find("_patch16_224"));
  if (size == "deit_tiny" || size == "vit_tiny") {
    c.width = 192, c.heads = 3;
  } else if (size == "deit_small" || size == "vit_small") {
    c.width = 384, c.heads = 6;
  } else if (size == "deit_base" || size == "vit_base") {
    c.width = 768, c.heads = 12;
  } else {
    std::string known;
    for (const auto& n : vit_arch_names()) known += (known.empty() ? "" : ", ") + n;
    fail("ViT architecture '", name, "': expected one of ", known);
  }
  check(name == size + "_patch16_224", "ViT architecture '", name, "': expected one of the names ending in _patch16_224");
  // timm's vit_* weights (augreg) use mean = std = 0.5; its deit_* weights use ImageNet's.
  if (size.rfind("vit_", 0) == 0) c.norm = io::Normalize{{0.5}, {0.5}};
  c.validate();
  return c;
}

inline void to_json(nlohmann::json& j, const VitConfig& c) {
  j = nlohmann::json{{"image_size", c.image_size}, {"channels", c.channels}, {"patch", c.patch},
                     {"width", c.width},           {"depth", c.depth},       {"heads", c.heads},
                     {"mlp_ratio", c.mlp_ratio},   {"classes", c.classes},   {"eps", c.eps},
                     {"normalize", c.norm}};
}
inline void from_json(const nlohmann::json& j, VitConfig& c) {
  const std::string what = "ViT config";
  c.image_size = io::json_value<index_t>(j, "image_size", what);
  c.channels = io::json_value<index_t>(j, "channels", what);
  c.patch = io::json_value<index_t>(j, "patch", what);
  c.width = io::json_value<index_t>(j, "width", what);
  c.depth = io::json_value<index_t>(j, "depth", what);
  c.heads = io::json_value<index_t>(j, "heads", what);
  c.mlp_ratio = io::json_value<double>(j, "mlp_ratio", what);
  c.classes = io::json_value<index_t>(j, "classes", what);
  io::json_read_optional(j, "eps", c.eps, what);
  c.norm = io::Normalize::fashion_mnist();
  if (j.contains("normalize")) {
    try {
      c.norm = j.at("normalize").get<io::Normalize>();
    } catch (const Error& e) {
      fail(what, ": ", e.what());
    } catch (const nlohmann::json::exception& e) {
      fail(what, ": \"normalize\": ", e.what());
    }
  }
  c.validate();
}

template <class T>
using DefaultMixer = Slot<attention::SoftmaxAttention<T>>;

// A mixer of type M sized for the config, its parameters named "attn.*" (the teacher's names,
// so that a student keeps the teacher's projection): a Slot starts with its first alternative.
template <class M>
M make_mixer(const VitConfig& c);

namespace detail {
template <class M>
struct SlotTraits : std::false_type {};
template <class... Ms>
struct SlotTraits<Slot<Ms...>> : std::true_type {
  using First = std::tuple_element_t<0, std::tuple<Ms...>>;
};
}  // namespace detail

template <class M>
M make_mixer(const VitConfig& c) {
  if constexpr (detail::SlotTraits<M>::value) {
    return M(make_mixer<typename detail::SlotTraits<M>::First>(c));
  } else {
    std::remove_cvref_t<decltype(std::declval<const M&>().options())> o{};
    o.dim = c.width;
    if constexpr (requires { o.heads; }) o.heads = c.heads;
    o.name = "attn";
    return M(o);
  }
}

template <class T, class M>
using BlockLayers = Sequential<Residual<Sequential<layers::LayerNorm<T>, M>>,
                               Residual<Sequential<layers::LayerNorm<T>, layers::Mlp<T>>>>;

// One transformer block with its parts reached by name.
template <class T, class M = DefaultMixer<T>>
class Block : public BlockLayers<T, M> {
  static_assert(is_mixer_v<M>,
                "Block<T, M>: the mixer position needs a seqswap::Mixer (tokens to tokens of the same "
                "width, keep-mask, pre_projection, backward_pre, kind_name; see docs/architecture.md)");

 public:
  using Base = BlockLayers<T, M>;
  using MixerType = M;
  using Base::Base;

  M& mixer() { return this->template get<0>().inner().template get<1>(); }
  const M& mixer() const { return this->template get<0>().inner().template get<1>(); }
  const layers::Mlp<T>& mlp() const { return this->template get<1>().inner().template get<1>(); }
  // Where the mixer's parameters start within the block's.
  std::size_t mixer_offset() const { return this->template get<0>().inner().template param_offset<1>(); }

  // From this block's context after a forward: the mixer's context, its input LN1(x) (what
  // stage-1 distillation feeds a student mixer) and its output (the residual branch, rows x D).
  template <class C>
  static auto& mixer_context(C& c) { return std::get<1>(std::get<0>(c.ctx).inner.ctx); }
  template <class B = backend::Host, class C>
  static TokensView<const T, B> mixer_input(const C& c) {
    const auto& branch = std::get<0>(c.ctx).inner;  // Sequential<LN1, mixer>'s context
    return view_of<const T, B>(branch.act[0].data(), branch.layouts[1], branch.keep[1]);
  }
  template <class C>
  static const T* mixer_output(const C& c) { return std::get<0>(c.ctx).f.data(); }
};

template <class T, class M = DefaultMixer<T>>
Block<T, M> make_block(const VitConfig& c) {
  using namespace layers;
  return Block<T, M>(
      Residual(Sequential(LayerNorm<T>({.dim = c.width, .eps = c.eps, .name = "norm1"}), make_mixer<M>(c))),
      Residual(Sequential(LayerNorm<T>({.dim = c.width, .eps = c.eps, .name = "norm2"}),
                          Mlp<T>({.dim = c.width, .hidden = c.hidden(), .name = "mlp"}))));
}

template <class T, class Body>
using VitLayers = Sequential<layers::PatchEmbed<T>, layers::ClsPosEmbed<T>, Body, layers::LayerNorm<T>,
                             layers::ClassifierHead<T>>;

// A ViT over a body of blocks (Repeat, Chain or Halting), with its parts reached by name.
template <class T, class Body>
class VitNet : public VitLayers<T, Body> {
 public:
  using Base = VitLayers<T, Body>;
  using BodyType = Body;
  using Base::Base;

  const layers::PatchEmbed<T>& patch_embed() const { return this->template get<0>(); }
  const layers::ClsPosEmbed<T>& cls_pos_embed() const { return this->template get<1>(); }
  Body& body() { return this->template get<2>(); }
  const Body& body() const { return this->template get<2>(); }
  const layers::LayerNorm<T>& norm() const { return this->template get<3>(); }
  const layers::ClassifierHead<T>& head() const { return this->template get<4>(); }
  std::size_t depth() const { return body().size(); }

  // Block i and its mixer, where every block has the same type (Repeat, Halting bodies).
  auto& block(std::size_t i) { return body()[i]; }
  const auto& block(std::size_t i) const { return body()[i]; }
  auto& mixer(std::size_t i) { return block(i).mixer(); }
  const auto& mixer(std::size_t i) const { return block(i).mixer(); }

  // Calls f(mixer of block i, its offset in the ViT's parameters) at the mixer's own type:
  // works for every body, Chain included.
  template <class F>
  void visit_mixer(std::size_t i, F&& f) const {
    visit_block(i, [&](const auto& b, std::size_t off) { f(b.mixer(), off + b.mixer_offset()); });
  }
  template <class F>
  void visit_block(std::size_t i, F&& f) const {
    const std::size_t base = this->template param_offset<2>();
    if constexpr (requires(const Body& b) { b[std::size_t{0}]; }) {
      f(body()[i], base + body().param_offset(i));
    } else {
      body().visit_layer(i, [&](const auto& b, std::size_t off) { f(b, base + off); });
    }
  }
  // Where block i's mixer sits in the arena (elements from the start of the ViT's parameters).
  std::size_t mixer_offset(std::size_t i) const {
    std::size_t off = 0;
    visit_mixer(i, [&](const auto&, std::size_t o) { off = o; });
    return off;
  }
  // Block i's context within a context of this ViT's last forward (bodies of one block type).
  template <class C>
  auto& block_context(C& c, std::size_t i) const { return Body::layer_context(std::get<2>(c.ctx), i); }
  // Calls f(block i, its context) at the block's own type: every body, Chain included.
  template <class C, class F>
  void visit_block_context(C& c, std::size_t i, F&& f) const {
    auto& bc = std::get<2>(c.ctx);
    if constexpr (requires { Body::layer_context(bc, i); })
      f(block(i), Body::layer_context(bc, i));
    else
      body().visit_layer_context(bc, i, f);
  }
};

// make_vit<T, M>(cfg): every block with mixer M (a Slot for choice at run time).
// make_vit<T, Layers<M1, n1>, Layers<M2, n2>, ...>(cfg): mixers fixed per block as a type;
// the counts must add up to cfg.depth.
template <class M, std::size_t Count>
struct Layers {
  using Mixer = M;
  static constexpr std::size_t count = Count;
};

namespace detail {
template <class G>
struct IsLayers : std::false_type {};
template <class M, std::size_t C>
struct IsLayers<Layers<M, C>> : std::true_type {};

template <class T, class... Gs>
struct BodyOf {
  using type = Chain<Repeat<Block<T, typename Gs::Mixer>>...>;
};
template <class T, class M>
struct BodyOf<T, M> {
  using type = Repeat<Block<T, M>>;
};
template <class T, class M, std::size_t C>
struct BodyOf<T, Layers<M, C>> {
  using type = Chain<Repeat<Block<T, M>>>;
};
}  // namespace detail

template <class T, class... Gs>
using VitOf = VitNet<T, typename detail::BodyOf<T, Gs...>::type>;
template <class T, class M = DefaultMixer<T>>
using Vit = VitOf<T, M>;

template <class T, class M = DefaultMixer<T>, class... Gs>
VitOf<T, M, Gs...> make_vit(const VitConfig& c) {
  using namespace layers;
  c.validate();
  using Net = VitOf<T, M, Gs...>;
  auto group = [&]<class Mx>(std::size_t first, std::size_t count) {
    std::vector<Block<T, Mx>> blocks;
    for (std::size_t i = 0; i < count; ++i) blocks.push_back(make_block<T, Mx>(c));
    return Repeat<Block<T, Mx>>(std::move(blocks), "blocks", first);
  };
  typename Net::BodyType body = [&] {
    if constexpr (!detail::IsLayers<M>::value) {
      static_assert(sizeof...(Gs) == 0, "make_vit: give one mixer type, or Layers<M, count> groups only");
      return group.template operator()<M>(0, std::size_t(c.depth));
    } else {
      static_assert((detail::IsLayers<Gs>::value && ...), "make_vit: give one mixer type, or Layers<M, count> groups only");
      constexpr std::size_t total = (M::count + ... + Gs::count);
      check(total == std::size_t(c.depth), "make_vit: the Layers<> groups hold ", total, " blocks, the config's depth is ",
            c.depth);
      std::size_t first = 0;
      auto next = [&]<class G>() {
        auto r = group.template operator()<typename G::Mixer>(first, G::count);
        first += G::count;
        return r;
      };
      // Braced initialisation evaluates left to right.
      return typename Net::BodyType{next.template operator()<M>(), next.template operator()<Gs>()...};
    }
  }();
  return Net(PatchEmbed<T>({.image_size = c.image_size, .channels = c.channels, .patch = c.patch, .dim = c.width,
                            .name = "patch_embed"}),
             ClsPosEmbed<T>({.num_patches = c.num_patches(), .dim = c.width}), std::move(body),
             LayerNorm<T>({.dim = c.width, .eps = c.eps, .name = "norm"}),
             ClassifierHead<T>({.dim = c.width, .classes = c.classes, .name = "head"}));
}

// Named access through anything holding a ViT and the context of its last forward (a Model,
// a HaltingVit): block l's mixer context, its input and its output.
template <class M>
auto& mixer_context(M& m, std::size_t l) {
  auto& bc = m.net().block_context(m.context(), l);
  return std::remove_cvref_t<decltype(m.net().block(l))>::mixer_context(bc);
}
// Calls f(block l's mixer context) at its own type, through anything holding a ViT (a Chain
// body included, where block types differ and mixer_context cannot return one type).
template <class M, class F>
void visit_mixer_context(M& m, std::size_t l, F&& f) {
  m.net().visit_block_context(m.context(), l, [&](const auto& blk, auto& bc) {
    f(std::remove_cvref_t<decltype(blk)>::mixer_context(bc));
  });
}
// (On the model's backend: a device model's view holds device pointers.)
template <class M>
auto mixer_input(M& m, std::size_t l) {
  using Blk = std::remove_cvref_t<decltype(m.net().block(l))>;
  if constexpr (requires { typename M::backend_type; })
    return Blk::template mixer_input<typename M::backend_type>(m.net().block_context(m.context(), l));
  else
    return Blk::mixer_input(m.net().block_context(m.context(), l));
}
template <class M>
auto mixer_output(M& m, std::size_t l) {
  using Blk = std::remove_cvref_t<decltype(m.net().block(l))>;
  return Blk::mixer_output(m.net().block_context(m.context(), l));
}

}  // namespace seqswap::model
