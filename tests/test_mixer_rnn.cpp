// MultiHeadLstm / MultiHeadGru: conformance (ragged, masked, scan orders, one direction), exact
// parameter counts, PyTorch's nn.LSTM / nn.GRU (tests/reference/mixers/rnn.py), masked tokens
// as identity steps (= the packed batch of kept tokens), scan orders as permutations, stability
// at N = 16384, and no allocation in steady state.
#include <cmath>

#include "conformance.hpp"
#include "seqswap/io/safetensors.hpp"
#include "seqswap/mixers/rnn.hpp"
#include "test_util.hpp"

using namespace seqswap;
using conformance::check_layer;
using mixers::MultiHeadGru;
using mixers::MultiHeadLstm;
using mixers::RnnOptions;
using Host = backend::Host;

namespace {

// The closed form for the docs: in_proj D² + D, per direction and head W_ih, W_hh (G·d × d)
// and b_ih, b_hh (G·d), merge (dirs·D)·D + D, proj D² + D; with H·d = D:
//   count = (2 + dirs)·D² + 3·D + dirs·2·G·D·(d + 1),   G = 4 (LSTM), 3 (GRU)
std::size_t rnn_param_formula(index_t D, index_t H, index_t dirs, index_t G) {
  const index_t d = D / H;
  return static_cast<std::size_t>((2 + dirs) * D * D + 3 * D + dirs * 2 * G * D * (d + 1));
}

template <class M>
std::size_t visited_count(const M& m) {
  std::size_t n = 0, expect_offset = 0;
  m.visit_params(
      [&](const ParamInfo& i) {
        REQUIRE(i.offset == expect_offset);
        REQUIRE(i.count == numel(i.shape));
        expect_offset += i.count;
        n += i.count;
      },
      "blocks.0", 0);
  return n;
}

// Result of one forward + backward in double precision.
struct Run {
  std::vector<double> y, pre, dx, g;
};

template <class M>
Run run(const M& m, const Layout& l, const std::vector<double>& p, const std::vector<double>& x,
        const std::vector<double>& dy, const std::uint8_t* keep) {
  Run r{std::vector<double>(l.size()), {}, std::vector<double>(l.size()),
        std::vector<double>(p.size(), 0.0)};
  typename M::template Ctx<Host> ctx;
  m.forward(ParamsView<const double, Host>{p.data(), p.size()}, view_of<const double>(x.data(), l, keep),
            view_of<double>(r.y.data(), l, keep), ctx);
  const auto pv = ctx.pre_projection();
  r.pre.assign(pv.data, pv.data + l.size());
  m.backward(ParamsView<const double, Host>{p.data(), p.size()}, ctx,
             view_of<const double>(dy.data(), l, keep), view_of<double>(r.dx.data(), l, keep),
             ParamsView<double, Host>{r.g.data(), r.g.size()});
  return r;
}

std::vector<double> random_vector(std::size_t n, Rng& rng, double scale = 1.0) {
  std::vector<double> v(n);
  for (auto& e : v) e = rng.normal() * scale;
  return v;
}

template <class Cell>
void check_conformance() {
  for (bool bidirectional : {true, false})
    for (order::ScanOrder ord : {order::ScanOrder{}, order::ScanOrder{order::Grid::snake, order::Cls::tail}}) {
      if (!bidirectional && !ord.is_identity()) continue;
      mixers::MultiHeadRnn<double, Cell> m(
          {.dim = 6, .heads = 2, .bidirectional = bidirectional, .order = ord, .name = "attn"});
      for (const auto& in : conformance::standard_layouts(6)) {
        INFO("bidirectional " << bidirectional << ", order identity " << ord.is_identity()
                              << ", tokens " << in.total());
        check_layer(m, in, {.mixer = true});
        check_layer(m, in, {.keep = conformance::some_mask(in), .mixer = true});
      }
    }
}

// Walks visit_params (empty prefix) and concatenates the fixture's tensors in layout order.
template <class M>
std::vector<float> load_params(const M& m, const io::SafetensorsFile& f) {
  std::vector<float> p;
  m.visit_params(
      [&](const ParamInfo& i) {
        const auto& t = f.at(i.name);
        INFO(i.name);
        REQUIRE(t.shape == std::vector<std::int64_t>(i.shape.begin(), i.shape.end()));
        const auto v = t.to_vector<float>();
        p.insert(p.end(), v.begin(), v.end());
      },
      "", 0);
  REQUIRE(p.size() == m.param_count());
  return p;
}

template <class M>
void check_against_torch(const std::string& kind) {
  const auto f = io::read_safetensors(test_util::fixture("mixers/rnn.safetensors"));
  const index_t B = 2, N = 7, D = 8, H = 2;
  M m({.dim = D, .heads = H, .bidirectional = true, .name = kind});
  const auto p = load_params(m, f);
  const auto x = f.at(kind + ".x").template to_vector<float>();
  const auto keep = f.at(kind + ".keep").template to_vector<std::uint8_t>();
  const auto dy = f.at(kind + ".dy").template to_vector<float>();
  const Layout l = Layout::dense(B, N, D);
  typename M::template Ctx<Host> ctx;
  std::vector<float> y(l.size()), dx(l.size()), g(p.size(), 0.0f);
  m.forward(ParamsView<const float, Host>{p.data(), p.size()}, view_of<const float>(x.data(), l, keep.data()),
            view_of<float>(y.data(), l, keep.data()), ctx);
  test_util::require_close(y.data(), f.at(kind + ".y").template to_vector<float>(), 1e-4, kind + ".y");
  test_util::require_close(ctx.pre_projection().data, f.at(kind + ".pre").template to_vector<float>(),
                           1e-4, kind + ".pre");
  m.backward(ParamsView<const float, Host>{p.data(), p.size()}, ctx,
             view_of<const float>(dy.data(), l, keep.data()), view_of<float>(dx.data(), l, keep.data()),
             ParamsView<float, Host>{g.data(), g.size()});
  test_util::require_close(dx.data(), f.at("grad." + kind + ".x").template to_vector<float>(), 1e-4,
                           "grad." + kind + ".x");
  std::size_t checked = 0;
  m.visit_params(
      [&](const ParamInfo& i) {
        const auto ref = f.at("grad." + i.name).template to_vector<float>();
        test_util::require_close(g.data() + i.offset, ref, 1e-4, "grad." + i.name);
        checked += ref.size();
      },
      "", 0);
  REQUIRE(checked == g.size());
}

// A masked token is an identity step, so a masked dense batch equals the packed batch of its
// kept tokens (stored scan order): outputs, input gradients and parameter gradients.
template <class M>
void check_mask_is_packing() {
  const index_t D = 6;
  M m({.dim = D, .heads = 3, .name = "attn"});
  const Layout dense = Layout::dense(3, 9, D);
  const auto keep = conformance::some_mask(dense);
  std::vector<index_t> lengths;
  std::vector<index_t> kept_rows;
  for (index_t b = 0; b < dense.batch; ++b) {
    index_t n = 0;
    for (index_t t = dense.offsets[b]; t < dense.offsets[b + 1]; ++t)
      if (keep[t]) kept_rows.push_back(t), ++n;
    lengths.push_back(n);
  }
  const Layout packed = Layout::ragged(lengths, D);
  Rng rng(7);
  const auto p = random_vector(m.param_count(), rng, 0.5);
  const auto x = random_vector(dense.size(), rng), dy = random_vector(dense.size(), rng);
  std::vector<double> xp, dyp;
  for (index_t t : kept_rows) {
    xp.insert(xp.end(), x.begin() + t * D, x.begin() + (t + 1) * D);
    dyp.insert(dyp.end(), dy.begin() + t * D, dy.begin() + (t + 1) * D);
  }
  const Run a = run(m, dense, p, x, dy, keep.data());
  const Run b = run(m, packed, p, xp, dyp, nullptr);
  for (std::size_t k = 0; k < kept_rows.size(); ++k)
    for (index_t j = 0; j < D; ++j) {
      const auto t = static_cast<std::size_t>(kept_rows[k] * D + j), s = k * D + j;
      REQUIRE(a.y[t] == Approx(b.y[s]).margin(1e-12));
      REQUIRE(a.pre[t] == Approx(b.pre[s]).margin(1e-12));
      REQUIRE(a.dx[t] == Approx(b.dx[s]).margin(1e-12));
    }
  for (index_t t = 0; t < dense.total(); ++t)
    if (!keep[t])
      for (index_t j = 0; j < D; ++j) {
        REQUIRE(a.pre[t * D + j] == 0.0);
        REQUIRE(a.dx[t * D + j] == 0.0);
      }
  for (std::size_t i = 0; i < p.size(); ++i) REQUIRE(a.g[i] == Approx(b.g[i]).margin(1e-12));
}

// Scan orders permute tokens and everything outside the recurrence is per token, so
// mixer_O(x) = scatter(mixer_identity(gather(x))) per sequence, gradients likewise.
template <class M>
void check_order_is_permutation() {
  const index_t D = 4;
  const Layout l = Layout::ragged({10, 5, 17, 3}, D);  // grids 3x3, 2x2, 4x4 and a plain run
  const auto keep = conformance::some_mask(l);
  for (order::Grid grid : {order::Grid::reversed, order::Grid::column_major, order::Grid::snake})
    for (order::Cls cls : {order::Cls::head, order::Cls::middle, order::Cls::tail}) {
      const order::ScanOrder ord{grid, cls};
      M mo({.dim = D, .heads = 2, .order = ord, .name = "attn"});
      M mi({.dim = D, .heads = 2, .name = "attn"});
      Rng rng(11);
      const auto p = random_vector(mo.param_count(), rng, 0.5);
      const auto x = random_vector(l.size(), rng), dy = random_vector(l.size(), rng);
      const auto perm = order::batch_permutation(ord, l.offsets.data(), l.batch);
      std::vector<double> xs(x.size()), dys(dy.size());
      std::vector<std::uint8_t> keep_s(keep.size());
      order::gather_rows(x.data(), perm, D, xs.data());
      order::gather_rows(dy.data(), perm, D, dys.data());
      order::gather_rows(keep.data(), perm, 1, keep_s.data());
      const Run a = run(mo, l, p, x, dy, keep.data());
      const Run b = run(mi, l, p, xs, dys, keep_s.data());
      std::vector<double> y_back(x.size()), dx_back(x.size()), pre_back(x.size());
      order::scatter_rows(b.y.data(), perm, D, y_back.data());
      order::scatter_rows(b.pre.data(), perm, D, pre_back.data());
      order::scatter_rows(b.dx.data(), perm, D, dx_back.data());
      for (std::size_t i = 0; i < x.size(); ++i) {
        REQUIRE(a.y[i] == Approx(y_back[i]).margin(1e-12));
        REQUIRE(a.pre[i] == Approx(pre_back[i]).margin(1e-12));
        REQUIRE(a.dx[i] == Approx(dx_back[i]).margin(1e-12));
      }
      for (std::size_t i = 0; i < p.size(); ++i) REQUIRE(a.g[i] == Approx(b.g[i]).margin(1e-12));
    }
}

}  // namespace

