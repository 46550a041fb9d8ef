// Slot<Ms...>: a runtime choice among compiled mixers (std::variant), itself a Mixer.
// Experiments re-seat one layer's slot at run time; the model then re-lays out its arena
// (model/model.hpp), moving every other parameter by name.
#pragma once
#include <string>
#include <variant>

#include "seqswap/core/concepts.hpp"

namespace seqswap::model {

template <class... Ms>
class Slot {
  static_assert(sizeof...(Ms) >= 1, "Slot: needs at least one mixer type");
  static_assert((is_mixer_v<Ms> && ...),
                "Slot: every alternative must satisfy seqswap::Mixer (a Layer from tokens to tokens "
                "with pre_projection, backward_pre and kind_name; see docs/architecture.md)");

 public:
  using scalar_type = typename std::tuple_element_t<0, std::tuple<Ms...>>::scalar_type;
  using T = scalar_type;
  using Input = kind::Tokens;
  using Output = kind::Tokens;
  template <class B>
  struct Ctx {
    std::variant<typename Ms::template Ctx<B>...> v;
    TokensView<const T, B> pre_projection() const {
      return std::visit([](const auto& c) { return c.pre_projection(); }, v);
    }
  };

  Slot() = default;
  template <class M>
    requires(std::is_same_v<std::decay_t<M>, Ms> || ...)
  Slot(M m) : v_(std::move(m)) {}  // NOLINT: a mixer converts to a slot holding it

  // Re-seats the slot with another mixer (the model must re-lay out its arena afterwards).
  template <class M, class... Args>
  M& emplace(Args&&... args) {
    return v_.template emplace<M>(std::forward<Args>(args)...);
  }
  template <class M>
  bool holds() const { return std::holds_alternative<M>(v_); }
  template <class M>
  M& as() { return std::get<M>(v_); }
  template <class M>
  const M& as() const { return std::get<M>(v_); }
  std::size_t index() const { return v_.index(); }
  template <class F>
  decltype(auto) visit(F&& f) const { return std::visit(std::forward<F>(f), v_); }

  std::size_t param_count() const {
    return std::visit([](const auto& m) { return m.param_count(); }, v_);
  }
  void plan(const Layout& in, Layout& out) const {
    std::visit([&](const auto& m) { m.plan(in, out); }, v_);
  }
  double flops(const Layout& in) const {
    return std::visit([&](const auto& m) { return double(m.flops(in)); }, v_);
  }
  template <class F>
  void visit_params(F&& f, const std::string& prefix, std::size_t offset) const {
    std::visit([&](const auto& m) { m.visit_params(f, prefix, offset); }, v_);
  }

  // forward, backward and backward_pre are defined below the class, not inline: a program may
  // then compile them once for a given Slot (an explicit instantiation in one file, `extern
  // template` declarations elsewhere; examples/zoo_instances.hpp does so for the drivers).
  template <class B>
  void forward(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> y, Ctx<B>& c) const;
  template <class B>
  void backward(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dy, TokensView<T, B> dx,
                ParamsView<T, B> g) const;
  // Backward from a gradient w.r.t. the pre-projection output (stage-1 distillation).
  template <class B>
  void backward_pre(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dpre, TokensView<T, B> dx,
                    ParamsView<T, B> g) const;
  // The held mixer's driver name (softmax_attention, min_gru, ...).
  std::string kind_name() const {
    return std::visit([](const auto& m) { return std::string(m.kind_name()); }, v_);
  }

 private:
  // A backward needs the context of the mixer the slot holds now.
  template <class B>
  void check_seated(const Ctx<B>& c, const char* what) const {
    check(c.v.index() == v_.index(), "Slot: ", what, " after the slot was re-seated; run forward again (context "
          "holds mixer ", c.v.index(), ", slot holds ", v_.index(), ")");
  }
  // Calls f(mixer, its context), switching the context's alternative to match the mixer.
  template <std::size_t I, class B, class F>
  void dispatch(Ctx<B>& c, F&& f) const {
    if constexpr (I < sizeof...(Ms)) {
      if (v_.index() == I) {
        if (c.v.index() != I) c.v.template emplace<I>();
        f(std::get<I>(v_), std::get<I>(c.v));
      } else {
        dispatch<I + 1>(c, std::forward<F>(f));
      }
    }
  }

  std::variant<Ms...> v_;
};

template <class... Ms>
template <class B>
void Slot<Ms...>::forward(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> y, Ctx<B>& c) const {
  dispatch<0>(c, [&](const auto& m, auto& mc) { m.forward(p, x, y, mc); });
}
template <class... Ms>
template <class B>
void Slot<Ms...>::backward(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dy, TokensView<T, B> dx,
                           ParamsView<T, B> g) const {
  check_seated(c, "backward");
  dispatch<0>(c, [&](const auto& m, auto& mc) { m.backward(p, mc, dy, dx, g); });
}
template <class... Ms>
template <class B>
void Slot<Ms...>::backward_pre(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dpre, TokensView<T, B> dx,
                               ParamsView<T, B> g) const {
  check_seated(c, "backward_pre");
  dispatch<0>(c, [&](const auto& m, auto& mc) { m.backward_pre(p, mc, dpre, dx, g); });
}

}  // namespace seqswap::model
