// PatchEmbed: images -> patch tokens. The stride-p convolution of timm's ViT written as
// unfold + GEMM; weight [D, C, p, p] as in timm, tokens in raster order over the patch grid.
#pragma once
#include <string>

#include "seqswap/core/buffer.hpp"
#include "seqswap/layers/linear.hpp"

namespace seqswap::layers {

struct PatchEmbedOptions {
  index_t image_size = 28;
  index_t channels = 1;
  index_t patch = 4;
  index_t dim = 64;
  std::string name = "patch_embed";
};

template <class T = float>
class PatchEmbed {
 public:
  using scalar_type = T;
  using Input = kind::Images;
  using Output = kind::Tokens;
  template <class B>
  struct Ctx {
    Buffer<T, B> cols;  // (B*P, C*p*p) unfolded patches
    Buffer<T, B> dcols; // (B*P, C*p*p) backward scratch
    Layout cols_layout;
    typename Linear<T>::template Ctx<B> proj;
    index_t batch = 0;
  };

  PatchEmbed() = default;
  explicit PatchEmbed(PatchEmbedOptions o) : o_(std::move(o)) {
    check(o_.patch > 0 && o_.image_size % o_.patch == 0, "PatchEmbed: expected image size ",
          o_.image_size, " to be a multiple of the patch size, found patch ", o_.patch);
    proj_ = Linear<T>({.in = o_.channels * o_.patch * o_.patch, .out = o_.dim, .bias = true,
                       .name = "proj"});
  }
  index_t grid() const { return o_.image_size / o_.patch; }
  index_t num_patches() const { return grid() * grid(); }
  index_t image_numel() const { return o_.channels * o_.image_size * o_.image_size; }
  const PatchEmbedOptions& options() const { return o_; }

  std::size_t param_count() const { return proj_.param_count(); }
  // The patch projection over every patch of every image.
  double flops(const Layout& in) const { return proj_.flops(Layout::dense(in.batch, num_patches(), 1)); }
  void plan(const Layout& in, Layout& out) const {
    check(in.dim == image_numel(), "PatchEmbed: expected images of ", o_.channels, "x",
          o_.image_size, "x", o_.image_size, " = ", image_numel(), " values, found ", in.dim);
    for (index_t b = 0; b < in.batch; ++b)
      check(in.length(b) == 1, "PatchEmbed: expected one row per image, found ", in.length(b),
            " rows for image ", b);
    out = Layout::dense(in.batch, num_patches(), o_.dim);
  }
  template <class F>
  void visit_params(F&& f, const std::string& prefix, std::size_t offset) const {
    // Reported with the convolution's 4-D shape so checkpoints match timm.
    const std::string base = join_name(prefix, o_.name);
    const index_t K = o_.channels * o_.patch * o_.patch;
    f(ParamInfo{join_name(base, "proj.weight"), {o_.dim, o_.channels, o_.patch, o_.patch}, offset,
                static_cast<std::size_t>(o_.dim * K), true, Init::trunc_normal, 0.02});
    f(ParamInfo{join_name(base, "proj.bias"), {o_.dim}, offset + static_cast<std::size_t>(o_.dim * K),
                static_cast<std::size_t>(o_.dim), false, Init::zeros, 0.0});
  }

  // x (B, C*H*W) -> y (B*P, D)
  template <class B>
  void forward(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> y,
               Ctx<B>& c) const {
    const index_t K = o_.channels * o_.patch * o_.patch, P = num_patches();
    c.batch = x.batch;
    c.cols.resize(static_cast<std::size_t>(x.batch * P * K));
    if constexpr (backend::is_cuda<B>)
      ops::device::patch_unfold(x.data, x.batch, o_.channels, o_.image_size, o_.patch, c.cols.data());
    else
      unfold(x.data, x.batch, c.cols.data());
    c.cols_layout = Layout::dense(x.batch, P, K);
    proj_.forward(p, TokensView<const T, B>(view_of<T, B>(c.cols.data(), c.cols_layout)), y,
                  c.proj);
  }

  template <class B>
  void backward(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dy,
                TokensView<T, B> dx, ParamsView<T, B> g) const {
    const index_t K = o_.channels * o_.patch * o_.patch, P = num_patches();
    TokensView<T, B> dcols{};
    if (dx.data) {
      c.dcols.resize(static_cast<std::size_t>(c.batch * P * K));
      dcols = view_of<T, B>(c.dcols.data(), c.cols_layout);
    }
    proj_.backward(p, c.proj, dy, dcols, g);
    if (!dx.data) return;
    if constexpr (backend::is_cuda<B>)
      ops::device::patch_fold(c.dcols.data(), c.batch, o_.channels, o_.image_size, o_.patch, dx.data);
    else
      fold(c.dcols.data(), c.batch, dx.data);
  }

 private:
  // images (B, C, H, W) -> cols (B, P, C*p*p) with (c, ky, kx) inner order (timm's conv weight)
  void unfold(const T* img, index_t batch, T* cols) const {
    const index_t C = o_.channels, S = o_.image_size, p = o_.patch, G = grid();
    const index_t K = C * p * p;
#pragma omp parallel for schedule(static) if (batch > 8)
    for (index_t b = 0; b < batch; ++b)
      for (index_t gy = 0; gy < G; ++gy)
        for (index_t gx = 0; gx < G; ++gx) {
          T* row = cols + ((b * G + gy) * G + gx) * K;
          for (index_t ch = 0; ch < C; ++ch)
            for (index_t ky = 0; ky < p; ++ky)
              for (index_t kx = 0; kx < p; ++kx)
                row[(ch * p + ky) * p + kx] =
                    img[((b * C + ch) * S + gy * p + ky) * S + gx * p + kx];
        }
  }
  // The adjoint of unfold (patches do not overlap, so it is a scatter): dimg ASSIGNED.
  void fold(const T* cols, index_t batch, T* img) const {
    const index_t C = o_.channels, S = o_.image_size, p = o_.patch, G = grid();
    const index_t K = C * p * p;
    for (index_t b = 0; b < batch; ++b)
      for (index_t gy = 0; gy < G; ++gy)
        for (index_t gx = 0; gx < G; ++gx) {
          const T* row = cols + ((b * G + gy) * G + gx) * K;
          for (index_t ch = 0; ch < C; ++ch)
            for (index_t ky = 0; ky < p; ++ky)
              for (index_t kx = 0; kx < p; ++kx)
                img[((b * C + ch) * S + gy * p + ky) * S + gx * p + kx] =
                    row[(ch * p + ky) * p + kx];
        }
  }

  PatchEmbedOptions o_;
  Linear<T> proj_;
};

static_assert(Layer<PatchEmbed<float>, backend::Host>);

}  // namespace seqswap::layers