TEST_CASE("MultiHeadLstm conforms", "[conformance][mixer][rnn]") {
  check_conformance<mixers::cell::Lstm>();
}

TEST_CASE("MultiHeadGru conforms", "[conformance][mixer][rnn]") {
  check_conformance<mixers::cell::Gru>();
}

TEST_CASE("MultiHeadRnn parameter counts are exact", "[mixer][rnn]") {
  struct Case { index_t D, H; bool bi; };
  for (Case cs : {Case{6, 2, true}, Case{6, 2, false}, Case{8, 1, true}, Case{192, 3, true},
                  Case{384, 6, true}}) {
    const index_t dirs = cs.bi ? 2 : 1;
    MultiHeadLstm<float> lstm({.dim = cs.D, .heads = cs.H, .bidirectional = cs.bi});
    MultiHeadGru<float> gru({.dim = cs.D, .heads = cs.H, .bidirectional = cs.bi});
    REQUIRE(lstm.param_count() == visited_count(lstm));
    REQUIRE(gru.param_count() == visited_count(gru));
    REQUIRE(lstm.param_count() == rnn_param_formula(cs.D, cs.H, dirs, 4));
    REQUIRE(gru.param_count() == rnn_param_formula(cs.D, cs.H, dirs, 3));
  }
  // ViT-Tiny (D 192, 3 heads): both are larger than the attention they replace (4D² + 4D).
  REQUIRE(MultiHeadLstm<float>({.dim = 192, .heads = 3}).param_count() == 347712);
  REQUIRE(MultiHeadGru<float>({.dim = 192, .heads = 3}).param_count() == 297792);
  REQUIRE(4 * 192 * 192 + 4 * 192 == 148224);

  // Names, shapes and flags as the model and the relayout-by-name see them.
  std::vector<ParamInfo> infos;
  MultiHeadLstm<float>({.dim = 8, .heads = 2}).visit_params(
      [&](const ParamInfo& i) { infos.push_back(i); }, "blocks.3", 0);
  std::vector<std::string> names;
  for (const auto& i : infos) names.push_back(i.name);
  REQUIRE(names == std::vector<std::string>{
                       "blocks.3.attn.in_proj.weight", "blocks.3.attn.in_proj.bias",
                       "blocks.3.attn.fwd.weight_ih", "blocks.3.attn.fwd.weight_hh",
                       "blocks.3.attn.fwd.bias_ih", "blocks.3.attn.fwd.bias_hh",
                       "blocks.3.attn.bwd.weight_ih", "blocks.3.attn.bwd.weight_hh",
                       "blocks.3.attn.bwd.bias_ih", "blocks.3.attn.bwd.bias_hh",
                       "blocks.3.attn.merge.weight", "blocks.3.attn.merge.bias",
                       "blocks.3.attn.proj.weight", "blocks.3.attn.proj.bias"});
  REQUIRE(infos[2].shape == std::vector<index_t>{2, 16, 4});
  REQUIRE(infos[4].shape == std::vector<index_t>{2, 16});
  REQUIRE(infos[2].decay);
  REQUIRE(!infos[4].decay);
  REQUIRE(infos[2].init == Init::uniform);
  REQUIRE(infos[2].std == Approx(0.5));  // 1/√d, d = 4
  REQUIRE(infos[10].shape == std::vector<index_t>{8, 16});
  REQUIRE(std::string(MultiHeadLstm<float>::kind_name()) == "multi_head_lstm");
  REQUIRE(std::string(MultiHeadGru<float>::kind_name()) == "multi_head_gru");
}

