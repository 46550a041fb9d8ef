// Pipelines (Residual, Sequential, Repeat, Slot, the ViT) pass the conformance test; Slot
// re-seating re-lays out the arena by name; a tiny ViT overfits a small batch.
#include <algorithm>
#include <cmath>

#include "conformance.hpp"
#include "seqswap/analysis/cost.hpp"
#include "seqswap/mixers/conv.hpp"
#include "seqswap/mixers/min_gru.hpp"
#include "seqswap/model/chain.hpp"
#include "seqswap/model/model.hpp"
#include "seqswap/model/vit.hpp"
#include "seqswap/train/loop.hpp"

using namespace seqswap;
using conformance::check_layer;

namespace {
// The small typed ViTs below: 4x4 images, patch 2 (4 patches + CLS), width 4, 2 heads.
model::VitConfig typed_config(index_t depth) {
  return {.image_size = 4, .channels = 1, .patch = 2, .width = 4, .depth = depth, .heads = 2, .mlp_ratio = 1.0,
          .classes = 3};
}
// A minimal second mixer for Slot tests: y = keep ∘ (x Wᵀ), pre-projection = x Wᵀ.
template <class T>
class TokenwiseMixer {
 public:
  using scalar_type = T;
  using Input = kind::Tokens;
  using Output = kind::Tokens;
  template <class B>
  struct Ctx {
    typename layers::Linear<T>::template Ctx<B> fc;
    Buffer<T> pre;
    Layout layout;
    const std::uint8_t* keep = nullptr;
    TokensView<const T, B> pre_projection() const { return view_of<const T, B>(pre.data(), layout, keep); }
  };
  TokenwiseMixer() = default;
  explicit TokenwiseMixer(index_t dim) : fc_({.in = dim, .out = dim, .bias = false, .name = "w"}) {}
  std::size_t param_count() const { return fc_.param_count(); }
  double flops(const Layout& in) const { return fc_.flops(in); }
  void plan(const Layout& in, Layout& out) const { fc_.plan(in, out); }
  template <class F>
  void visit_params(F&& f, const std::string& prefix, std::size_t offset) const {
    fc_.visit_params(f, join_name(prefix, "tokenwise"), offset);
  }
  template <class B>
  void forward(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> y, Ctx<B>& c) const {
    c.layout = Layout{x.batch, x.dim, {x.offsets, x.offsets + x.batch + 1}};
    c.keep = x.keep;
    c.pre.resize(c.layout.size());
    fc_.forward(p, x, view_of<T, B>(c.pre.data(), c.layout), c.fc);
    for (index_t t = 0; t < x.total(); ++t)
      for (index_t j = 0; j < x.dim; ++j) y.data[t * x.dim + j] = x.kept(t) ? c.pre[t * x.dim + j] : T(0);
  }
  static constexpr const char* kind_name() { return "tokenwise"; }
  // pre = x Wᵀ, y = keep ∘ pre: the pre-projection gradient is the output gradient.
  template <class B>
  void backward_pre(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dpre, TokensView<T, B> dx,
                    ParamsView<T, B> g) const {
    backward(p, c, dpre, dx, g);
  }
  template <class B>
  void backward(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dy, TokensView<T, B> dx,
                ParamsView<T, B> g) const {
    std::vector<T> d(dy.data, dy.data + c.layout.size());
    for (index_t t = 0; t < c.layout.total(); ++t)
      if (c.keep && !c.keep[t]) std::fill(d.begin() + t * c.layout.dim, d.begin() + (t + 1) * c.layout.dim, T(0));
    fc_.backward(p, c.fc, view_of<const T, B>(d.data(), c.layout), dx, g);
  }

 private:
  layers::Linear<T> fc_;
};
static_assert(Mixer<TokenwiseMixer<double>, backend::Host>);

model::VitConfig tiny_config() {
  return {.image_size = 8, .channels = 2, .patch = 4, .width = 8, .depth = 2, .heads = 2,
          .mlp_ratio = 2.0, .classes = 3};
}
}  // namespace

