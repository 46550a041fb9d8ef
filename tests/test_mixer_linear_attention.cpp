// Linear attention (mixers/linear_attention.hpp): every feature map passes the conformance
// test, with and without keep-masks, on ragged batches; parameter counts are exact; Elu1 and
// Hedgehog match PyTorch (tests/reference/mixers/linear_attention.py); a student starts from
// the teacher attention's qkv and proj; Hedgehog stays finite where exp overflows float.
#include <cmath>
#include <string>
#include <vector>

#include "conformance.hpp"
#include "seqswap/io/safetensors.hpp"
#include "seqswap/mixers/linear_attention.hpp"
#include "test_util.hpp"

using namespace seqswap;
using conformance::check_layer;
using mixers::LinearAttention;
namespace feature = mixers::feature;
using Host = backend::Host;

namespace {

template <class Feature>
void check_conforms() {
  LinearAttention<double, Feature> a({.dim = 6, .heads = 2, .qkv_bias = true, .name = "attn"});
  for (const auto& in : conformance::standard_layouts(6)) {
    check_layer(a, in, {.mixer = true});
    check_layer(a, in, {.keep = conformance::some_mask(in), .mixer = true});
  }
}

template <class M>
std::vector<ParamInfo> infos_of(const M& m, const std::string& prefix = "") {
  std::vector<ParamInfo> out;
  m.visit_params([&](ParamInfo i) { out.push_back(std::move(i)); }, prefix, 0);
  return out;
}

// Case `name` of the fixture ("elu1" or "hedgehog"); parameters are loaded by walking
// visit_params, so the file's names are checked too.
template <class Feature>
void check_fixture(const std::string& name, bool masked) {
  const auto f = io::read_safetensors(test_util::fixture("mixers/linear_attention.safetensors"));
  const index_t B = 2, N = 7, D = 12, H = 3;
  LinearAttention<float, Feature> a({.dim = D, .heads = H, .qkv_bias = true, .eps = 1e-6, .name = "attn"});
  std::vector<float> p(a.param_count());
  const auto infos = infos_of(a);
  for (const auto& i : infos) {
    const auto v = f.at(name + "." + i.name).template to_vector<float>();
    REQUIRE(v.size() == i.count);
    std::copy(v.begin(), v.end(), p.begin() + static_cast<std::ptrdiff_t>(i.offset));
  }
  const auto x = f.at(name + ".x").to_vector<float>();
  const auto dy = f.at(name + ".dy").to_vector<float>();
  std::vector<std::uint8_t> keep;
  if (masked) keep = f.at(name + ".keep").to_vector<std::uint8_t>();
  const std::uint8_t* kp = masked ? keep.data() : nullptr;
  const Layout l = Layout::dense(B, N, D);
  typename LinearAttention<float, Feature>::template Ctx<Host> ctx;
  std::vector<float> y(l.size()), dx(l.size()), g(p.size(), 0.0f);
  a.forward(ParamsView<const float, Host>{p.data(), p.size()}, view_of<const float>(x.data(), l, kp),
            view_of<float>(y.data(), l, kp), ctx);
  test_util::require_close(y.data(), f.at(name + ".y").to_vector<float>(), 1e-4, name + ".y");
  test_util::require_close(ctx.pre_projection().data, f.at(name + ".pre").to_vector<float>(), 1e-4,
                           name + ".pre");
  a.backward(ParamsView<const float, Host>{p.data(), p.size()}, ctx,
             view_of<const float>(dy.data(), l, kp), view_of<float>(dx.data(), l, kp),
             ParamsView<float, Host>{g.data(), g.size()});
  test_util::require_close(dx.data(), f.at(name + ".grad.x").to_vector<float>(), 1e-4, name + ".grad.x");
  for (const auto& i : infos) {
    const auto ref = f.at(name + ".grad." + i.name).template to_vector<float>();
    REQUIRE(ref.size() == i.count);
    test_util::require_close(g.data() + i.offset, ref, 1e-4, name + ".grad." + i.name);
  }
}

// The closed form: qkv 3D² (+ 3D bias), Hedgehog's W_h H d² = D²/H, proj D² + D.
std::size_t expected_params(index_t D, index_t H, bool qkv_bias, bool hedgehog) {
  return static_cast<std::size_t>(3 * D * D + (qkv_bias ? 3 * D : 0) + (hedgehog ? D * D / H : 0) +
                                  D * D + D);
}

template <class Feature>
void check_param_count(index_t D, index_t H, bool qkv_bias, bool hedgehog) {
  LinearAttention<double, Feature> a({.dim = D, .heads = H, .qkv_bias = qkv_bias});
  std::size_t sum = 0, next = 0;
  for (const auto& i : infos_of(a, "blocks.3")) {
    REQUIRE(i.offset == next);  // layout order, no gaps
    REQUIRE(i.count == numel(i.shape));
    sum += i.count;
    next = i.offset + i.count;
  }
  REQUIRE(sum == a.param_count());
  REQUIRE(a.param_count() == expected_params(D, H, qkv_bias, hedgehog));
}

}  // namespace

