// What the mixer tests share: one forward returning the output and the pre-projection tensor,
// random vectors, and the PyTorch-fixture check (load the mixer's parameters from the fixture
// by name, run forward and backward on its x / keep / dy (B, N, D), and require y, the
// pre-projection output, grad.x and every parameter gradient within `tol`, relative).
#pragma once
#include <string>
#include <vector>

#include "seqswap/core/rng.hpp"
#include "seqswap/io/safetensors.hpp"
#include "test_util.hpp"

namespace test_util {

template <class T>
struct MixerRun {
  std::vector<T> y, pre;
};

// Forward of mixer `m` on x (layout l, optional keep): its output and pre-projection tensor.
template <class M, class T = typename M::scalar_type>
MixerRun<T> run_mixer(const M& m, const std::vector<T>& p, const std::vector<T>& x, const seqswap::Layout& l,
                      const std::uint8_t* keep = nullptr) {
  using namespace seqswap;
  typename M::template Ctx<backend::Host> ctx;
  MixerRun<T> r;
  r.y.resize(l.size());
  m.forward(ParamsView<const T, backend::Host>{p.data(), p.size()}, view_of<const T>(x.data(), l, keep),
            view_of<T>(r.y.data(), l, keep), ctx);
  const auto pre = ctx.pre_projection();
  r.pre.assign(pre.data, pre.data + pre.total() * pre.dim);
  return r;
}

// n values drawn from N(0, scale²).
template <class T>
std::vector<T> random_vector(std::size_t n, seqswap::Rng& rng, double scale) {
  std::vector<T> v(n);
  for (auto& e : v) e = T(rng.normal() * scale);
  return v;
}

template <class M>
void check_mixer_fixture(const M& m, const seqswap::io::SafetensorsFile& f, seqswap::index_t B, seqswap::index_t N,
                         seqswap::index_t D, double tol = 1e-4) {
  using namespace seqswap;
  using Host = backend::Host;
  std::vector<float> p;
  std::vector<std::string> names;
  m.visit_params([&](const ParamInfo& i) {
    const auto v = f.at(i.name).to_vector<float>();
    REQUIRE(v.size() == i.count);
    p.insert(p.end(), v.begin(), v.end());
    names.push_back(i.name);
  }, "", 0);
  REQUIRE(p.size() == m.param_count());
  const auto x = f.at("x").to_vector<float>();
  const auto keep = f.at("keep").to_vector<std::uint8_t>();
  const auto dy = f.at("dy").to_vector<float>();
  const Layout l = Layout::dense(B, N, D);
  REQUIRE(x.size() == l.size());
  typename M::template Ctx<Host> ctx;
  std::vector<float> y(l.size()), dx(l.size()), g(p.size(), 0.0f);
  m.forward(ParamsView<const float, Host>{p.data(), p.size()}, view_of<const float>(x.data(), l, keep.data()),
            view_of<float>(y.data(), l, keep.data()), ctx);
  require_close(y.data(), f.at("y").to_vector<float>(), tol, "y");
  require_close(ctx.pre_projection().data, f.at("pre").to_vector<float>(), tol, "pre");
  m.backward(ParamsView<const float, Host>{p.data(), p.size()}, ctx, view_of<const float>(dy.data(), l, keep.data()),
             view_of<float>(dx.data(), l, keep.data()), ParamsView<float, Host>{g.data(), g.size()});
  require_close(dx.data(), f.at("grad.x").to_vector<float>(), tol, "grad.x");
  std::size_t off = 0;
  for (const auto& name : names) {
    const auto ref = f.at("grad." + name).to_vector<float>();
    require_close(g.data() + off, ref, tol, name);
    off += ref.size();
  }
  REQUIRE(off == p.size());
}

}  // namespace test_util
