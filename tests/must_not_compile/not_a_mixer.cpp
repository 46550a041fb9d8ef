// Must not compile: a layer that is not a mixer (an MLP: no pre_projection, no backward_pre)
// in a block's mixer position.
// Expected message: "the mixer position needs a seqswap::Mixer"
#include "seqswap/model/vit.hpp"

int main() {
  using namespace seqswap;
  auto vit = model::make_vit<float, layers::Mlp<float>>(model::VitConfig{});
  return static_cast<int>(vit.param_count());
}
