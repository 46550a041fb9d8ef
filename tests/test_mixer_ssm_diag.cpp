// The diagonal SSM mixer passes the conformance test (bidirectional, forward-only, a
// non-identity scan order), counts its parameters exactly, its scan equals the convolution
// form y = K * u + D u, init() writes the S4D-Real initialisation, and it matches PyTorch
// (tests/reference/mixers/ssm_diag.py).
#include <cmath>

#include "conformance.hpp"
#include "seqswap/io/safetensors.hpp"
#include "seqswap/mixers/ssm_diag.hpp"
#include "mixer_fixture.hpp"
#include "test_util.hpp"

using namespace seqswap;
using conformance::check_layer;
using mixers::DiagonalSsm;
using mixers::DiagonalSsmOptions;
using Host = backend::Host;

namespace {

// Offset of the parameter tensor `name` (prefix "") in m's slice.
template <class T>
std::size_t offset_of(const DiagonalSsm<T>& m, const std::string& name) {
  std::size_t off = 0;
  bool found = false;
  m.visit_params([&](const ParamInfo& i) {
    if (i.name == name) {
      off = i.offset;
      found = true;
    }
  }, "", 0);
  REQUIRE(found);
  return off;
}

}  // namespace

TEST_CASE("DiagonalSsm conforms", "[conformance][mixer][ssm_diag]") {
  const index_t D = 3;
  std::vector<DiagonalSsmOptions> configs = {
      {.dim = D, .state = 4},
      {.dim = D, .state = 2, .bidirectional = false},
      {.dim = D, .state = 3, .order = {order::Grid::snake, order::Cls::middle}},
  };
  for (const auto& o : configs) {
    DiagonalSsm<double> m(o);
    for (const auto& in : conformance::standard_layouts(D)) {
      check_layer(m, in, {.mixer = true});
      check_layer(m, in, {.keep = conformance::some_mask(in), .mixer = true});
    }
  }
}

TEST_CASE("DiagonalSsm parameter count", "[mixer][ssm_diag]") {
  for (index_t D : {3, 8})
    for (index_t Ns : {1, 16})
      for (bool bi : {true, false}) {
        DiagonalSsm<float> m({.dim = D, .state = Ns, .bidirectional = bi});
        const index_t dirs = bi ? 2 : 1;
        // 2D² + 3D + directions · D (3 N_s + 1)
        const auto formula = static_cast<std::size_t>(2 * D * D + 3 * D + dirs * D * (3 * Ns + 1));
        std::size_t sum = 0;
        std::vector<std::string> names;
        m.visit_params([&](const ParamInfo& i) {
          REQUIRE(i.count == numel(i.shape));
          REQUIRE(i.offset == sum);
          sum += i.count;
          names.push_back(i.name);
        }, "blocks.2", 0);
        REQUIRE(m.param_count() == formula);
        REQUIRE(sum == formula);
        std::vector<std::string> expect = {"in_proj.weight", "in_proj.bias", "A_log", "B", "C",
                                           "log_dt", "D"};
        if (bi)
          for (const char* n : {"bwd_A_log", "bwd_B", "bwd_C", "bwd_log_dt"}) expect.push_back(n);
        expect.push_back("proj.weight");
        expect.push_back("proj.bias");
        REQUIRE(names.size() == expect.size());
        for (std::size_t i = 0; i < names.size(); ++i) REQUIRE(names[i] == "blocks.2.attn." + expect[i]);
      }
}