TEST_CASE("LinearAttention conforms with every feature map", "[conformance][mixer][linear_attention]") {
  SECTION("elu1") { check_conforms<feature::Elu1>(); }
  SECTION("relu") { check_conforms<feature::Relu>(); }
  SECTION("hedgehog") { check_conforms<feature::Hedgehog>(); }
}

TEST_CASE("LinearAttention parameter count is exact", "[mixer][linear_attention]") {
  for (bool bias : {true, false}) {
    check_param_count<feature::Elu1>(12, 3, bias, false);
    check_param_count<feature::Relu>(12, 3, bias, false);
    check_param_count<feature::Hedgehog>(12, 3, bias, true);
    check_param_count<feature::Hedgehog>(192, 3, bias, true);
  }
  // the names the model's relayout-by-name relies on
  LinearAttention<float, feature::Hedgehog> a({.dim = 12, .heads = 3});
  const auto infos = infos_of(a, "blocks.3");
  REQUIRE(infos.size() == 5);
  CHECK(infos[0].name == "blocks.3.attn.qkv.weight");
  CHECK(infos[1].name == "blocks.3.attn.qkv.bias");
  CHECK(infos[2].name == "blocks.3.attn.feature.weight");
  CHECK(infos[2].shape == std::vector<index_t>{3, 4, 4});
  CHECK(infos[3].name == "blocks.3.attn.proj.weight");
  CHECK(infos[4].name == "blocks.3.attn.proj.bias");
  CHECK(infos[3].offset == a.proj_param_offset());
  CHECK(std::string(a.kind_name()) == "linear_attention");
  CHECK_THROWS_AS(LinearAttention<float>({.dim = 10, .heads = 3}), Error);
  Layout out;
  CHECK_THROWS_AS(a.plan(Layout::dense(1, 4, 8), out), Error);
}

TEST_CASE("LinearAttention matches PyTorch", "[reference][mixer][linear_attention]") {
  SECTION("elu1, no mask") { check_fixture<feature::Elu1>("elu1", false); }
  SECTION("hedgehog, keep-mask") { check_fixture<feature::Hedgehog>("hedgehog", true); }
}

TEST_CASE("Hedgehog init writes the identity per head", "[mixer][linear_attention]") {
  LinearAttention<double, feature::Hedgehog> a({.dim = 12, .heads = 3});
  std::vector<double> p(a.param_count(), 7.0);
  a.init(ParamsView<double, Host>{p.data(), p.size()});
  for (const auto& i : infos_of(a)) {
    if (i.name != "attn.feature.weight") {
      for (std::size_t k = 0; k < i.count; ++k) REQUIRE(p[i.offset + k] == 7.0);  // untouched
      continue;
    }
    REQUIRE(i.init == Init::custom);
    std::vector<double> from_info(i.count, 7.0);  // what Model::init writes
    Rng rng(1);
    REQUIRE(static_cast<bool>(i.custom_init));
    i.custom_init(from_info.data(), i.count, rng);
    for (index_t h = 0; h < 3; ++h)
      for (index_t r = 0; r < 4; ++r)
        for (index_t c = 0; c < 4; ++c) {
          const auto k = static_cast<std::size_t>((h * 4 + r) * 4 + c);
          REQUIRE(p[i.offset + k] == (r == c ? 1.0 : 0.0));
          REQUIRE(from_info[k] == (r == c ? 1.0 : 0.0));
        }
  }
}

TEST_CASE("LinearAttention starts from the teacher attention's qkv and proj", "[mixer][linear_attention]") {
  const index_t D = 12, H = 3;
  attention::SoftmaxAttention<double> teacher({.dim = D, .heads = H, .qkv_bias = true, .name = "attn"});
  LinearAttention<double, feature::Hedgehog> student({.dim = D, .heads = H, .qkv_bias = true});
  std::vector<double> tp(teacher.param_count()), sp(student.param_count(), 0.0);
  Rng rng(3);
  for (auto& v : tp) v = rng.normal();
  student.init(ParamsView<double, Host>{sp.data(), sp.size()});
  mixers::init_from_attention(teacher, ParamsView<const double, Host>{tp.data(), tp.size()}, student,
                              ParamsView<double, Host>{sp.data(), sp.size()});
  const auto tinfo = infos_of(teacher);
  std::size_t copied = 0;
  for (const auto& s : infos_of(student)) {
    if (s.name == "attn.feature.weight") {  // left as init() wrote it
      REQUIRE(sp[s.offset] == 1.0);
      REQUIRE(sp[s.offset + 1] == 0.0);
      continue;
    }
    const ParamInfo* t = nullptr;
    for (const auto& i : tinfo)
      if (i.name == s.name) t = &i;
    REQUIRE(t != nullptr);
    REQUIRE(t->shape == s.shape);
    for (std::size_t k = 0; k < s.count; ++k) REQUIRE(sp[s.offset + k] == tp[t->offset + k]);
    copied += s.count;
  }
  REQUIRE(copied == teacher.param_count());

  LinearAttention<double, feature::Elu1> other_heads({.dim = D, .heads = 4});
  std::vector<double> op(other_heads.param_count());
  CHECK_THROWS_AS(mixers::init_from_attention(teacher, ParamsView<const double, Host>{tp.data(), tp.size()},
                                              other_heads, ParamsView<double, Host>{op.data(), op.size()}),
                  Error);
}

