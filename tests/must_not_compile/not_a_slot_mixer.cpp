// Must not compile: a non-mixer among a Slot's alternatives.
// Expected message: "every alternative must satisfy seqswap::Mixer"
#include "seqswap/attention/softmax_attention.hpp"
#include "seqswap/layers/layer_norm.hpp"
#include "seqswap/model/slot.hpp"

int main() {
  using namespace seqswap;
  model::Slot<attention::SoftmaxAttention<float>, layers::LayerNorm<float>> bad;
  return static_cast<int>(bad.param_count());
}
