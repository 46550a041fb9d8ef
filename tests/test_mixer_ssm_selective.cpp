// The selective SSM mixer (Mamba's S6, bidirectional as in Vim) passes the conformance test
// (fused scan, the materialized reference, expand 2, one direction), its fused scan agrees with
// the materialized reference, masking equals compaction, its parameter count follows the
// closed form, and it matches a plain PyTorch loop (tests/reference/mixers/ssm_selective.py).
#include <set>

#include "conformance.hpp"
#include "seqswap/io/safetensors.hpp"
#include "seqswap/mixers/ssm_selective.hpp"
#include "test_util.hpp"

using namespace seqswap;
using conformance::check_layer;
using mixers::SelectiveScan;
using mixers::SelectiveSsm;
using mixers::SelectiveSsmOptions;
using Host = backend::Host;

namespace {

// 3·E·D + dirs·E·(conv + 2·dt_rank + 3·state + 3) + D, E = expand·D, dt_rank 0 = ceil(D / 16)
std::size_t formula(const SelectiveSsmOptions& o) {
  const index_t D = o.dim, E = o.expand * D, R = o.dt_rank > 0 ? o.dt_rank : (D + 15) / 16;
  const index_t dirs = o.bidirectional ? 2 : 1;
  return static_cast<std::size_t>(3 * E * D + dirs * E * (o.conv + 2 * R + 3 * o.state + 3) + D);
}

template <class T>
struct Run {
  std::vector<T> y, pre, dx, g;
};

// One forward and one backward (gradients from zero).
template <class T>
Run<T> run(const SelectiveSsm<T>& m, const std::vector<T>& p, const Layout& l,
           const std::vector<T>& x, const std::vector<T>& dy, const std::uint8_t* keep,
           typename SelectiveSsm<T>::template Ctx<Host>& ctx) {
  Run<T> r{std::vector<T>(l.size()), {}, std::vector<T>(l.size()), std::vector<T>(p.size(), T(0))};
  m.forward(ParamsView<const T, Host>{p.data(), p.size()}, view_of<const T>(x.data(), l, keep),
            view_of<T>(r.y.data(), l, keep), ctx);
  const auto pre = ctx.pre_projection();
  r.pre.assign(pre.data, pre.data + pre.total() * pre.dim);
  m.backward(ParamsView<const T, Host>{p.data(), p.size()}, ctx,
             view_of<const T>(dy.data(), l, keep), view_of<T>(r.dx.data(), l, keep),
             ParamsView<T, Host>{r.g.data(), r.g.size()});
  return r;
}
template <class T>
Run<T> run(const SelectiveSsm<T>& m, const std::vector<T>& p, const Layout& l,
           const std::vector<T>& x, const std::vector<T>& dy, const std::uint8_t* keep) {
  typename SelectiveSsm<T>::template Ctx<Host> ctx;
  return run(m, p, l, x, dy, keep, ctx);
}

std::vector<double> normals(std::size_t n, Rng& rng, double std) {
  std::vector<double> v(n);
  for (auto& a : v) a = rng.normal() * std;
  return v;
}

const order::ScanOrder kSnakeMiddle{order::Grid::snake, order::Cls::middle};

}  // namespace

TEST_CASE("SelectiveSsm conforms", "[conformance][mixer][ssm_selective]") {
  // A small chunk so that N = 17 and 50 cross several state checkpoints; snake order with CLS
  // in the middle so that 1 + G² sequences are permuted.
  SelectiveSsm<double> m({.dim = 6, .state = 4, .order = kSnakeMiddle, .chunk = 5});
  for (const auto& in : conformance::standard_layouts(6)) {
    check_layer(m, in, {.mixer = true});
    check_layer(m, in, {.keep = conformance::some_mask(in), .mixer = true});
  }
}

TEST_CASE("SelectiveSsm with expand 2 conforms", "[conformance][mixer][ssm_selective]") {
  SelectiveSsm<double> m({.dim = 4, .expand = 2, .state = 3, .conv = 3, .dt_rank = 2});
  for (const auto& in : conformance::standard_layouts(4)) {
    check_layer(m, in, {.mixer = true});
    check_layer(m, in, {.keep = conformance::some_mask(in), .mixer = true});
  }
}

