// replace_layers built with its --device cuda path against the CUDA backend emulated on the CPU
// (tests/device_emulation.hpp), so that ctest driver.replace_device_emulated runs that path end
// to end here: the teacher and the student copied to device models, both distillation stages,
// the layer losses and the evaluations on them, the student copied back and saved. The real
// binary with --device cuda is replace_layers_cuda (examples/cuda/replace_layers.cu, nvcc).
#define SEQSWAP_DEVICE_DRIVER 1
#include "device_emulation.hpp"

#include "replace_layers.cpp"
