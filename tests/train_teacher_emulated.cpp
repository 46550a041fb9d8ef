// train_teacher built with its --device cuda path against the CUDA backend emulated on the CPU
// (tests/device_emulation.hpp), so that ctest driver.train_device_emulated runs that path end
// to end here: the device model, the uploads of the host model's state, the device training
// step, the copies back at each epoch's end, evaluation, checkpoint and resume state. The real
// binary with --device cuda is train_teacher_cuda (examples/cuda/train_teacher.cu, nvcc).
#define SEQSWAP_DEVICE_DRIVER 1
#include "device_emulation.hpp"

#include "train_teacher.cpp"
