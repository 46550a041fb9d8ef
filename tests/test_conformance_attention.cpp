// Softmax attention passes the conformance test, with and without keep-masks, on ragged
// batches; and it matches PyTorch on a masked batch (tests/reference/make_fixtures.py).
#include "conformance.hpp"
#include "seqswap/attention/softmax_attention.hpp"
#include "seqswap/io/safetensors.hpp"
#include "test_util.hpp"

#include <type_traits>

using namespace seqswap;
using conformance::check_layer;

TEST_CASE("SoftmaxAttention conforms", "[conformance][attention]") {
  // small_head_bytes: the default, -1 = the L1 data cache (every head here is far smaller, so it
  // takes ops::small_gemm's register tiles) and 0 (every head takes Eigen's blocked GEMM).
  for (const index_t small_head_bytes : {index_t(-1), index_t(0)}) {
    INFO("small_head_bytes " << small_head_bytes);
    attention::SoftmaxAttention<double> a(
        {.dim = 6, .heads = 2, .qkv_bias = true, .name = "attn", .small_head_bytes = small_head_bytes});
    for (const auto& in : conformance::standard_layouts(6)) {
      check_layer(a, in, {.mixer = true});
      check_layer(a, in, {.keep = conformance::some_mask(in), .mixer = true});
    }
  }
}

