// The retention mixer (mixers/retention.hpp) passes the conformance test (one and two heads,
// without a qkv bias, a strong decay, a non-identity scan order), counts its parameters exactly,
// its two recurrences equal the quadratic closed form (computed here directly), a masked batch
// equals the packed one, it stays finite at N = 4097 and agrees there with double precision, and
// it matches PyTorch (tests/reference/mixers/retention.py).
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "conformance.hpp"
#include "seqswap/io/safetensors.hpp"
#include "seqswap/mixers/retention.hpp"
#include "mixer_fixture.hpp"
#include "test_util.hpp"

using namespace seqswap;
using conformance::check_layer;
using mixers::Retention;
using mixers::RetentionOptions;
using Host = backend::Host;

namespace {

template <class M>
std::vector<ParamInfo> infos_of(const M& m, const std::string& prefix = "") {
  std::vector<ParamInfo> out;
  m.visit_params([&](ParamInfo i) { out.push_back(std::move(i)); }, prefix, 0);
  return out;
}

// Offset of parameter `name` in m's arena, or -1 when m has none of that name.
template <class M>
std::ptrdiff_t offset_of(const M& m, const std::string& name) {
  for (const auto& i : infos_of(m))
    if (i.name == name) return static_cast<std::ptrdiff_t>(i.offset);
  return -1;
}

// The quadratic (parallel) form, straight from the definition and independent of the
// recurrences: per sequence, the kept tokens in scan order re-indexed 0..m-1; per head h,
//   pre_i = Σ_j γ_h^{|i−j|} (q_i · k_j) v_j / Σ_j γ_h^{|i−j|},   γ_h = 1 − 2^{−(decay_offset + h)}
// with q, k, v = split(x W_qkvᵀ + b), q / √d. Returns pre (rows, D) in token order, masked rows 0.
std::vector<double> closed_form(const Retention<double>& m, const std::vector<double>& p,
                                const std::vector<double>& x, const Layout& l, const std::uint8_t* keep) {
  const RetentionOptions& o = m.options();
  const index_t D = o.dim, H = o.heads, d = D / H, rows = l.total();
  const std::ptrdiff_t w = offset_of(m, "attn.qkv.weight"), b = offset_of(m, "attn.qkv.bias");
  REQUIRE(w >= 0);
  REQUIRE((b >= 0) == o.qkv_bias);
  std::vector<double> qkv(static_cast<std::size_t>(rows * 3 * D));
  for (index_t t = 0; t < rows; ++t)
    for (index_t r = 0; r < 3 * D; ++r) {
      double s = b >= 0 ? p[static_cast<std::size_t>(b + r)] : 0.0;
      for (index_t j = 0; j < D; ++j) s += p[static_cast<std::size_t>(w + r * D + j)] * x[t * D + j];
      qkv[t * 3 * D + r] = r < D ? s / std::sqrt(double(d)) : s;
    }
  std::vector<double> pre(static_cast<std::size_t>(rows * D), 0.0);
  for (index_t s = 0; s < l.batch; ++s) {
    std::vector<index_t> kept;  // rows of the kept tokens, in scan order
    for (index_t t : o.order.permutation(l.length(s)))
      if (!keep || keep[l.offsets[s] + t]) kept.push_back(l.offsets[s] + t);
    const auto n = static_cast<index_t>(kept.size());
    for (index_t h = 0; h < H; ++h) {
      const double gamma = 1.0 - std::pow(2.0, -(o.decay_offset + double(h)));
      for (index_t i = 0; i < n; ++i) {
        double c = 0;
        for (index_t j = 0; j < n; ++j) c += std::pow(gamma, double(std::abs(i - j)));
        const double* q = &qkv[kept[i] * 3 * D + h * d];
        double* out = &pre[kept[i] * D + h * d];
        for (index_t j = 0; j < n; ++j) {
          const double* k = &qkv[kept[j] * 3 * D + D + h * d];
          const double* v = &qkv[kept[j] * 3 * D + 2 * D + h * d];
          double qk = 0;
          for (index_t e = 0; e < d; ++e) qk += q[e] * k[e];
          const double wgt = std::pow(gamma, double(std::abs(i - j))) / c;
          for (index_t e = 0; e < d; ++e) out[e] += wgt * qk * v[e];
        }
      }
    }
  }
  return pre;
}

}  // namespace

TEST_CASE("Retention conforms", "[conformance][mixer][retention]") {
  const index_t D = 4;
  std::vector<RetentionOptions> configs = {
      {.dim = D, .heads = 1},
      {.dim = D, .heads = 2},
      {.dim = D, .heads = 2, .qkv_bias = false, .decay_offset = 1.0},
      {.dim = D, .heads = 2, .decay_offset = 1.0, .order = {order::Grid::snake, order::Cls::middle}},
  };
  for (const auto& o : configs) {
    Retention<double> m(o);
    for (const auto& in : conformance::standard_layouts(D)) {
      check_layer(m, in, {.mixer = true});
      check_layer(m, in, {.keep = conformance::some_mask(in), .mixer = true});
    }
  }
}

