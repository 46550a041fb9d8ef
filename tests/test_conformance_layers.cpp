// Every basic layer passes the conformance test (tests/conformance.hpp).
#include "conformance.hpp"
#include "seqswap/layers/classifier_head.hpp"
#include "seqswap/layers/cls_pos_embed.hpp"
#include "seqswap/layers/gelu.hpp"
#include "seqswap/layers/layer_norm.hpp"
#include "seqswap/layers/linear.hpp"
#include "seqswap/layers/mlp.hpp"
#include "seqswap/layers/patch_embed.hpp"

using namespace seqswap;
using conformance::check_layer;

TEST_CASE("Linear conforms", "[conformance]") {
  layers::Linear<double> l({.in = 5, .out = 7, .bias = true, .name = "fc"});
  for (const auto& in : conformance::standard_layouts(5)) check_layer(l, in);
  layers::Linear<double> nb({.in = 3, .out = 2, .bias = false, .name = "fc"});
  check_layer(nb, Layout::ragged({4, 1}, 3));
}

TEST_CASE("LayerNorm conforms", "[conformance]") {
  layers::LayerNorm<double> l({.dim = 6, .eps = 1e-6, .name = "norm"});
  for (const auto& in : conformance::standard_layouts(6)) check_layer(l, in);
}

TEST_CASE("Gelu conforms", "[conformance]") {
  for (const auto& in : conformance::standard_layouts(4)) check_layer(layers::Gelu<double>{}, in);
}

TEST_CASE("Mlp conforms", "[conformance]") {
  layers::Mlp<double> l({.dim = 5, .hidden = 9, .name = "mlp"});
  for (const auto& in : conformance::standard_layouts(5)) check_layer(l, in);
}

TEST_CASE("PatchEmbed conforms", "[conformance]") {
  for (index_t channels : {1, 3}) {
    layers::PatchEmbed<double> l({.image_size = 6, .channels = channels, .patch = 3, .dim = 5});
    check_layer(l, Layout::dense(2, 1, channels * 36));
  }
  layers::PatchEmbed<double> bad({.image_size = 6, .channels = 1, .patch = 3, .dim = 5});
  Layout out;
  REQUIRE_THROWS_WITH(bad.plan(Layout::dense(2, 1, 35), out), Catch::Contains("expected images"));
}

TEST_CASE("ClsPosEmbed conforms", "[conformance]") {
  layers::ClsPosEmbed<double> l({.num_patches = 4, .dim = 3});
  check_layer(l, Layout::dense(3, 4, 3));
  Layout out;
  REQUIRE_THROWS_WITH(l.plan(Layout::dense(3, 5, 3), out), Catch::Contains("expected 4 patch tokens"));
}

TEST_CASE("ClassifierHead conforms", "[conformance]") {
  layers::ClassifierHead<double> l({.dim = 4, .classes = 3});
  for (const auto& in : conformance::standard_layouts(4)) check_layer(l, in);
}
