// Mlp: fc2(GELU(fc1(x))), timm's ViT MLP (hidden = mlp_ratio * D).
#pragma once
#include <string>

#include "seqswap/core/buffer.hpp"
#include "seqswap/layers/gelu.hpp"
#include "seqswap/layers/linear.hpp"

namespace seqswap::layers {

struct MlpOptions {
  index_t dim = 0;
  index_t hidden = 0;
  std::string name = "mlp";
};

template <class T = float>
class Mlp {
 public:
  using scalar_type = T;
  using Input = kind::Tokens;
  using Output = kind::Tokens;
  template <class B>
  struct Ctx {
    typename Linear<T>::template Ctx<B> fc1, fc2;
    typename Gelu<T>::template Ctx<B> act;
    Layout hidden_layout;
    Buffer<T, B> h;  // (rows, hidden) fc1 output
    Buffer<T, B> a;  // (rows, hidden) GELU output
    Buffer<T, B> da; // (rows, hidden) backward scratch
  };

  Mlp() = default;
  explicit Mlp(MlpOptions o)
      : o_(std::move(o)),
        fc1_({.in = o_.dim, .out = o_.hidden, .bias = true, .name = "fc1"}),
        fc2_({.in = o_.hidden, .out = o_.dim, .bias = true, .name = "fc2"}) {}

  std::size_t param_count() const { return fc1_.param_count() + fc2_.param_count(); }
  double flops(const Layout& in) const { return fc1_.flops(in) + fc2_.flops(in); }  // GELU not counted
  void plan(const Layout& in, Layout& out) const {
    check(in.dim == o_.dim, "Mlp '", o_.name, "': expected width ", o_.dim, ", found ", in.dim);
    out = in;
  }
  template <class F>
  void visit_params(F&& f, const std::string& prefix, std::size_t offset) const {
    const std::string base = join_name(prefix, o_.name);
    fc1_.visit_params(f, base, offset);
    fc2_.visit_params(f, base, offset + fc1_.param_count());
  }

  // x (rows, D) -> y (rows, D)
  template <class B>
  void forward(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> y,
               Ctx<B>& c) const {
    const auto n = static_cast<std::size_t>(x.total() * o_.hidden);
    c.hidden_layout = Layout{x.batch, o_.hidden, {x.offsets, x.offsets + x.batch + 1}};
    c.h.resize(n);
    c.a.resize(n);
    TokensView<T, B> h{c.h.data(), x.offsets, x.batch, o_.hidden, x.keep};
    TokensView<T, B> a{c.a.data(), x.offsets, x.batch, o_.hidden, x.keep};
    fc1_.forward(p1(p), x, h, c.fc1);
    Gelu<T>{}.forward(ParamsView<const T, B>{}, TokensView<const T, B>(h), a, c.act);
    fc2_.forward(p2(p), TokensView<const T, B>(a), y, c.fc2);
  }

  template <class B>
  void backward(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dy,
                TokensView<T, B> dx, ParamsView<T, B> g) const {
    c.da.resize(c.h.size());
    TokensView<T, B> da{c.da.data(), dy.offsets, dy.batch, o_.hidden, dy.keep};
    fc2_.backward(p2(p), c.fc2, dy, da, g2(g));
    // GELU backward in place: dh = da * gelu'(h)
    Gelu<T>{}.backward(ParamsView<const T, B>{}, c.act, TokensView<const T, B>(da), da,
                       ParamsView<T, B>{});
    fc1_.backward(p1(p), c.fc1, TokensView<const T, B>(da), dx, g1(g));
  }

 private:
  template <class P>
  P p1(P p) const { return p.sub(0, fc1_.param_count()); }
  template <class P>
  P p2(P p) const { return p.sub(fc1_.param_count(), fc2_.param_count()); }
  template <class P>
  P g1(P g) const { return p1(g); }
  template <class P>
  P g2(P g) const { return p2(g); }

  MlpOptions o_;
  Linear<T> fc1_, fc2_;
};

static_assert(Layer<Mlp<float>, backend::Host>);

}  // namespace seqswap::layers
