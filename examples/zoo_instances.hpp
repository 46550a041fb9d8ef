// The drivers' one copy of the twelve mixers' code: every driver that runs zoo::AnyMixer<float>
// (the runtime mixer choice) on the host would otherwise compile all twelve mixers' forward and
// backward again. With SEQSWAP_ZOO_EXTERN defined, these `extern template` declarations tell a
// driver that the Slot's three entry points are compiled elsewhere: examples/zoo_instances.cpp,
// which CMake's object library seqswap_zoo_instances compiles once and links into the drivers
// (and defines SEQSWAP_ZOO_EXTERN for them). A driver compiled on its own, without the macro,
// compiles those functions itself as before.
#pragma once
#include "seqswap/zoo/registry.hpp"

namespace seqswap::zoo::instances {
using Any = AnyMixer<float>;
}  // namespace seqswap::zoo::instances

#define SEQSWAP_ZOO_INSTANCES(EXTERN)                                                                                 \
  EXTERN template void seqswap::zoo::instances::Any::forward<seqswap::backend::Host>(                                 \
      seqswap::ParamsView<const float, seqswap::backend::Host>, seqswap::TokensView<const float, seqswap::backend::Host>, \
      seqswap::TokensView<float, seqswap::backend::Host>, seqswap::zoo::instances::Any::Ctx<seqswap::backend::Host>&)  \
      const;                                                                                                          \
  EXTERN template void seqswap::zoo::instances::Any::backward<seqswap::backend::Host>(                                \
      seqswap::ParamsView<const float, seqswap::backend::Host>, seqswap::zoo::instances::Any::Ctx<seqswap::backend::Host>&, \
      seqswap::TokensView<const float, seqswap::backend::Host>, seqswap::TokensView<float, seqswap::backend::Host>,  \
      seqswap::ParamsView<float, seqswap::backend::Host>) const;                                                      \
  EXTERN template void seqswap::zoo::instances::Any::backward_pre<seqswap::backend::Host>(                            \
      seqswap::ParamsView<const float, seqswap::backend::Host>, seqswap::zoo::instances::Any::Ctx<seqswap::backend::Host>&, \
      seqswap::TokensView<const float, seqswap::backend::Host>, seqswap::TokensView<float, seqswap::backend::Host>,  \
      seqswap::ParamsView<float, seqswap::backend::Host>) const;

#if defined(SEQSWAP_ZOO_EXTERN) && !defined(SEQSWAP_ZOO_INSTANCES_DEFINE)
SEQSWAP_ZOO_INSTANCES(extern)
#endif
