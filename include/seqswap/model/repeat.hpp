// Repeat<L>: a runtime-length stack of the same layer type (a ViT's blocks). Parameters of
// layer i are named "<name>.<first + i>.…" (timm: blocks.3.attn.qkv.weight); `first` lets a
// typed stack (model/chain.hpp) number its groups of blocks on from the previous group.
#pragma once
#include <string>
#include <vector>

#include "seqswap/core/buffer.hpp"
#include "seqswap/core/concepts.hpp"

namespace seqswap::model {

template <class L>
class Repeat {
  static_assert(Layer<L, backend::Host>,
                "Repeat<L>: L must satisfy seqswap::Layer (see docs/architecture.md, the layer contract)");

 public:
  using scalar_type = typename L::scalar_type;
  using T = scalar_type;
  using LayerType = L;
  using Input = kind::Tokens;
  using Output = kind::Tokens;
  template <class B>
  struct Ctx {
    std::vector<typename L::template Ctx<B>> ctx;
    std::vector<Layout> layouts;  // (depth+1)
    std::vector<Buffer<T, B>> act;   // (depth-1) intermediate outputs
    Buffer<T, B> grad[2];
    const std::uint8_t* keep = nullptr;
  };

  Repeat() = default;
  Repeat(std::vector<L> layers, std::string name = "blocks", std::size_t first = 0)
      : layers_(std::move(layers)), name_(std::move(name)), first_(first) {}

  std::size_t size() const { return layers_.size(); }
  L& operator[](std::size_t i) { return layers_[i]; }
  const L& operator[](std::size_t i) const { return layers_[i]; }

  std::size_t param_count() const {
    std::size_t s = 0;
    for (const auto& l : layers_) s += l.param_count();
    return s;
  }
  std::size_t param_offset(std::size_t i) const {
    std::size_t s = 0;
    for (std::size_t j = 0; j < i; ++j) s += layers_[j].param_count();
    return s;
  }
  void plan(const Layout& in, Layout& out) const {
    Layout cur = in, next;
    for (const auto& l : layers_) {
      l.plan(cur, next);
      cur = next;
    }
    out = cur;
  }
  // Forward FLOPs (2 per multiply-add) of a forward over `in`.
  double flops(const Layout& in) const {
    double f = 0;
    for (const auto& l : layers_) f += l.flops(in);
    return f;
  }
  template <class C>
  static auto& layer_context(C& c, std::size_t i) { return c.ctx.at(i); }

  template <class F>
  void visit_params(F&& f, const std::string& prefix, std::size_t offset) const {
    const std::string base = join_name(prefix, name_);
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      layers_[i].visit_params(f, join_name(base, std::to_string(first_ + i)), offset);
      offset += layers_[i].param_count();
    }
  }

  template <class B>
  void forward(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> y,
               Ctx<B>& c) const {
    const std::size_t L_ = layers_.size();
    check(L_ > 0, "Repeat '", name_, "': expected at least one layer, found none");
    c.ctx.resize(L_);
    c.layouts.resize(L_ + 1);
    c.act.resize(L_ > 1 ? L_ - 1 : 0);
    c.keep = x.keep;
    c.layouts[0] = Layout{x.batch, x.dim, {x.offsets, x.offsets + x.batch + 1}};
    TokensView<const T, B> in = x;
    std::size_t off = 0;
    for (std::size_t i = 0; i < L_; ++i) {
      layers_[i].plan(c.layouts[i], c.layouts[i + 1]);
      const std::size_t n = layers_[i].param_count();
      if (i + 1 == L_) {
        layers_[i].forward(p.sub(off, n), in, y, c.ctx[i]);
      } else {
        c.act[i].resize(c.layouts[i + 1].size());
        auto out = view_of<T, B>(c.act[i].data(), c.layouts[i + 1], c.keep);
        layers_[i].forward(p.sub(off, n), in, out, c.ctx[i]);
        in = out;
      }
      off += n;
    }
  }

  template <class B>
  void backward(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dy,
                TokensView<T, B> dx, ParamsView<T, B> g) const {
    const std::size_t L_ = layers_.size();
    std::size_t off = param_count();
    TokensView<const T, B> d = dy;
    int slot = 0;
    for (std::size_t i = L_; i-- > 0;) {
      const std::size_t n = layers_[i].param_count();
      off -= n;
      if (i == 0) {
        layers_[i].backward(p.sub(off, n), c.ctx[i], d, dx, g.sub(off, n));
      } else {
        c.grad[slot].resize(c.layouts[i].size());
        auto dxi = view_of<T, B>(c.grad[slot].data(), c.layouts[i], c.keep);
        layers_[i].backward(p.sub(off, n), c.ctx[i], d, dxi, g.sub(off, n));
        d = dxi;
        slot = 1 - slot;
      }
    }
  }

 private:
  std::vector<L> layers_;
  std::string name_ = "blocks";
  std::size_t first_ = 0;
};

}  // namespace seqswap::model
