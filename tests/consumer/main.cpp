// Builds a tiny ViT from an installed seqswap and runs it once.
#include <cstdio>
#include <seqswap/seqswap.hpp>

int main() {
  using namespace seqswap;
  model::VitConfig c{.image_size = 8, .channels = 1, .patch = 4, .width = 8, .depth = 1,
                     .heads = 2, .mlp_ratio = 2.0, .classes = 3};
  model::Model m(model::make_vit<float>(c));
  m.init(0);
  std::vector<float> x(64, 0.5f);
  auto y = m.forward(x.data(), 1, 64);
  std::printf("seqswap %s: %zu parameters, logits %ld\n", seqswap::version, m.param_count(), long(y.dim));
  return y.dim == 3 ? 0 : 1;
}