TEST_CASE("SelectiveSsm with one direction conforms", "[conformance][mixer][ssm_selective]") {
  SelectiveSsm<double> m({.dim = 5, .state = 4, .bidirectional = false, .chunk = 4});
  for (const auto& in : conformance::standard_layouts(5)) {
    check_layer(m, in, {.mixer = true});
    check_layer(m, in, {.keep = conformance::some_mask(in), .mixer = true});
  }
}

TEST_CASE("SelectiveSsm materialized reference conforms", "[conformance][mixer][ssm_selective]") {
  SelectiveSsm<double> m({.dim = 4, .state = 3, .order = kSnakeMiddle, .chunk = 4,
                          .scan = SelectiveScan::materialized});
  for (const auto& in : conformance::standard_layouts(4)) {
    check_layer(m, in, {.mixer = true});
    check_layer(m, in, {.keep = conformance::some_mask(in), .mixer = true});
  }
}

TEST_CASE("SelectiveSsm fused scan equals the materialized reference",
          "[mixer][ssm_selective]") {
  const Layout l = Layout::ragged({10, 17, 1, 0, 50}, 6);
  const auto keep = conformance::some_mask(l);
  Rng rng(7);
  // States 8 and 16 take the fused scan's compile-time-size paths, 5 the dynamic one.
  for (const index_t state : {5, 8, 16})
  for (bool bidirectional : {true, false})
    for (index_t expand : {1, 2})
      for (index_t chunk : {1, 3, 256}) {
        SelectiveSsmOptions o{.dim = 6, .expand = expand, .state = state, .bidirectional = bidirectional,
                              .order = kSnakeMiddle, .chunk = chunk};
        SelectiveSsm<double> fused(o);
        o.scan = SelectiveScan::materialized;
        o.chunk = 4;  // ops::linear_scan's chunked form, across several chunks
        SelectiveSsm<double> ref(o);
        const auto p = normals(fused.param_count(), rng, 0.5);
        const auto x = normals(l.size(), rng, 1.0), dy = normals(l.size(), rng, 1.0);
        for (const std::uint8_t* k : {static_cast<const std::uint8_t*>(nullptr), keep.data()}) {
          const auto a = run(fused, p, l, x, dy, k), b = run(ref, p, l, x, dy, k);
          INFO("state " << state << " bidirectional " << bidirectional << " expand " << expand << " chunk " << chunk
                                << " masked " << (k != nullptr));
          test_util::require_close(a.y.data(), b.y, 1e-12, "y");
          test_util::require_close(a.pre.data(), b.pre, 1e-12, "pre");
          test_util::require_close(a.dx.data(), b.dx, 1e-12, "dx");
          test_util::require_close(a.g.data(), b.g, 1e-12, "parameter gradients");
        }
      }
}

TEST_CASE("SelectiveSsm: a masked token is dropped from the sequence", "[mixer][ssm_selective]") {
  // Masking equals compaction: kept tokens give the same outputs and gradients as the batch
  // with the masked tokens removed (stored order, so that compaction keeps the order).
  const index_t D = 4;
  SelectiveSsm<double> m({.dim = D, .state = 3});
  const Layout full = Layout::ragged({9, 6}, D);
  const std::vector<std::uint8_t> keep{1, 0, 1, 1, 0, 0, 1, 1, 0, /**/ 0, 1, 1, 0, 1, 1};
  Rng rng(3);
  const auto p = normals(m.param_count(), rng, 0.5);
  const auto x = normals(full.size(), rng, 1.0), dy = normals(full.size(), rng, 1.0);
  std::vector<double> xs, dys;
  std::vector<index_t> lengths(2, 0);
  for (index_t t = 0; t < full.total(); ++t)
    if (keep[t]) {
      xs.insert(xs.end(), x.begin() + t * D, x.begin() + (t + 1) * D);
      dys.insert(dys.end(), dy.begin() + t * D, dy.begin() + (t + 1) * D);
      ++lengths[t < 9 ? 0 : 1];
    }
  const Layout compact = Layout::ragged(lengths, D);
  const auto a = run(m, p, full, x, dy, keep.data());
  const auto b = run(m, p, compact, xs, dys, nullptr);
  index_t k = 0;
  for (index_t t = 0; t < full.total(); ++t) {
    for (index_t j = 0; j < D; ++j) {
      if (keep[t]) {
        REQUIRE(a.y[t * D + j] == Approx(b.y[k * D + j]).margin(1e-12));
        REQUIRE(a.dx[t * D + j] == Approx(b.dx[k * D + j]).margin(1e-12));
      } else {
        REQUIRE(a.y[t * D + j] == 0.0);
        REQUIRE(a.dx[t * D + j] == 0.0);
      }
    }
    const index_t E = m.width();
    for (index_t j = 0; j < E; ++j)
      if (!keep[t]) REQUIRE(a.pre[t * E + j] == 0.0);
    if (keep[t]) ++k;
  }
  test_util::require_close(a.g.data(), b.g, 1e-12, "parameter gradients");
}

