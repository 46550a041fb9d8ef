// ClsPosEmbed: prepends the learnable CLS token (token 0) and adds learnable position
// embeddings: y_b = [cls; x_b] + pos. Names and shapes as timm: cls_token [1,1,D],
// pos_embed [1, 1+P, D].
#pragma once
#include <string>

#include "seqswap/core/concepts.hpp"
#include "seqswap/ops/device.hpp"

namespace seqswap::layers {

struct ClsPosEmbedOptions {
  index_t num_patches = 0;
  index_t dim = 0;
};

template <class T = float>
class ClsPosEmbed {
 public:
  using scalar_type = T;
  using Input = kind::Tokens;
  using Output = kind::Tokens;
  template <class B>
  struct Ctx {
    index_t batch = 0;
  };

  ClsPosEmbed() = default;
  explicit ClsPosEmbed(ClsPosEmbedOptions o) : o_(o) {}

  std::size_t param_count() const {
    return static_cast<std::size_t>(o_.dim + (o_.num_patches + 1) * o_.dim);
  }
  double flops(const Layout&) const { return 0.0; }  // additions: not counted
  void plan(const Layout& in, Layout& out) const {
    check(in.dim == o_.dim, "ClsPosEmbed: expected width ", o_.dim, ", found ", in.dim);
    for (index_t b = 0; b < in.batch; ++b)
      check(in.length(b) == o_.num_patches, "ClsPosEmbed: expected ", o_.num_patches,
            " patch tokens per image, found ", in.length(b), " in image ", b);
    out = Layout::dense(in.batch, o_.num_patches + 1, o_.dim);
  }
  template <class F>
  void visit_params(F&& f, const std::string& prefix, std::size_t offset) const {
    const auto D = static_cast<std::size_t>(o_.dim);
    f(ParamInfo{join_name(prefix, "cls_token"), {1, 1, o_.dim}, offset, D, false,
                Init::trunc_normal, 0.02});
    f(ParamInfo{join_name(prefix, "pos_embed"), {1, o_.num_patches + 1, o_.dim}, offset + D,
                static_cast<std::size_t>((o_.num_patches + 1) * o_.dim), false, Init::trunc_normal,
                0.02});
  }

  // x (B*P, D) -> y (B*(P+1), D)
  template <class B>
  void forward(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> y,
               Ctx<B>& c) const {
    const index_t D = o_.dim, P = o_.num_patches;
    const T* cls = p.data;
    const T* pos = p.data + D;
    c.batch = x.batch;
    if constexpr (backend::is_cuda<B>) {
      ops::device::cls_pos_forward(x.data, x.batch, P, D, cls, pos, y.data);
    } else {
#pragma omp parallel for schedule(static) if (x.batch > 8)
      for (index_t b = 0; b < x.batch; ++b) {
        T* yb = y.data + b * (P + 1) * D;
        const T* xb = x.data + b * P * D;
        for (index_t j = 0; j < D; ++j) yb[j] = cls[j] + pos[j];
        for (index_t t = 0; t < P * D; ++t) yb[D + t] = xb[t] + pos[D + t];
      }
    }
  }

  template <class B>
  void backward(ParamsView<const T, B>, Ctx<B>& c, TokensView<const T, B> dy,
                TokensView<T, B> dx, ParamsView<T, B> g) const {
    const index_t D = o_.dim, P = o_.num_patches;
    T* dcls = g.data;
    T* dpos = g.data + D;
    if constexpr (backend::is_cuda<B>) {
      ops::device::cls_pos_backward(dy.data, c.batch, P, D, dcls, dpos, dx.data);
    } else {
      for (index_t b = 0; b < c.batch; ++b) {
        const T* dyb = dy.data + b * (P + 1) * D;
        for (index_t j = 0; j < D; ++j) dcls[j] += dyb[j];
        for (index_t t = 0; t < (P + 1) * D; ++t) dpos[t] += dyb[t];
        if (dx.data) {
          T* dxb = dx.data + b * P * D;
          for (index_t t = 0; t < P * D; ++t) dxb[t] = dyb[D + t];
        }
      }
    }
  }

 private:
  ClsPosEmbedOptions o_;
};

static_assert(Layer<ClsPosEmbed<float>, backend::Host>);

}  // namespace seqswap::layers
