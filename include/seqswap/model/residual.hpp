// Residual<L>: y = x + keep ∘ f(x). Masked tokens pass through unchanged.
#pragma once
#include "seqswap/core/buffer.hpp"
#include "seqswap/core/concepts.hpp"
#include "seqswap/ops/device.hpp"

namespace seqswap::model {

template <class L>
class Residual {
  static_assert(is_layer_v<L>,
                "Residual<L>: L must satisfy seqswap::Layer (see docs/architecture.md, the layer contract)");

 public:
  using scalar_type = typename L::scalar_type;
  using T = scalar_type;
  using Input = kind::Tokens;
  using Output = kind::Tokens;
  static_assert(std::is_same_v<typename L::Input, kind::Tokens> &&
                    std::is_same_v<typename L::Output, kind::Tokens>,
                "Residual: the inner layer must map tokens to tokens");
  template <class B>
  struct Ctx {
    typename L::template Ctx<B> inner;
    Buffer<T, B> f;      // (rows, D) f(x)
    Buffer<T, B> scratch;  // backward: masked dy or dx when the caller wants none
    const std::uint8_t* keep = nullptr;
    index_t rows = 0, dim = 0;
  };

  Residual() = default;
  explicit Residual(L inner) : inner_(std::move(inner)) {}
  L& inner() { return inner_; }
  const L& inner() const { return inner_; }

  std::size_t param_count() const { return inner_.param_count(); }
  void plan(const Layout& in, Layout& out) const {
    Layout o;
    inner_.plan(in, o);
    check(o.dim == in.dim && o.same_tokens(in), "Residual: expected the inner layer to keep the "
          "token layout and width ", in.dim, ", found width ", o.dim);
    out = in;
  }
  double flops(const Layout& in) const { return inner_.flops(in); }  // the add is not counted
  template <class F>
  void visit_params(F&& f, const std::string& prefix, std::size_t offset) const {
    inner_.visit_params(f, prefix, offset);
  }

  template <class B>
  void forward(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> y,
               Ctx<B>& c) const {
    c.rows = x.total();
    c.dim = x.dim;
    c.keep = x.keep;
    const auto size = static_cast<std::size_t>(c.rows * c.dim);
    c.f.resize(size);
    TokensView<T, B> fx{c.f.data(), x.offsets, x.batch, x.dim, x.keep};
    inner_.forward(p, x, fx, c.inner);
    const T* xs = x.data;
    const T* fs = c.f.data();
    T* ys = y.data;
    if constexpr (backend::is_cuda<B>) {
      ops::device::residual_add(xs, fs, x.keep, c.rows, c.dim, ys);
    } else if (!x.keep) {
#pragma omp parallel for schedule(static) if (size > 65536)
      for (std::size_t i = 0; i < size; ++i) ys[i] = xs[i] + fs[i];
    } else {
      for (index_t t = 0; t < c.rows; ++t)
        for (index_t j = 0; j < c.dim; ++j)
          ys[t * c.dim + j] = xs[t * c.dim + j] + (x.keep[t] ? fs[t * c.dim + j] : T(0));
    }
  }

  // dx = dy + J_fᵀ (keep ∘ dy)
  template <class B>
  void backward(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dy,
                TokensView<T, B> dx, ParamsView<T, B> g) const {
    const auto size = static_cast<std::size_t>(c.rows * c.dim);
    TokensView<const T, B> dy_inner = dy;
    if (c.keep) {
      c.scratch.resize(size);
      if constexpr (backend::is_cuda<B>) {
        ops::device::copy_kept_rows(dy.data, c.scratch.data(), c.rows, c.dim, c.keep);
      } else {
        std::copy(dy.data, dy.data + size, c.scratch.data());
        for (index_t t = 0; t < c.rows; ++t)
          if (!c.keep[t]) std::fill(c.scratch.data() + t * c.dim, c.scratch.data() + (t + 1) * c.dim, T(0));
      }
      dy_inner.data = c.scratch.data();
    }
    if (!dx.data) {  // the inner layer still needs somewhere to write (parameter gradients)
      Buffer<T, B> tmp(size);
      TokensView<T, B> d{tmp.data(), dy.offsets, dy.batch, dy.dim, dy.keep};
      inner_.backward(p, c.inner, dy_inner, d, g);
      return;
    }
    inner_.backward(p, c.inner, dy_inner, dx, g);
    const T* dys = dy.data;
    T* dxs = dx.data;
    if constexpr (backend::is_cuda<B>) {
      ops::device::add_into(dxs, dys, index_t(size));
    } else {
#pragma omp parallel for schedule(static) if (size > 65536)
      for (std::size_t i = 0; i < size; ++i) dxs[i] += dys[i];
    }
  }

 private:
  L inner_;
};

}  // namespace seqswap::model
