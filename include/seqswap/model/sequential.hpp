// Sequential<Ls...>: a flat pipeline over a tuple. Forward folds left, backward folds right.
// Each layer's Output kind must be the next one's Input kind (checked at compile time).
#pragma once
#include <array>
#include <tuple>
#include <type_traits>
#include <utility>

#include "seqswap/core/buffer.hpp"
#include "seqswap/core/concepts.hpp"

namespace seqswap::model {

namespace detail {
template <class... Ls>
constexpr bool kinds_chain() {
  if constexpr (sizeof...(Ls) < 2) {
    return true;
  } else {
    using Tup = std::tuple<Ls...>;
    return []<std::size_t... I>(std::index_sequence<I...>) {
      return (std::is_same_v<typename std::tuple_element_t<I, Tup>::Output,
                             typename std::tuple_element_t<I + 1, Tup>::Input> &&
              ...);
    }(std::make_index_sequence<sizeof...(Ls) - 1>{});
  }
}
}  // namespace detail

template <class... Ls>
class Sequential {
  static_assert(sizeof...(Ls) >= 1, "Sequential: needs at least one layer");
  static_assert((is_layer_v<Ls> && ...),
                "Sequential: every element must satisfy seqswap::Layer (scalar_type, Input, Output, "
                "Ctx<B>, param_count, plan, forward, backward, flops; see docs/architecture.md)");
  static_assert(detail::kinds_chain<Ls...>(),
                "Sequential: a layer's Output kind differs from the next layer's Input kind "
                "(e.g. Images -> Tokens -> Logits); reorder or add the missing layer");
  using Tup = std::tuple<Ls...>;
  static constexpr std::size_t n = sizeof...(Ls);

 public:
  using scalar_type = typename std::tuple_element_t<0, Tup>::scalar_type;
  using T = scalar_type;
  static_assert((std::is_same_v<typename Ls::scalar_type, T> && ...),
                "Sequential: every layer must use the same scalar type");
  using Input = typename std::tuple_element_t<0, Tup>::Input;
  using Output = typename std::tuple_element_t<n - 1, Tup>::Output;

  template <class B>
  struct Ctx {
    std::tuple<typename Ls::template Ctx<B>...> ctx;
    std::array<Layout, n + 1> layouts;            // layouts[0] input, layouts[n] output
    std::array<Buffer<T, B>, n - 1 + (n == 1)> act;  // intermediate outputs
    std::array<const std::uint8_t*, n + 1> keep{};
    Buffer<T, B> grad[2];                            // backward ping-pong
  };

  Sequential() = default;
  explicit Sequential(Ls... layers) : layers_(std::move(layers)...) {}

  const Tup& layers() const { return layers_; }
  template <std::size_t I>
  auto& get() { return std::get<I>(layers_); }
  template <std::size_t I>
  const auto& get() const { return std::get<I>(layers_); }

  std::size_t param_count() const {
    return std::apply([](const auto&... l) { return (std::size_t{0} + ... + l.param_count()); },
                      layers_);
  }
  template <std::size_t I>
  std::size_t param_offset() const {
    return [&]<std::size_t... J>(std::index_sequence<J...>) {
      return (std::size_t{0} + ... + std::get<J>(layers_).param_count());
    }(std::make_index_sequence<I>{});
  }

  void plan(const Layout& in, Layout& out) const {
    Layout cur = in, next;
    std::apply([&](const auto&... l) { ((l.plan(cur, next), cur = next), ...); }, layers_);
    out = cur;
  }
  // Forward FLOPs: each layer's at the layout it receives.
  double flops(const Layout& in) const {
    Layout cur = in, next;
    double f = 0;
    std::apply([&](const auto&... l) { ((f += l.flops(cur), l.plan(cur, next), cur = next), ...); }, layers_);
    return f;
  }
  template <class F>
  void visit_params(F&& f, const std::string& prefix, std::size_t offset) const {
    std::size_t off = offset;
    std::apply([&](const auto&... l) { ((l.visit_params(f, prefix, off), off += l.param_count()), ...); },
               layers_);
  }

  template <class B>
  void forward(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> y,
               Ctx<B>& c) const {
    c.layouts[0] = Layout{x.batch, x.dim, {x.offsets, x.offsets + x.batch + 1}};
    c.keep[0] = x.keep;
    forward_from<0>(p, x, y, c);
  }

  template <class B>
  void backward(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dy,
                TokensView<T, B> dx, ParamsView<T, B> g) const {
    backward_from<n - 1>(p, c, dy, dx, g, 0);
  }

 private:
  template <std::size_t I, class B>
  void forward_from(ParamsView<const T, B> p, TokensView<const T, B> in, TokensView<T, B> y,
                    Ctx<B>& c) const {
    const auto& l = std::get<I>(layers_);
    l.plan(c.layouts[I], c.layouts[I + 1]);
    // The keep-mask travels along while the token layout is unchanged.
    c.keep[I + 1] = c.layouts[I + 1].same_tokens(c.layouts[I]) ? c.keep[I] : nullptr;
    auto pl = p.sub(param_offset<I>(), l.param_count());
    if constexpr (I + 1 == n) {
      l.forward(pl, in, y, std::get<I>(c.ctx));
    } else {
      c.act[I].resize(c.layouts[I + 1].size());
      auto out = view_of<T, B>(c.act[I].data(), c.layouts[I + 1], c.keep[I + 1]);
      l.forward(pl, in, out, std::get<I>(c.ctx));
      forward_from<I + 1>(p, TokensView<const T, B>(out), y, c);
    }
  }

  template <std::size_t I, class B>
  void backward_from(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dy,
                     TokensView<T, B> dx, ParamsView<T, B> g, int slot) const {
    const auto& l = std::get<I>(layers_);
    const std::size_t off = param_offset<I>();
    auto pl = p.sub(off, l.param_count());
    auto gl = g.sub(off, l.param_count());
    if constexpr (I == 0) {
      l.backward(pl, std::get<I>(c.ctx), dy, dx, gl);
    } else {
      auto& buf = c.grad[slot];
      buf.resize(c.layouts[I].size());
      auto dxi = view_of<T, B>(buf.data(), c.layouts[I], c.keep[I]);
      l.backward(pl, std::get<I>(c.ctx), dy, dxi, gl);
      backward_from<I - 1>(p, c, TokensView<const T, B>(dxi), dx, g, 1 - slot);
    }
  }

  Tup layers_;
};

}  // namespace seqswap::model
