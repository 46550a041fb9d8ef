// avit_finetune built with its --device cuda path against the CUDA backend emulated on the CPU
// (tests/device_emulation.hpp), for ctest driver.avit_device_emulated. The real binary with
// --device cuda is avit_finetune_cuda (examples/cuda/avit_finetune.cu, nvcc).
#define SEQSWAP_DEVICE_DRIVER 1
#include "device_emulation.hpp"

#include "avit_finetune.cpp"