TEST_CASE("DiagonalSsm: the scan equals the convolution form", "[mixer][ssm_diag]") {
  const index_t D = 3, Ns = 4, N = 40;
  for (bool bi : {false, true}) {
    DiagonalSsm<double> m({.dim = D, .state = Ns, .bidirectional = bi});
    Rng rng(17);
    std::vector<double> p(m.param_count());
    for (auto& v : p) v = rng.normal();
    m.init(ParamsView<double, Host>{p.data(), p.size()}, rng);
    // perturb A_log and log_dt away from the init so every (c, n) differs; make Δ sizeable so
    // that Ā^k spans a wide range over 40 tokens
    for (int d = 0; d < m.core().core().directions(); ++d) {
      const std::string pre = d == 0 ? "" : "bwd_";
      double* A_log = p.data() + offset_of(m, "attn." + pre + "A_log");
      double* log_dt = p.data() + offset_of(m, "attn." + pre + "log_dt");
      for (index_t j = 0; j < D * Ns; ++j) A_log[j] += 0.3 * rng.normal() - 1.0;
      for (index_t c = 0; c < D; ++c) log_dt[c] = std::log(0.2) + 0.5 * rng.normal();
    }
    // in_proj = identity, so u = x
    double* W = p.data() + offset_of(m, "attn.in_proj.weight");
    double* b = p.data() + offset_of(m, "attn.in_proj.bias");
    for (index_t i = 0; i < D * D; ++i) W[i] = (i % (D + 1) == 0) ? 1.0 : 0.0;
    for (index_t i = 0; i < D; ++i) b[i] = 0.0;

    const Layout l = Layout::dense(1, N, D);
    std::vector<double> x(l.size()), y(l.size());
    for (auto& v : x) v = rng.normal();
    DiagonalSsm<double>::Ctx<Host> ctx;
    m.forward(ParamsView<const double, Host>{p.data(), p.size()}, view_of<const double>(x.data(), l),
              view_of<double>(y.data(), l), ctx);

    // K[c, k] = Σ_n C[c, n] Ā[c, n]^k B̄[c, n], Ā = exp(Δ A), B̄ = (Ā - 1)/A · B
    auto kernel = [&](int d) {
      const std::string pre = d == 0 ? "" : "bwd_";
      const double* A_log = p.data() + offset_of(m, "attn." + pre + "A_log");
      const double* Bm = p.data() + offset_of(m, "attn." + pre + "B");
      const double* C = p.data() + offset_of(m, "attn." + pre + "C");
      const double* log_dt = p.data() + offset_of(m, "attn." + pre + "log_dt");
      std::vector<double> K(static_cast<std::size_t>(D * N), 0.0);
      for (index_t c = 0; c < D; ++c)
        for (index_t n = 0; n < Ns; ++n) {
          const double A = -std::exp(A_log[c * Ns + n]), dt = std::exp(log_dt[c]);
          const double abar = std::exp(dt * A), bbar = (abar - 1) / A * Bm[c * Ns + n];
          for (index_t k = 0; k < N; ++k)
            K[c * N + k] += C[c * Ns + n] * std::pow(abar, double(k)) * bbar;
        }
      return K;
    };
    const auto Kf = kernel(0);
    const auto Kb = bi ? kernel(1) : std::vector<double>();
    const double* skip = p.data() + offset_of(m, "attn.D");
    std::vector<double> conv(l.size());
    for (index_t t = 0; t < N; ++t)
      for (index_t c = 0; c < D; ++c) {
        double s = skip[c] * x[t * D + c];
        for (index_t k = 0; k <= t; ++k) s += Kf[c * N + k] * x[(t - k) * D + c];  // causal
        if (bi)
          for (index_t k = 0; t + k < N; ++k) s += Kb[c * N + k] * x[(t + k) * D + c];  // anti-causal
        conv[t * D + c] = s;
      }
    test_util::require_close(ctx.pre_projection().data, conv, 1e-12, "scan vs convolution");
  }
}

TEST_CASE("DiagonalSsm init writes S4D-Real A and log-uniform dt", "[mixer][ssm_diag]") {
  const index_t D = 5, Ns = 16;
  DiagonalSsm<float> m({.dim = D, .state = Ns});
  std::vector<float> p(m.param_count(), 0.0f);
  Rng rng(1);
  m.init(ParamsView<float, Host>{p.data(), p.size()}, rng);
  int customs = 0;
  m.visit_params([&](const ParamInfo& i) {
    if (i.init == Init::custom) ++customs;
    const bool ssm = i.name.find("A_log") != std::string::npos || i.name.find("log_dt") != std::string::npos;
    REQUIRE(ssm == (i.init == Init::custom));
    REQUIRE_FALSE((ssm && i.decay));
  }, "", 0);
  REQUIRE(customs == 4);
  for (const char* pre : {"", "bwd_"}) {
    const float* A_log = p.data() + offset_of(m, std::string("attn.") + pre + "A_log");
    const float* log_dt = p.data() + offset_of(m, std::string("attn.") + pre + "log_dt");
    for (index_t c = 0; c < D; ++c) {
      for (index_t n = 0; n < Ns; ++n) REQUIRE(A_log[c * Ns + n] == Approx(std::log(double(n + 1))));
      REQUIRE(log_dt[c] >= std::log(1e-3f));
      REQUIRE(log_dt[c] <= std::log(1e-1f));
    }
  }
}

TEST_CASE("DiagonalSsm matches PyTorch", "[reference][mixer][ssm_diag]") {
  const auto f = io::read_safetensors(test_util::fixture("mixers/ssm_diag.safetensors"));
  const index_t B = 2, N = 10, D = 4;
  DiagonalSsm<float> m({.dim = D, .state = 3, .order = {order::Grid::snake, order::Cls::middle}});
  test_util::check_mixer_fixture(m, f, B, N, D);
}
