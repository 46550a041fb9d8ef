// The mixer parts' name for the composition every mixer is: layers::Projected<Core> and its
// core contract layers::MixerCore live in layers/output_projection.hpp (below attention, whose
// softmax attention is one such composition); mixers/ name them here.
#pragma once
#include "seqswap/layers/output_projection.hpp"

namespace seqswap::mixers {
using layers::MixerCore;
using layers::Projected;
}  // namespace seqswap::mixers
