// The CUDA backend emulated on the CPU (tests/device_emulation.hpp), instantiated once: the
// object seqswap_device_emulation, which the device-path tests and the drivers' emulated builds
// link in place of the real device ops (examples/cuda/device_ops.cu).
#include "device_emulation.hpp"

#include "seqswap/zoo/device_instances.hpp"