TEST_CASE("Retention parameter count", "[mixer][retention]") {
  for (index_t D : {4, 6, 12})
    for (index_t H : {1, 2})
      for (bool bias : {true, false}) {
        Retention<float> m({.dim = D, .heads = H, .qkv_bias = bias});
        // qkv 3D·D (+ 3D bias), proj D·D + D
        const auto formula = static_cast<std::size_t>(3 * D * D + (bias ? 3 * D : 0) + D * D + D);
        std::size_t sum = 0;
        std::vector<std::string> names;
        for (const auto& i : infos_of(m, "blocks.0")) {
          REQUIRE(i.count == numel(i.shape));
          REQUIRE(i.offset == sum);  // layout order, no gaps
          sum += i.count;
          names.push_back(i.name);
        }
        REQUIRE(m.param_count() == formula);
        REQUIRE(sum == formula);
        std::vector<std::string> expect = {"blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias",
                                           "blocks.0.attn.proj.weight", "blocks.0.attn.proj.bias"};
        if (!bias) expect.erase(expect.begin() + 1);
        REQUIRE(names == expect);
      }
  // attention's names and shapes: a student starts from the teacher's qkv and proj
  Retention<float> m({.dim = 6, .heads = 2});
  const auto infos = infos_of(m, "blocks.3");
  REQUIRE(infos.size() == 4);
  CHECK(infos[0].shape == std::vector<index_t>{18, 6});
  CHECK(infos[1].shape == std::vector<index_t>{18});
  CHECK(infos[2].shape == std::vector<index_t>{6, 6});
  CHECK(infos[2].offset == m.proj_param_offset());
  CHECK(infos[3].shape == std::vector<index_t>{6});
  CHECK(std::string(m.kind_name()) == "retention");
  CHECK(m.width() == 6);
  CHECK_THROWS_AS(Retention<float>({.dim = 10, .heads = 3}), Error);
  Layout out;
  CHECK_THROWS_AS(m.plan(Layout::dense(1, 4, 8), out), Error);
}

TEST_CASE("Retention: the recurrences match the closed form", "[mixer][retention]") {
  const index_t D = 6;
  // 1+3x3, 1+4x4, one token, 1+2x2, and a length that is no CLS + square grid (stored order)
  const Layout l = Layout::ragged({10, 17, 1, 5, 7}, D);
  Rng rng(7);
  const auto x = test_util::random_vector<double>(l.size(), rng, 1.0);
  const auto keep = conformance::some_mask(l);
  const order::ScanOrder identity{}, snake{order::Grid::snake, order::Cls::middle};
  for (const auto& so : {identity, snake})
    for (index_t H : {1, 2})
      for (double c : {1.0, 3.0}) {
        Retention<double> m({.dim = D, .heads = H, .qkv_bias = H == 2, .decay_offset = c, .order = so});
        const auto p = test_util::random_vector<double>(m.param_count(), rng, 0.5);
        for (const std::uint8_t* k : {static_cast<const std::uint8_t*>(nullptr), keep.data()}) {
          INFO("order " << (so.is_identity() ? "identity" : "snake") << ", heads " << H << ", decay_offset "
                        << c << (k ? ", keep-mask" : ", no mask"));
          const auto r = test_util::run_mixer(m, p, x, l, k);
          const auto ref = closed_form(m, p, x, l, k);
          test_util::require_close(r.pre.data(), ref, 1e-10, "pre vs closed form");
          if (k)
            for (index_t t = 0; t < l.total(); ++t)
              if (!k[t])
                for (index_t j = 0; j < D; ++j) REQUIRE(r.pre[t * D + j] == 0.0);
        }
      }
  // Not vacuous: the scan order changes the result (distances differ), and so does the decay.
  Retention<double> plain({.dim = D, .heads = 2, .decay_offset = 1.0});
  Retention<double> ordered({.dim = D, .heads = 2, .decay_offset = 1.0, .order = snake});
  Retention<double> slow({.dim = D, .heads = 2, .decay_offset = 8.0});
  const auto p = test_util::random_vector<double>(plain.param_count(), rng, 0.5);
  const auto rp = test_util::run_mixer(plain, p, x, l, keep.data());
  REQUIRE(test_util::rel_error(test_util::run_mixer(ordered, p, x, l, keep.data()).pre.data(), rp.pre) > 1e-3);
  REQUIRE(test_util::rel_error(test_util::run_mixer(slow, p, x, l, keep.data()).pre.data(), rp.pre) > 1e-3);
}