// With |x W_h| up to ~170, exp overflows float (> 88.7) and the plain formula gives inf/inf;
// the shifted features stay finite and match the unshifted formula evaluated in double.
TEST_CASE("Hedgehog stays finite at N = 16384 with large exponents", "[mixer][linear_attention]") {
  const index_t N = 16384, D = 8, H = 2, d = D / H;
  LinearAttention<float, feature::Hedgehog> a({.dim = D, .heads = H});
  std::vector<float> p(a.param_count(), 0.0f);
  a.init(ParamsView<float, Host>{p.data(), p.size()});
  Rng rng(11);
  const auto infos = infos_of(a);
  float* wqkv = p.data() + infos[0].offset;  // (3D, D): q and k rows large, v rows small
  for (index_t r = 0; r < 3 * D; ++r)
    for (index_t c = 0; c < D; ++c) wqkv[r * D + c] = float(rng.normal() * (r < 2 * D ? 14.0 : 0.3));
  float* wproj = p.data() + infos[3].offset;
  for (index_t r = 0; r < D; ++r) wproj[r * D + r] = 1.0f;
  std::vector<float> x(static_cast<std::size_t>(N * D));
  for (auto& v : x) v = float(rng.normal());
  const Layout l = Layout::dense(1, N, D);
  LinearAttention<float, feature::Hedgehog>::Ctx<Host> ctx;
  std::vector<float> y(l.size());
  a.forward(ParamsView<const float, Host>{p.data(), p.size()}, view_of<const float>(x.data(), l),
            view_of<float>(y.data(), l), ctx);

  // the unshifted formula in double: y_i = φ(q_i)ᵀ S / (φ(q_i)ᵀ z + eps)
  std::vector<double> qkv(static_cast<std::size_t>(N * 3 * D), 0.0), ref(static_cast<std::size_t>(N * D));
  double max_u = 0;
  for (index_t t = 0; t < N; ++t)
    for (index_t r = 0; r < 3 * D; ++r)
      for (index_t c = 0; c < D; ++c) qkv[t * 3 * D + r] += double(wqkv[r * D + c]) * double(x[t * D + c]);
  for (index_t h = 0; h < H; ++h) {
    std::vector<double> S(static_cast<std::size_t>(2 * d * d), 0.0), z(static_cast<std::size_t>(2 * d), 0.0);
    auto phi = [&](index_t t, index_t part, index_t e) {  // W_h = I: u = q or k itself
      const double u = qkv[t * 3 * D + part * D + h * d + e];
      max_u = std::max(max_u, std::abs(u));
      return std::pair{std::exp(u), std::exp(-u)};
    };
    for (index_t j = 0; j < N; ++j)
      for (index_t e = 0; e < d; ++e) {
        const auto [fp, fm] = phi(j, 1, e);
        z[e] += fp;
        z[d + e] += fm;
        for (index_t c = 0; c < d; ++c) {
          const double v = qkv[j * 3 * D + 2 * D + h * d + c];
          S[e * d + c] += fp * v;
          S[(d + e) * d + c] += fm * v;
        }
      }
    for (index_t i = 0; i < N; ++i) {
      std::vector<double> num(static_cast<std::size_t>(d), 0.0);
      double den = 1e-6;
      for (index_t e = 0; e < d; ++e) {
        const auto [fp, fm] = phi(i, 0, e);
        den += fp * z[e] + fm * z[d + e];
        for (index_t c = 0; c < d; ++c) num[c] += fp * S[e * d + c] + fm * S[(d + e) * d + c];
      }
      for (index_t c = 0; c < d; ++c) ref[i * D + h * d + c] = num[c] / den;
    }
  }
  INFO("largest |u| = " << max_u);
  REQUIRE(max_u > 100.0);  // the plain float formula would overflow
  std::size_t non_finite = 0;
  for (float v : y) non_finite += std::isfinite(v) ? 0 : 1;
  REQUIRE(non_finite == 0);
  test_util::require_close(ctx.pre_projection().data, ref, 1e-3, "pre (N = 16384)");
}