TEST_CASE("Residual block parts conform, with masks and ragged batches", "[conformance][model]") {
  model::VitConfig c = tiny_config();
  auto block = model::make_block<double>(c);
  for (const auto& in : conformance::standard_layouts(c.width)) {
    check_layer(block, in);
    check_layer(block, in, {.keep = conformance::some_mask(in)});
  }
  model::Repeat<model::Block<double>> stack(
      {model::make_block<double>(c), model::make_block<double>(c)}, "blocks");
  check_layer(stack, Layout::ragged({5, 2}, c.width), {.keep = conformance::some_mask(Layout::ragged({5, 2}, c.width))});
}

TEST_CASE("The whole ViT conforms (images to logits)", "[conformance][model]") {
  model::VitConfig c = tiny_config();
  auto vit = model::make_vit<double>(c);
  check_layer(vit, Layout::dense(2, 1, c.channels * c.image_size * c.image_size), {.tol = 1e-5});
}

TEST_CASE("Slot re-seating keeps every other parameter and re-lays out the arena", "[model][slot]") {
  using Slot = model::Slot<attention::SoftmaxAttention<double>, TokenwiseMixer<double>>;
  model::VitConfig c = tiny_config();
  model::Model m(model::make_vit<double, Slot>(c));
  m.init(7);
  const std::size_t before = m.param_count();
  const double fc1 = m.param("blocks.1.mlp.fc1.weight")[3];
  const double qkv0 = m.param("blocks.0.attn.qkv.weight")[5];
  const double head = m.param("head.weight")[1];

  auto& slot = m.net().mixer(1);
  REQUIRE(slot.holds<attention::SoftmaxAttention<double>>());
  slot.emplace<TokenwiseMixer<double>>(c.width);
  m.relayout(11);
  const std::size_t attn = 3 * 8 * 8 + 3 * 8 + 8 * 8 + 8, mixer = 8 * 8;
  REQUIRE(m.param_count() == before - attn + mixer);
  REQUIRE(m.param("blocks.1.mlp.fc1.weight")[3] == fc1);
  REQUIRE(m.param("blocks.0.attn.qkv.weight")[5] == qkv0);
  REQUIRE(m.param("head.weight")[1] == head);
  REQUIRE_THROWS_WITH(m.param("blocks.1.attn.qkv.weight"), Catch::Contains("no parameter named"));
  REQUIRE_NOTHROW(m.param("blocks.1.tokenwise.w.weight"));
  // The re-seated model still runs and conforms.
  check_layer(m.net(), Layout::dense(2, 1, c.channels * c.image_size * c.image_size), {.tol = 1e-5});
}

TEST_CASE("A tiny ViT overfits 64 Fashion-MNIST images", "[model][train]") {
  const char* dir = io::default_fashion_mnist_dir;
  if (!std::filesystem::exists(std::filesystem::path(dir) / "t10k-images-idx3-ubyte.gz")) {
    WARN("Fashion-MNIST not installed (cmake/install-deps.sh): skipped");
    return;
  }
  const auto data = io::load_fashion_mnist(io::Split::test).head(64);
  model::VitConfig c{.image_size = 28, .channels = 1, .patch = 7, .width = 32, .depth = 2,
                     .heads = 2, .mlp_ratio = 2.0, .classes = 10};
  model::Model m(model::make_vit<float>(c));
  m.init(0);
  train::AdamW<float> opt({.lr = 3e-3, .weight_decay = 0.0}, m.params_info(), m.param_count());
  io::BatchLoader loader(data, 64, false, 0);
  std::vector<float> images, dl;
  std::vector<std::int32_t> labels;
  loader.next(images, labels);
  train::StepResult r;
  for (int step = 0; step < 200; ++step)
    r = train::train_step(m, opt, images.data(), labels.data(), 64, 784, 3e-3,
                          {.label_smoothing = 0.0, .clip_norm = 1.0}, dl);
  const auto e = train::evaluate(m, data);
  INFO("final train loss " << r.loss << ", accuracy " << e.accuracy);
  REQUIRE(e.accuracy > 0.99);
}

// n one-channel 8 x 8 images of three classes, pixel k = (k * mult) mod 251: enough for a loop.
static io::ImageDataset synthetic_images(index_t n, index_t mult) {
  io::ImageDataset data;
  data.name = "synthetic";
  data.count = n;
  data.size = 8;
  data.classes = 3;
  for (index_t i = 0; i < n * 64; ++i) data.pixels.push_back(std::uint8_t((i * mult) % 251));
  for (index_t i = 0; i < n; ++i) data.labels.push_back(std::int32_t(i % 3));
  return data;
}

