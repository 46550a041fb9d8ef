// LayerNorm over the width of each token row (eps 1e-6 as in timm's ViT).
#pragma once
#include <string>

#include "seqswap/core/buffer.hpp"
#include "seqswap/core/concepts.hpp"
#include "seqswap/ops/device.hpp"
#include "seqswap/ops/layer_norm.hpp"

namespace seqswap::layers {

struct LayerNormOptions {
  index_t dim = 0;
  double eps = 1e-6;
  std::string name;  // e.g. "norm1"
};

template <class T = float>
class LayerNorm {
 public:
  using scalar_type = T;
  using Input = kind::Tokens;
  using Output = kind::Tokens;
  template <class B>
  struct Ctx {
    const T* x = nullptr;  // (rows, D)
    index_t rows = 0;
    Buffer<T, B> mean, rstd;  // (rows)
  };

  LayerNorm() = default;
  explicit LayerNorm(LayerNormOptions o) : o_(std::move(o)) {
    check(o_.dim > 0, "LayerNorm '", o_.name, "': expected dim > 0, found ", o_.dim);
  }

  std::size_t param_count() const { return static_cast<std::size_t>(2 * o_.dim); }
  // (x − μ)·σ⁻¹·γ + β: two multiply-adds per value, i.e. 2 per parameter per token.
  double flops(const Layout& in) const { return 2.0 * double(param_count()) * double(in.total()); }
  void plan(const Layout& in, Layout& out) const {
    check(in.dim == o_.dim, "LayerNorm '", o_.name, "': expected width ", o_.dim, ", found ",
          in.dim);
    out = in;
  }
  template <class F>
  void visit_params(F&& f, const std::string& prefix, std::size_t offset) const {
    const std::string base = join_name(prefix, o_.name);
    const auto D = static_cast<std::size_t>(o_.dim);
    f(ParamInfo{join_name(base, "weight"), {o_.dim}, offset, D, false, Init::ones, 0.0});
    f(ParamInfo{join_name(base, "bias"), {o_.dim}, offset + D, D, false, Init::zeros, 0.0});
  }

  // x (rows, D) -> y (rows, D)
  template <class B>
  void forward(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> y,
               Ctx<B>& c) const {
    c.x = x.data;
    c.rows = x.total();
    c.mean.resize(static_cast<std::size_t>(c.rows));
    c.rstd.resize(static_cast<std::size_t>(c.rows));
    if constexpr (backend::is_cuda<B>)
      ops::device::layer_norm_forward(x.data, c.rows, o_.dim, p.data, p.data + o_.dim, T(o_.eps), y.data,
                                      c.mean.data(), c.rstd.data());
    else
      ops::layer_norm_forward(x.data, c.rows, o_.dim, p.data, p.data + o_.dim, T(o_.eps), y.data,
                              c.mean.data(), c.rstd.data());
  }

  template <class B>
  void backward(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dy,
                TokensView<T, B> dx, ParamsView<T, B> g) const {
    if constexpr (backend::is_cuda<B>)
      ops::device::layer_norm_backward(c.x, c.rows, o_.dim, p.data, c.mean.data(), c.rstd.data(), dy.data,
                                       dx.data, g.data, g.data + o_.dim);
    else
      ops::layer_norm_backward(c.x, c.rows, o_.dim, p.data, c.mean.data(), c.rstd.data(), dy.data,
                               dx.data, g.data, g.data + o_.dim);
  }

 private:
  LayerNormOptions o_;
};

static_assert(Layer<LayerNorm<float>, backend::Host>);

}  // namespace seqswap::layers
