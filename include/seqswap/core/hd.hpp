// SEQSWAP_HD marks a function that runs on the host and, under nvcc, on the device too: the
// one definition of a row's or an element's math that the host ops and the CUDA kernels share
// (ops/flash_attention.hpp, ops/rows.hpp). No includes, cheap everywhere.
#pragma once

#if defined(__CUDACC__)
#define SEQSWAP_HD __host__ __device__
#else
#define SEQSWAP_HD
#endif