TEST_CASE("The training loop stops at the first non-finite loss or parameter", "[model][train]") {
  // Issue 19: --lr nan trained to a NaN checkpoint and exited 0.
  const io::ImageDataset data = synthetic_images(32, 37);
  model::VitConfig c{.image_size = 8, .channels = 1, .patch = 4, .width = 8, .depth = 2, .heads = 2,
                     .mlp_ratio = 2.0, .classes = 3};
  model::Model m(model::make_vit<float>(c));
  m.init(0);
  std::vector<float> dl;
  const auto step = [&](long, const float* x, const std::int32_t* y, index_t n) {
    return train::classify_step(m, x, y, n, 64, 0.0, dl).loss;
  };
  long saved_after = -1;  // what a driver would checkpoint: nothing from a bad step
  const train::LoopHooks hooks{.after_step = [&](long s) { saved_after = s; }};
  const train::LoopOptions bad_lr{.steps = 5, .batch = 16, .lr = std::nan(""), .label = "nan-lr", .quiet = true};
  REQUIRE_THROWS_WITH(train::run_loop(m, data, bad_lr, step, hooks),
                      Catch::Contains("nan-lr: step 1 of 5") && Catch::Contains("not finite") &&
                          Catch::Contains("weight"));
  REQUIRE(saved_after == -1);
  m.init(0);
  const auto nan_loss = [&](long s, const float* x, const std::int32_t* y, index_t n) {
    const double l = step(s, x, y, n);
    return s == 2 ? std::nan("") : l;
  };
  const train::LoopOptions ok{.steps = 5, .batch = 16, .lr = 1e-3, .label = "loss", .quiet = true};
  REQUIRE_THROWS_WITH(train::run_loop(m, data, ok, nan_loss, hooks),
                      Catch::Contains("loss: step 3 of 5: the loss is not finite"));
  REQUIRE(saved_after == 1);  // the last good step's state was the last one handed on
}

TEST_CASE("A loop resumed at step k with the saved weights and moments equals an uninterrupted one", "[model][train]") {
  const io::ImageDataset data = synthetic_images(20, 53);  // batches of 8 cross an epoch boundary (8, 8, 4, 8, ...)
  const model::VitConfig c{.image_size = 8, .channels = 1, .patch = 4, .width = 8, .depth = 1, .heads = 2,
                           .mlp_ratio = 2.0, .classes = 3};
  const train::LoopOptions o{.steps = 7, .batch = 8, .lr = 3e-3, .warmup_steps = 2, .seed = 5,
                             .augment = {.crop_padding = 1, .hflip = true}, .quiet = true};
  const auto run = [&](auto& m, train::LoopOptions opts, long stop_after) {
    std::vector<float> dl;
    const auto step = [&](long, const float* x, const std::int32_t* y, index_t n) {
      return train::classify_step(m, x, y, n, 64, 0.1, dl).loss;
    };
    struct Stop {};
    try {
      train::run_loop(m, data, opts, step, {.after_step = [&](long s) { if (s + 1 == stop_after) throw Stop{}; }});
    } catch (const Stop&) {
    }
  };
  model::Model whole(model::make_vit<float>(c));
  whole.init(1);
  run(whole, o, -1);
  model::Model first(model::make_vit<float>(c));
  first.init(1);
  run(first, o, 3);  // killed after step 3: its weights and moments are what a state file holds
  model::Model resumed(model::make_vit<float>(c));
  resumed.init(2);  // different init: everything must come from the saved state
  std::copy_n(first.params().data, first.param_count(), resumed.params().data);
  std::copy_n(first.adam_m().data(), first.param_count(), resumed.adam_m().data());
  std::copy_n(first.adam_v().data(), first.param_count(), resumed.adam_v().data());
  auto rest = o;
  rest.start_step = 3;
  run(resumed, rest, -1);
  REQUIRE(std::equal(whole.params().data, whole.params().data + whole.param_count(), resumed.params().data));
  auto wrong = o;
  wrong.start_step = 8;
  REQUIRE_THROWS_WITH(run(resumed, wrong, -1), Catch::Contains("expected a start step in [0, 7], found 8"));
}