TEST_CASE("Retention: a masked batch equals the packed batch of its kept tokens", "[mixer][retention]") {
  const index_t D = 4;
  const Layout l = Layout::ragged({7, 12, 3}, D);  // no CLS + square grid: stored order
  Retention<double> m({.dim = D, .heads = 2, .decay_offset = 1.0});
  Rng rng(9);
  const auto p = test_util::random_vector<double>(m.param_count(), rng, 0.5);
  const auto x = test_util::random_vector<double>(l.size(), rng, 1.0);
  const auto keep = conformance::some_mask(l);
  std::vector<index_t> lengths, kept_rows;
  std::vector<double> xp;
  for (index_t b = 0; b < l.batch; ++b) {
    index_t n = 0;
    for (index_t t = l.offsets[b]; t < l.offsets[b + 1]; ++t)
      if (keep[t]) {
        ++n;
        kept_rows.push_back(t);
        xp.insert(xp.end(), x.begin() + t * D, x.begin() + (t + 1) * D);
      }
    lengths.push_back(n);
  }
  const Layout lp = Layout::ragged(lengths, D);
  const auto masked = test_util::run_mixer(m, p, x, l, keep.data()), packed = test_util::run_mixer(m, p, xp, lp);
  std::vector<double> gathered;
  for (index_t t : kept_rows) gathered.insert(gathered.end(), masked.y.begin() + t * D, masked.y.begin() + (t + 1) * D);
  test_util::require_close(gathered.data(), packed.y, 1e-12, "masked y (kept rows) vs packed y");
}

TEST_CASE("Retention is stable for N = 4097", "[mixer][retention]") {
  const index_t D = 8, N = 4097;  // CLS + 64x64
  const Layout l = Layout::dense(1, N, D);
  const auto keep = conformance::some_mask(l);
  for (double c : {5.0, 12.0}) {  // RetNet's schedule, and γ up to 1 − 2⁻¹³ (c_t near 2¹⁴)
    INFO("decay_offset " << c);
    const RetentionOptions o{.dim = D, .heads = 2, .decay_offset = c, .order = {order::Grid::snake, order::Cls::middle}};
    Retention<float> m(o);
    Retention<double> md(o);
    Rng rng(11);
    const auto p = test_util::random_vector<float>(m.param_count(), rng, 0.5);
    const auto x = test_util::random_vector<float>(l.size(), rng, 2.0);
    const auto dy = test_util::random_vector<float>(l.size(), rng, 1.0);
    Retention<float>::Ctx<Host> ctx;
    std::vector<float> y(l.size()), dx(l.size()), g(p.size(), 0.0f);
    m.forward(ParamsView<const float, Host>{p.data(), p.size()}, view_of<const float>(x.data(), l, keep.data()),
              view_of<float>(y.data(), l, keep.data()), ctx);
    m.backward(ParamsView<const float, Host>{p.data(), p.size()}, ctx,
               view_of<const float>(dy.data(), l, keep.data()), view_of<float>(dx.data(), l, keep.data()),
               ParamsView<float, Host>{g.data(), g.size()});
    for (float v : y) REQUIRE(std::isfinite(v));
    for (float v : dx) REQUIRE(std::isfinite(v));
    for (float v : g) REQUIRE(std::isfinite(v));
    // The same values in double: the float recurrences lose no more than rounding (a numpy
    // transcription of both passes measured about 1.5e-6 on data like this).
    const std::vector<double> pd(p.begin(), p.end()), xd(x.begin(), x.end()), dyd(dy.begin(), dy.end());
    Retention<double>::Ctx<Host> cd;
    std::vector<double> yd(l.size()), dxd(l.size()), gd(pd.size(), 0.0);
    md.forward(ParamsView<const double, Host>{pd.data(), pd.size()}, view_of<const double>(xd.data(), l, keep.data()),
               view_of<double>(yd.data(), l, keep.data()), cd);
    md.backward(ParamsView<const double, Host>{pd.data(), pd.size()}, cd,
                view_of<const double>(dyd.data(), l, keep.data()), view_of<double>(dxd.data(), l, keep.data()),
                ParamsView<double, Host>{gd.data(), gd.size()});
    test_util::require_close(y.data(), yd, 1e-4, "float vs double y");
    test_util::require_close(dx.data(), dxd, 1e-4, "float vs double dx");
    test_util::require_close(g.data(), gd, 1e-4, "float vs double parameter gradient");
  }
}

TEST_CASE("Retention matches PyTorch", "[reference][mixer][retention]") {
  const auto f = io::read_safetensors(test_util::fixture("mixers/retention.safetensors"));
  const index_t B = 2, N = 10, D = 6;
  Retention<float> m({.dim = D, .heads = 2, .qkv_bias = true, .decay_offset = 1.0,
                      .order = {order::Grid::snake, order::Cls::middle}});
  test_util::check_mixer_fixture(m, f, B, N, D);
}