TEST_CASE("SoftmaxAttention with a keep-mask matches PyTorch", "[reference][attention]") {
  const auto f = io::read_safetensors(test_util::fixture("attention_masked.safetensors"));
  const index_t B = 2, N = 7, D = 12, H = 3;
  // Both paths: rows stored (N = 7 <= 256), and memory-bounded with query blocks of 3; each
  // with the register-tiled head products (the default here) and with Eigen's (0 bytes).
  for (const index_t stored_up_to : {index_t(256), index_t(0)})
  for (const index_t small_head_bytes : {index_t(-1), index_t(0)}) {
  INFO("store_probs_up_to " << stored_up_to << ", small_head_bytes " << small_head_bytes);
  attention::SoftmaxAttention<float> a({.dim = D, .heads = H, .qkv_bias = true, .name = "",
                                        .store_probs_up_to = stored_up_to, .query_block = 3,
                                        .small_head_bytes = small_head_bytes});
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
}

// The memory-bounded path (sequences longer than store_probs_up_to): query blocks of
// query_block rows, scores recomputed in backward. It conforms on its own (odd block sizes
// that split sequences unevenly), and matches the stored path's outputs and gradients.
namespace {
template <class Policy>
attention::SoftmaxAttentionOptions bounded_options(index_t dim, index_t heads, index_t block,
                                                   index_t stored_up_to) {
  attention::SoftmaxAttentionOptions o{.dim = dim, .heads = heads, .qkv_bias = true, .name = "attn"};
  if constexpr (std::is_same_v<Policy, sparse::TopK>) o.top_k = 3;
  if constexpr (std::is_same_v<Policy, sparse::Threshold>) o.threshold = 0.5;
  o.store_probs_up_to = stored_up_to;
  o.query_block = block;
  return o;
}

// y, dx and g of one forward + backward (float, ragged, masked).
template <class Policy>
struct Run {
  std::vector<float> y, dx, g;
  bool stored = true;
};
template <class Policy>
Run<Policy> run_attention(const attention::SoftmaxAttentionOptions& o, const Layout& l,
                          const std::vector<std::uint8_t>& keep) {
  using Host = backend::Host;
  attention::SoftmaxAttention<float, Policy> a(o);
  Rng rng(7);
  std::vector<float> p(a.param_count()), x(l.size()), dy(l.size());
  for (auto& v : p) v = float(rng.normal() * 0.3);
  for (auto& v : x) v = float(rng.normal());
  for (auto& v : dy) v = float(rng.normal());
  Run<Policy> r;
  r.y.resize(l.size());
  r.dx.resize(l.size());
  r.g.assign(p.size(), 0.0f);
  typename attention::SoftmaxAttention<float, Policy>::template Ctx<Host> ctx;
  a.forward(ParamsView<const float, Host>{p.data(), p.size()}, view_of<const float>(x.data(), l, keep.data()),
            view_of<float>(r.y.data(), l, keep.data()), ctx);
  a.backward(ParamsView<const float, Host>{p.data(), p.size()}, ctx,
             view_of<const float>(dy.data(), l, keep.data()), view_of<float>(r.dx.data(), l, keep.data()),
             ParamsView<float, Host>{r.g.data(), r.g.size()});
  r.stored = ctx.core.stored;
  return r;
}
}  // namespace

TEMPLATE_TEST_CASE("SoftmaxAttention's memory-bounded path conforms", "[conformance][attention]",
                   sparse::Dense, sparse::TopK, sparse::Threshold) {
  for (const index_t block : {1, 2, 3}) {
    const attention::SoftmaxAttention<double, TestType> a(bounded_options<TestType>(6, 2, block, 0));
    for (const auto& in : conformance::standard_layouts(6)) {
      check_layer(a, in, {.mixer = true});
      check_layer(a, in, {.keep = conformance::some_mask(in), .mixer = true});
    }
  }
}

TEMPLATE_TEST_CASE("SoftmaxAttention's memory-bounded path matches the stored path",
                   "[attention]", sparse::Dense, sparse::TopK, sparse::Threshold) {
  const Layout l = Layout::ragged({37, 1, 64, 20}, 12);
  std::vector<std::uint8_t> keep(std::size_t(l.total()), 1);
  for (std::size_t i = 0; i < keep.size(); ++i) keep[i] = (i % 5 == 3) ? 0 : 1;
  const auto stored = run_attention<TestType>(bounded_options<TestType>(12, 3, 8, 64), l, keep);
  REQUIRE(stored.stored);
  for (const index_t block : {1, 5, 8, 64}) {
    INFO("query_block " << block);
    const auto bounded = run_attention<TestType>(bounded_options<TestType>(12, 3, block, 63), l, keep);
    REQUIRE_FALSE(bounded.stored);
    test_util::require_close(bounded.y.data(), stored.y, 1e-5, "y");
    test_util::require_close(bounded.dx.data(), stored.dx, 1e-4, "dx");
    test_util::require_close(bounded.g.data(), stored.g, 1e-4, "g");
  }
}

TEMPLATE_TEST_CASE("SoftmaxAttention's register-tiled and blocked head products agree, mixed in one batch",
                   "[attention]", sparse::Dense, sparse::TopK, sparse::Threshold) {
  const Layout l = Layout::ragged({37, 1, 64, 20}, 12);
  std::vector<std::uint8_t> keep(std::size_t(l.total()), 1);
  for (std::size_t i = 0; i < keep.size(); ++i) keep[i] = (i % 5 == 3) ? 0 : 1;
  for (const index_t stored_up_to : {index_t(64), index_t(0)}) {
    auto o = bounded_options<TestType>(12, 3, 8, stored_up_to);
    o.small_head_bytes = 0;  // every head blocked
    const auto blocked = run_attention<TestType>(o, l, keep);
    // d = 4 floats: sequences of up to 20 tokens tiled, 37 and 64 blocked; then every head tiled
    for (const index_t bytes : {index_t(20 * 4 * 4), index_t(32768)}) {
      INFO("store_probs_up_to " << stored_up_to << ", small_head_bytes " << bytes);
      o.small_head_bytes = bytes;
      const auto r = run_attention<TestType>(o, l, keep);
      test_util::require_close(r.y.data(), blocked.y, 1e-5, "y");
      test_util::require_close(r.dx.data(), blocked.dx, 1e-4, "dx");
      test_util::require_close(r.g.data(), blocked.g, 1e-4, "g");
    }
  }
}

TEST_CASE("SoftmaxAttention rejects a zero query block", "[attention]") {
  auto o = bounded_options<sparse::Dense>(6, 2, 0, 4);
  CHECK_THROWS_AS(attention::SoftmaxAttention<float>(o), Error);
}

TEST_CASE("SoftmaxAttention rejects small_head_bytes below -1", "[attention]") {
  auto o = bounded_options<sparse::Dense>(6, 2, 4, 4);
  o.small_head_bytes = -2;
  CHECK_THROWS_AS(attention::SoftmaxAttention<float>(o), Error);
  o.small_head_bytes = -1;  // the L1 data cache
  CHECK_NOTHROW(attention::SoftmaxAttention<float>(o));
}
