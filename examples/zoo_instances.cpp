// The explicit instantiations that examples/zoo_instances.hpp declares: zoo::AnyMixer<float>'s
// forward, backward and backward_pre on the host, compiled once for every driver.
#define SEQSWAP_ZOO_INSTANCES_DEFINE 1
#include "zoo_instances.hpp"

SEQSWAP_ZOO_INSTANCES()