TEST_CASE("A ViT typed per block (Chain) builds, names, visits and conforms", "[model][chain]") {
  using model::Layers;
  using Attn = attention::SoftmaxAttention<double>;
  using Gru = mixers::MinGru<double>;
  const auto c = typed_config(3);
  model::Model m(model::make_vit<double, Layers<Attn, 1>, Layers<Gru, 2>>(c));
  m.init(4);
  // Block numbering runs on across groups, as in a Repeat of the same depth.
  REQUIRE_NOTHROW(m.param("blocks.0.attn.qkv.weight"));
  REQUIRE_NOTHROW(m.param("blocks.1.attn.fwd.weight"));
  REQUIRE_NOTHROW(m.param("blocks.2.attn.proj.weight"));
  REQUIRE_THROWS(m.param("blocks.3.norm1.weight"));
  std::vector<std::string> kinds;
  for (std::size_t l = 0; l < m.net().depth(); ++l)
    m.net().visit_mixer(l, [&](const auto& mixer, std::size_t off) {
      kinds.push_back(mixer.kind_name());
      REQUIRE(m.params_info().end() != std::find_if(m.params_info().begin(), m.params_info().end(),
                                                   [&](const ParamInfo& i) { return i.offset == off; }));
    });
  REQUIRE(kinds == std::vector<std::string>{"softmax_attention", "min_gru", "min_gru"});
  check_layer(m.net(), Layout::dense(2, 1, 16), {.tol = 1e-5});
  REQUIRE_THROWS_WITH((model::make_vit<double, Layers<Attn, 1>, Layers<Gru, 1>>(c)),
                      Catch::Contains("groups hold 2 blocks") && Catch::Contains("depth is 3"));
}

TEST_CASE("FLOPs per image add up every layer's own count", "[model][flops]") {
  // Hand count for the typed ViT above at D = 4, N = 5 tokens (4 patches + CLS), hidden 4:
  using model::Layers;
  using Attn = attention::SoftmaxAttention<float>;
  using Gru = mixers::MinGru<float>;
  const auto c = typed_config(2);
  const auto vit = model::make_vit<float, Layers<Attn, 1>, Layers<Gru, 1>>(c);
  const double D = 4, N = 5, P = 4;
  const double patch = 2 * (4 * D + D) * P;                  // Linear(C·p² = 4, D) on each patch
  const double norms = 2 * (2 * D) * N;                      // one LayerNorm over every token
  const double mlp = 2 * ((D * D + D) + (D * D + D)) * N;    // fc1, fc2 (hidden = D)
  const double attn = 2 * (4 * D * D + 4 * D) * N + 4 * D * N * N;
  const double gru = (2 * (2 * (2 * D * D + 2 * D) + (D * D + D)) + 2 * D * 2) * N;  // two directions, E = D
  const double head = 2 * (3 * D + 3);                       // CLS only
  const double expected = patch + (norms * 2 + mlp + attn) + (norms * 2 + mlp + gru) + norms + head;
  REQUIRE(analysis::vit_flops_per_image(vit, c) == Approx(expected));
  // Halting keep ratios scale a block's tokens: keep 0 leaves CLS alone in block 1.
  const double gru_cls = (2 * (2 * (2 * D * D + 2 * D) + (D * D + D)) + 2 * D * 2) * 1;
  const double block1_cls = 2 * (2 * D) * 1 * 2 + 2 * ((D * D + D) * 2) * 1 + gru_cls;
  REQUIRE(analysis::vit_flops_per_image(vit, c, {1.0, 0.0}) ==
          Approx(expected - (norms * 2 + mlp + gru) + block1_cls));
}

TEST_CASE("The mixer timing rig runs a mixer as a model", "[model][cost]") {
  // The rig bench_mixers and the study share (analysis/cost.hpp).
  analysis::MixerRig rig(mixers::MinGru<float>({.dim = 8}), 2, 17, 8);
  REQUIRE(rig.model().param_count() == mixers::MinGru<float>({.dim = 8}).param_count());
  REQUIRE(rig.forward() != nullptr);
  REQUIRE(rig.forward_backward() != nullptr);
  REQUIRE(rig.forward_ms(2) > 0.0);
  REQUIRE_THROWS_WITH(analysis::MixerRig(mixers::ConvMixer<float>({.dim = 8}), 2, 18, 8),
                      Catch::Contains("found length 18"));  // conv_mixer needs CLS + a square grid
}
