// Chain<Rs...>: a ViT body whose blocks differ in type, fixed at compile time: consecutive
// groups, each a Repeat of one block type (e.g. attention blocks 0-3, minGRU blocks 4-5, a
// selective SSM in 6-7). It runs as Sequential<Rs...>; what it adds is the view of one flat
// stack of blocks: size(), the parameter offset of block i, and visit_layer(i, f) calling a
// generic function with block i at its own type. Groups number their blocks on from the
// previous group (Repeat's `first`), so parameter names match a Repeat of the same depth.
#pragma once
#include <array>
#include <tuple>
#include <utility>

#include "seqswap/model/repeat.hpp"
#include "seqswap/model/sequential.hpp"

namespace seqswap::model {

template <class... Rs>
class Chain : public Sequential<Rs...> {
  using Base = Sequential<Rs...>;
  static constexpr std::size_t n = sizeof...(Rs);

 public:
  using Base::Base;

  std::size_t size() const { return sizes()[n]; }
  std::size_t param_offset(std::size_t i) const {
    std::size_t off = 0;
    visit_layer_impl<0>(i, [&](const auto&, std::size_t o) { off = o; });
    return off;
  }
  double flops(const Layout& in) const {
    return std::apply([&](const auto&... r) { return (0.0 + ... + r.flops(in)); }, this->layers());
  }
  // Calls f(block i, its parameter offset within the chain) with block i's type.
  template <class F>
  void visit_layer(std::size_t i, F&& f) const {
    visit_layer_impl<0>(i, f);
  }
  // Calls f(block i, its context within c, a context of this chain) with block i's type.
  template <class C, class F>
  void visit_layer_context(C& c, std::size_t i, F&& f) const {
    visit_context_impl<0>(c, i, f);
  }

 private:
  // sizes()[g] = index of group g's first block; sizes()[n] = total.
  std::array<std::size_t, n + 1> sizes() const {
    std::array<std::size_t, n + 1> s{};
    std::size_t g = 0;
    std::apply([&](const auto&... r) { ((s[g + 1] = s[g] + r.size(), ++g), ...); }, this->layers());
    return s;
  }
  template <std::size_t G, class C, class F>
  void visit_context_impl(C& c, std::size_t i, F& f) const {
    if constexpr (G < n) {
      const auto s = sizes();
      if (i < s[G + 1]) {
        const std::size_t k = i - s[G];
        f(this->template get<G>()[k], std::get<G>(c.ctx).ctx.at(k));
      } else {
        visit_context_impl<G + 1>(c, i, f);
      }
    } else {
      fail("Chain: block ", i, " does not exist (", size(), " blocks)");
    }
  }
  template <std::size_t G, class F>
  void visit_layer_impl(std::size_t i, F& f) const {
    if constexpr (G < n) {
      const auto s = sizes();
      const auto& group = this->template get<G>();
      if (i < s[G + 1]) {
        const std::size_t k = i - s[G];
        f(group[k], Base::template param_offset<G>() + group.param_offset(k));
      } else {
        visit_layer_impl<G + 1>(i, f);
      }
    } else {
      fail("Chain: block ", i, " does not exist (", size(), " blocks)");
    }
  }
};

}  // namespace seqswap::model