TEST_CASE("MultiHeadRnn rejects bad shapes", "[mixer][rnn]") {
  REQUIRE_THROWS_WITH(MultiHeadLstm<float>({.dim = 10, .heads = 3}),
                      Catch::Contains("width 10 and 3 heads"));
  MultiHeadGru<float> m({.dim = 8, .heads = 2});
  Layout out;
  REQUIRE_THROWS_WITH(m.plan(Layout::dense(1, 5, 6), out),
                      Catch::Contains("expected width 8, found 6"));
}

TEST_CASE("MultiHeadLstm matches torch.nn.LSTM", "[reference][mixer][rnn]") {
  check_against_torch<MultiHeadLstm<float>>("lstm");
}

TEST_CASE("MultiHeadGru matches torch.nn.GRU", "[reference][mixer][rnn]") {
  check_against_torch<MultiHeadGru<float>>("gru");
}

TEST_CASE("MultiHeadRnn: a masked token is an identity step", "[mixer][rnn]") {
  check_mask_is_packing<MultiHeadLstm<double>>();
  check_mask_is_packing<MultiHeadGru<double>>();
}

TEST_CASE("MultiHeadRnn: a scan order permutes the tokens", "[mixer][rnn]") {
  check_order_is_permutation<MultiHeadLstm<double>>();
  check_order_is_permutation<MultiHeadGru<double>>();
}

