// ConvMixer (conv::Grid2d, conv::Seq1d): conformance (masked, ragged where allowed, CLS-only
// and patch-free grids), exact parameter counts, PyTorch's depthwise conv2d / conv1d
// (tests/reference/mixers/conv.py), Grid2d's length rule and no allocation in steady state.
#include "conformance.hpp"
#include "seqswap/io/safetensors.hpp"
#include "seqswap/mixers/conv.hpp"
#include "test_util.hpp"

using namespace seqswap;
using conformance::check_layer;
using mixers::ConvMixer;
using Grid2d = mixers::conv::Grid2d;
using Seq1d = mixers::conv::Seq1d;
using Host = backend::Host;

namespace {

// The closed form for the docs: dw.weight D·K, dw.bias D, pointwise D² + D, proj D² + D,
// plus cls_weight and cls_mix (2D) on the grid:
//   Grid2d: 2·D² + D·k² + 5·D        Seq1d: 2·D² + D·k + 3·D
std::size_t grid_param_formula(index_t D, index_t k) {
  return static_cast<std::size_t>(2 * D * D + D * k * k + 5 * D);
}
std::size_t seq_param_formula(index_t D, index_t k) {
  return static_cast<std::size_t>(2 * D * D + D * k + 3 * D);
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

// Grid2d needs every sequence to be CLS + G×G: N = 1 (CLS only), 10 (3x3), 17 (4x4), 50 (7x7)
// and a ragged batch of such sequences (lengths 10, 1, 5 = 1 + 2x2, 17).
std::vector<Layout> grid_layouts(index_t D) {
  return {Layout::dense(2, 1, D), Layout::dense(2, 10, D), Layout::dense(1, 17, D),
          Layout::dense(1, 50, D), Layout::ragged({10, 1, 5, 17}, D)};
}

// Masks that some_mask does not produce: CLS masked in sequence 0, every patch masked in
// sequence 1 (the CLS mean over zero patches), of dense(2, 10, D).
std::vector<std::uint8_t> edge_mask() {
  std::vector<std::uint8_t> keep(20, 1);
  keep[0] = 0;
  keep[4] = 0;
  for (int t = 11; t < 20; ++t) keep[t] = 0;
  return keep;
}

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
void check_against_torch(const M& m, const std::string& kind) {
  const auto f = io::read_safetensors(test_util::fixture("mixers/conv.safetensors"));
  const index_t B = 2, N = 10, D = 6;
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

}  // namespace

TEST_CASE("ConvMixer<Grid2d> conforms", "[conformance][mixer][conv]") {
  for (index_t k : {3, 5}) {
    ConvMixer<double, Grid2d> m({.dim = 6, .kernel = k, .name = "attn"});
    for (const auto& in : grid_layouts(6)) {
      INFO("kernel " << k << ", tokens " << in.total());
      check_layer(m, in, {.mixer = true});
      check_layer(m, in, {.keep = conformance::some_mask(in), .mixer = true});
    }
    check_layer(m, Layout::dense(2, 10, 6), {.keep = edge_mask(), .mixer = true});
  }
}

TEST_CASE("ConvMixer<Seq1d> conforms", "[conformance][mixer][conv]") {
  for (index_t k : {1, 3, 5})
    for (order::ScanOrder ord : {order::ScanOrder{}, order::ScanOrder{order::Grid::snake, order::Cls::middle}}) {
      ConvMixer<double, Seq1d> m({.dim = 6, .kernel = k, .order = ord, .name = "attn"});
      for (const auto& in : conformance::standard_layouts(6)) {
        INFO("kernel " << k << ", order identity " << ord.is_identity() << ", tokens " << in.total());
        check_layer(m, in, {.mixer = true});
        check_layer(m, in, {.keep = conformance::some_mask(in), .mixer = true});
      }
    }
}

TEST_CASE("ConvMixer parameter counts are exact", "[mixer][conv]") {
  for (index_t D : {6, 192, 384})
    for (index_t k : {1, 3, 7}) {
      ConvMixer<float, Grid2d> grid({.dim = D, .kernel = k});
      ConvMixer<float, Seq1d> seq({.dim = D, .kernel = k});
      REQUIRE(grid.param_count() == visited_count(grid));
      REQUIRE(seq.param_count() == visited_count(seq));
      REQUIRE(grid.param_count() == grid_param_formula(D, k));
      REQUIRE(seq.param_count() == seq_param_formula(D, k));
    }
  std::vector<ParamInfo> infos;
  ConvMixer<float, Grid2d>({.dim = 4, .kernel = 3}).visit_params(
      [&](const ParamInfo& i) { infos.push_back(i); }, "blocks.2", 0);
  std::vector<std::string> names;
  for (const auto& i : infos) names.push_back(i.name);
  REQUIRE(names == std::vector<std::string>{
                       "blocks.2.attn.dw.weight", "blocks.2.attn.dw.bias", "blocks.2.attn.cls_weight",
                       "blocks.2.attn.cls_mix", "blocks.2.attn.pointwise.weight",
                       "blocks.2.attn.pointwise.bias", "blocks.2.attn.proj.weight",
                       "blocks.2.attn.proj.bias"});
  REQUIRE(infos[0].shape == std::vector<index_t>{4, 1, 3, 3});
  REQUIRE(infos[0].decay);
  REQUIRE(!infos[1].decay);
  REQUIRE(!infos[2].decay);
  REQUIRE(infos[0].std == Approx(1.0 / 3.0));  // torch's 1/√fan_in, fan_in = k²
  infos.clear();
  ConvMixer<float, Seq1d>({.dim = 4, .kernel = 5}).visit_params(
      [&](const ParamInfo& i) { infos.push_back(i); }, "", 0);
  REQUIRE(infos.size() == 6);
  REQUIRE(infos[0].shape == std::vector<index_t>{4, 1, 5});
  REQUIRE(std::string(ConvMixer<float, Grid2d>::kind_name()) == "conv_mixer");
  REQUIRE(std::string(ConvMixer<float, Seq1d>::kind_name()) == "conv_mixer_1d");
}

TEST_CASE("ConvMixer rejects bad shapes", "[mixer][conv]") {
  REQUIRE_THROWS_WITH((ConvMixer<float, Seq1d>({.dim = 4, .kernel = 4})),
                      Catch::Contains("odd kernel size") && Catch::Contains("found 4"));
  ConvMixer<double, Grid2d> grid({.dim = 4});
  Layout out;
  // ragged / packed lengths are not CLS + G×G
  REQUIRE_THROWS_WITH(grid.plan(Layout::ragged({10, 6, 1}, 4), out),
                      Catch::Contains("found length 6 in sequence 1"));
  REQUIRE_THROWS_WITH(grid.plan(Layout::dense(1, 10, 5), out),
                      Catch::Contains("expected width 4, found 5"));
  const Layout bad = Layout::dense(1, 9, 4);
  std::vector<double> p(grid.param_count()), x(bad.size()), y(bad.size());
  ConvMixer<double, Grid2d>::Ctx<Host> ctx;
  REQUIRE_THROWS_WITH(grid.forward(ParamsView<const double, Host>{p.data(), p.size()},
                                   view_of<const double>(x.data(), bad), view_of<double>(y.data(), bad), ctx),
                      Catch::Contains("found length 9"));
  ConvMixer<double, Seq1d> seq({.dim = 4});
  REQUIRE_NOTHROW(seq.plan(Layout::ragged({10, 6, 1}, 4), out));
}

TEST_CASE("ConvMixer<Grid2d> matches torch's depthwise conv2d", "[reference][mixer][conv]") {
  check_against_torch(ConvMixer<float, Grid2d>({.dim = 6, .kernel = 3, .name = "grid"}), "grid");
}

TEST_CASE("ConvMixer<Seq1d> matches torch's depthwise conv1d", "[reference][mixer][conv]") {
  // the fixture runs along this order with a hard-coded permutation
  REQUIRE(order::ScanOrder{order::Grid::snake, order::Cls::middle}.permutation(10) ==
          std::vector<index_t>{1, 2, 3, 6, 0, 5, 4, 7, 8, 9});
  check_against_torch(ConvMixer<float, Seq1d>({.dim = 6,
                                               .kernel = 5,
                                               .order = {order::Grid::snake, order::Cls::middle},
                                               .name = "seq"}),
                      "seq");
}

TEMPLATE_TEST_CASE("ConvMixer allocates nothing in steady state", "[mixer][conv]", Grid2d, Seq1d) {
  const index_t D = 6;
  ConvMixer<double, TestType> m({.dim = D, .kernel = 3});
  const Layout l = Layout::dense(2, 17, D);
  const auto keep = conformance::some_mask(l);
  Rng rng(5);
  std::vector<double> p(m.param_count()), x(l.size()), dy(l.size()), y(l.size()), dx(l.size()),
      g(p.size(), 0.0);
  for (auto& v : p) v = rng.normal();
  for (auto& v : x) v = rng.normal();
  for (auto& v : dy) v = rng.normal();
  typename ConvMixer<double, TestType>::template Ctx<Host> ctx;
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