TEST_CASE("SelectiveSsm parameter count follows the closed form", "[mixer][ssm_selective]") {
  for (index_t dim : {1, 6, 16, 17, 192})
    for (index_t expand : {1, 2})
      for (bool bi : {true, false})
        for (index_t rank : {0, 3}) {
          const SelectiveSsmOptions o{.dim = dim, .expand = expand, .state = 16, .conv = 4,
                                      .dt_rank = rank, .bidirectional = bi};
          SelectiveSsm<float> m(o);
          std::size_t sum = 0, next = 0;
          std::set<std::string> names;
          m.visit_params(
              [&](const ParamInfo& i) {
                REQUIRE(i.offset == next);  // layout order, no gaps
                REQUIRE(i.count == numel(i.shape));
                REQUIRE(names.insert(i.name).second);
                next += i.count;
                sum += i.count;
              },
              "", 0);
          REQUIRE(sum == m.param_count());
          REQUIRE(m.param_count() == formula(o));
        }
  // DeiT-Ti width, expand 1, bidirectional: 3·192² + 2·192·(4 + 2·12 + 3·16 + 3) + 192
  REQUIRE(SelectiveSsm<float>({.dim = 192}).param_count() == 141120);

  SelectiveSsm<float> m({.dim = 8, .expand = 2, .state = 4, .conv = 3});
  std::vector<std::string> names;
  std::vector<bool> decay;
  m.visit_params([&](const ParamInfo& i) { names.push_back(i.name); decay.push_back(i.decay); },
                 "blocks.3", 0);
  const std::vector<std::string> want{
      "blocks.3.attn.in_proj.weight",    "blocks.3.attn.conv1d.weight",
      "blocks.3.attn.conv1d.bias",       "blocks.3.attn.x_proj.weight",
      "blocks.3.attn.dt_proj.weight",    "blocks.3.attn.dt_proj.bias",
      "blocks.3.attn.A_log",             "blocks.3.attn.D",
      "blocks.3.attn.bwd.conv1d.weight", "blocks.3.attn.bwd.conv1d.bias",
      "blocks.3.attn.bwd.x_proj.weight", "blocks.3.attn.bwd.dt_proj.weight",
      "blocks.3.attn.bwd.dt_proj.bias",  "blocks.3.attn.bwd.A_log",
      "blocks.3.attn.bwd.D",             "blocks.3.attn.proj.weight",
      "blocks.3.attn.proj.bias"};
  REQUIRE(names == want);
  REQUIRE(decay == std::vector<bool>{true, true, false, true, true, false, false, false, true,
                                     false, true, true, false, false, false, true, false});
  REQUIRE(m.proj_param_offset() + 8 * 16 + 8 == m.param_count());
}

TEST_CASE("SelectiveSsm init writes S4D-real A and the inverse-softplus dt bias",
          "[mixer][ssm_selective]") {
  SelectiveSsm<double> m({.dim = 8, .state = 5, .dt_min = 1e-3, .dt_max = 1e-1});
  std::vector<double> p(m.param_count(), -7.0);
  Rng rng(11);
  m.init(ParamsView<double, Host>{p.data(), p.size()}, rng);
  int custom = 0;
  m.visit_params(
      [&](const ParamInfo& i) {
        if (i.init != Init::custom) return;
        ++custom;
        const double* v = p.data() + i.offset;
        if (i.name.ends_with("A_log")) {
          for (index_t e = 0; e < 8; ++e)
            for (index_t s = 0; s < 5; ++s) REQUIRE(v[e * 5 + s] == Approx(std::log(double(s + 1))));
        } else {
          REQUIRE(i.name.ends_with("dt_proj.bias"));
          for (std::size_t k = 0; k < i.count; ++k) {
            const double dt = std::log1p(std::exp(v[k]));  // softplus
            REQUIRE(dt >= 1e-3 * (1 - 1e-9));
            REQUIRE(dt <= 1e-1 * (1 + 1e-9));
          }
        }
      },
      "", 0);
  REQUIRE(custom == 4);  // A_log and dt_proj.bias, both directions
}

