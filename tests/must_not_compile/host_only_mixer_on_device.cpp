// Must not compile: a mixer without a device path (the multi-head GRU) run on backend::Cuda.
// Its forward states SEQSWAP_HOST_ONLY, so the error names it instead of a host loop running
// over device pointers. (The CUDA backend is emulated here so that everything else compiles.)
// Expected message: "no device path yet"
#include "../device_emulation.hpp"

#include "seqswap/mixers/rnn.hpp"
#include "seqswap/model/model.hpp"
#include "seqswap/model/vit.hpp"

int main() {
  using namespace seqswap;
  using Net = model::Vit<float, mixers::MultiHeadGru<float>>;
  model::Model<Net, backend::Cuda> m(model::make_vit<float, mixers::MultiHeadGru<float>>(model::VitConfig{}));
  Buffer<float, backend::Cuda> x(28 * 28);
  return static_cast<int>(m.forward(x.data(), 1, 28 * 28).dim);
}
