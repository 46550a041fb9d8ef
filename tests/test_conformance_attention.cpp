// Softmax attention passes the conformance test, with and without keep-masks, on ragged
// batches; and it matches PyTorch on a masked batch (tests/reference/make_fixtures.py).
#include "conformance.hpp"
#include "seqswap/attention/softmax_attention.hpp"
#include "seqswap/io/safetensors.hpp"
#include "test_util.hpp"

using namespace seqswap;
using conformance::check_layer;

TEST_CASE("SoftmaxAttention conforms", "[conformance][attention]") {
  attention::SoftmaxAttention<double> a({.dim = 6, .heads = 2, .qkv_bias = true, .name = "attn"});
  for (const auto& in : conformance::standard_layouts(6)) {
    check_layer(a, in, {.mixer = true});
    check_layer(a, in, {.keep = conformance::some_mask(in), .mixer = true});
  }
}

TEST_CASE("SoftmaxAttention with a keep-mask matches PyTorch", "[reference][attention]") {
  const auto f = io::read_safetensors(test_util::fixture("attention_masked.safetensors"));
  const index_t B = 2, N = 7, D = 12, H = 3;
  attention::SoftmaxAttention<float> a({.dim = D, .heads = H, .qkv_bias = true, .name = ""});
  std::vector<float> p;
  for (const char* name : {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias"}) {
    const auto v = f.at(name).to_vector<float>();
    p.insert(p.end(), v.begin(), v.end());
  }
  REQUIRE(p.size() == a.param_count());
  const auto x = f.at("x").to_vector<float>();
  const auto keep = f.at("keep").to_vector<std::uint8_t>();
  const auto dy = f.at("dy").to_vector<float>();
  const Layout l = Layout::dense(B, N, D);
  using Host = backend::Host;
  attention::SoftmaxAttention<float>::Ctx<Host> ctx;
  std::vector<float> y(l.size()), dx(l.size()), g(p.size(), 0.0f);
  a.forward(ParamsView<const float, Host>{p.data(), p.size()}, view_of<const float>(x.data(), l, keep.data()),
            view_of<float>(y.data(), l, keep.data()), ctx);
  test_util::require_close(y.data(), f.at("y").to_vector<float>(), 1e-5, "y");
  test_util::require_close(ctx.pre_projection().data, f.at("pre").to_vector<float>(), 1e-5, "pre");
  a.backward(ParamsView<const float, Host>{p.data(), p.size()}, ctx,
             view_of<const float>(dy.data(), l, keep.data()), view_of<float>(dx.data(), l, keep.data()),
             ParamsView<float, Host>{g.data(), g.size()});
  test_util::require_close(dx.data(), f.at("grad.x").to_vector<float>(), 1e-4, "grad.x");
  std::size_t off = 0;
  for (const char* name : {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias"}) {
    const auto ref = f.at(std::string("grad.") + name).to_vector<float>();
    test_util::require_close(g.data() + off, ref, 1e-4, name);
    off += ref.size();
  }
}