TEST_CASE("SelectiveSsm names the widths it expected and found", "[mixer][ssm_selective]") {
  SelectiveSsm<float> m({.dim = 8});
  Layout out;
  REQUIRE_THROWS_WITH(m.plan(Layout::dense(1, 3, 6), out),
                      Catch::Contains("expected width 8") && Catch::Contains("found 6"));
  REQUIRE_THROWS_WITH(SelectiveSsm<float>({.dim = 8, .state = 0}), Catch::Contains("state=0"));
  REQUIRE_THROWS_WITH(SelectiveSsm<float>({.dim = 8, .dt_min = 0.5, .dt_max = 0.1}),
                      Catch::Contains("dt_min <= dt_max"));
}

TEST_CASE("SelectiveSsm is finite over 16384 tokens in float and allocates nothing when warm",
          "[mixer][ssm_selective]") {
  const index_t D = 4, N = 16384;
  SelectiveSsm<float> m({.dim = D, .state = 16});
  std::vector<float> p(m.param_count());
  Rng rng(5);
  m.visit_params(
      [&](const ParamInfo& i) {
        for (std::size_t k = 0; k < i.count; ++k) p[i.offset + k] = float(rng.normal() * 0.5);
      },
      "", 0);
  m.init(ParamsView<float, Host>{p.data(), p.size()}, rng);
  const Layout l = Layout::dense(1, N, D);
  std::vector<float> x(l.size()), dy(l.size());
  for (auto& v : x) v = float(rng.normal() * 3);
  for (auto& v : dy) v = float(rng.normal());
  SelectiveSsm<float>::Ctx<Host> ctx;
  const auto a = run(m, p, l, x, dy, nullptr, ctx);
  const std::size_t allocations = Buffer<float>::allocation_count();
  const auto b = run(m, p, l, x, dy, nullptr, ctx);
  REQUIRE(Buffer<float>::allocation_count() == allocations);
  for (const auto* v : {&b.y, &b.dx, &b.g})
    for (float f : *v) REQUIRE(std::isfinite(f));
  REQUIRE(a.y == b.y);
}

TEST_CASE("SelectiveSsm matches a PyTorch loop on a masked, snake-ordered batch",
          "[reference][mixer][ssm_selective]") {
  const auto f = io::read_safetensors(test_util::fixture("mixers/ssm_selective.safetensors"));
  const index_t B = 2, N = 10, D = 8;
  SelectiveSsm<float> m({.dim = D, .expand = 2, .state = 4, .conv = 3, .dt_rank = 2,
                         .bidirectional = true, .order = kSnakeMiddle});
  std::vector<float> p(m.param_count());
  std::vector<ParamInfo> infos;
  m.visit_params([&](const ParamInfo& i) { infos.push_back(i); }, "", 0);
  for (const auto& i : infos) {
    const auto v = f.at(i.name).to_vector<float>();
    REQUIRE(v.size() == i.count);
    std::copy(v.begin(), v.end(), p.begin() + static_cast<std::ptrdiff_t>(i.offset));
  }
  const auto x = f.at("x").to_vector<float>();
  const auto keep = f.at("keep").to_vector<std::uint8_t>();
  const auto dy = f.at("dy").to_vector<float>();
  const Layout l = Layout::dense(B, N, D);
  const auto r = run(m, p, l, x, dy, keep.data());
  test_util::require_close(r.y.data(), f.at("y").to_vector<float>(), 1e-4, "y");
  test_util::require_close(r.pre.data(), f.at("pre").to_vector<float>(), 1e-4, "pre");
  test_util::require_close(r.dx.data(), f.at("grad.x").to_vector<float>(), 1e-4, "grad.x");
  for (const auto& i : infos) {
    const auto ref = f.at("grad." + i.name).to_vector<float>();
    test_util::require_close(r.g.data() + i.offset, ref, 1e-4, "grad." + i.name);
  }
}