TEMPLATE_TEST_CASE("MultiHeadRnn is stable at N = 16384 with large weights", "[mixer][rnn]",
                   MultiHeadLstm<float>, MultiHeadGru<float>) {
  const index_t D = 8, N = 16384;
  TestType m({.dim = D, .heads = 2});
  const Layout l = Layout::dense(1, N, D);
  Rng rng(3);
  std::vector<float> p(m.param_count()), x(l.size()), dy(l.size()), y(l.size()), dx(l.size()),
      g(p.size(), 0.0f);
  for (auto& v : p) v = float(rng.normal() * 3.0);  // saturating gates
  for (auto& v : x) v = float(rng.normal() * 3.0);
  for (auto& v : dy) v = float(rng.normal());
  typename TestType::template Ctx<Host> ctx;
  m.forward(ParamsView<const float, Host>{p.data(), p.size()}, view_of<const float>(x.data(), l),
            view_of<float>(y.data(), l), ctx);
  m.backward(ParamsView<const float, Host>{p.data(), p.size()}, ctx, view_of<const float>(dy.data(), l),
             view_of<float>(dx.data(), l), ParamsView<float, Host>{g.data(), g.size()});
  for (float v : y) REQUIRE(std::isfinite(v));
  for (float v : dx) REQUIRE(std::isfinite(v));
  for (float v : g) REQUIRE(std::isfinite(v));
}

TEST_CASE("MultiHeadRnn allocates nothing in steady state", "[mixer][rnn]") {
  const index_t D = 6;
  MultiHeadLstm<double> m({.dim = D, .heads = 2, .order = {order::Grid::snake, order::Cls::head}});
  const Layout l = Layout::dense(2, 10, D);
  const auto keep = conformance::some_mask(l);
  Rng rng(5);
  const auto p = random_vector(m.param_count(), rng, 0.5);
  const auto x = random_vector(l.size(), rng), dy = random_vector(l.size(), rng);
  MultiHeadLstm<double>::Ctx<Host> ctx;
  std::vector<double> y(l.size()), dx(l.size()), g(p.size(), 0.0);
  auto step = [&] {
    m.forward(ParamsView<const double, Host>{p.data(), p.size()},
              view_of<const double>(x.data(), l, keep.data()), view_of<double>(y.data(), l, keep.data()), ctx);
    m.backward(ParamsView<const double, Host>{p.data(), p.size()}, ctx,
               view_of<const double>(dy.data(), l, keep.data()), view_of<double>(dx.data(), l, keep.data()),
               ParamsView<double, Host>{g.data(), g.size()});
  };
  step();
  const std::size_t before = Buffer<double>::allocation_count();
  step();
  REQUIRE(Buffer<double>::allocation_count() == before);
}
