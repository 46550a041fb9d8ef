// The Communicator over MPI (Open MPI from Debian; the target seqswap::mpi defines
// SEQSWAP_HAVE_MPI and links MPI::MPI_CXX). A program starts an MpiSession only when it was
// launched by mpirun/srun, so the same binary runs single-process without touching MPI.
//
//   mpirun -np 2 build/release/examples/train_teacher --epochs 20 --out t.safetensors
#pragma once
#include <algorithm>
#include <cstdlib>
#include <string>

#include <mpi.h>

#include "seqswap/core/error.hpp"
#include "seqswap/train/comm.hpp"

namespace seqswap::train {

inline void mpi_check(int code, const char* call) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  fail("MPI: ", call, " failed: ", std::string(text, std::size_t(len)));
}

// True when a process launcher started this process as one rank of several (Open MPI's mpirun,
// PMI/PMIx launchers such as Slurm's srun).
inline bool launched_by_mpirun() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (std::getenv(v)) return true;
  return false;
}

// MPI_Init / MPI_Finalize for the life of main(); errors come back as codes (MPI_ERRORS_RETURN)
// and become seqswap::Error naming the call.
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv) {
    int provided = 0;
    mpi_check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  }
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  ~MpiSession() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
};

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() {
    mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "MPI_Comm_rank");
    mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &size_), "MPI_Comm_size");
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void allreduce_sum(float* x, std::size_t n) override { reduce(x, n, MPI_FLOAT); }
  void allreduce_sum(double* x, std::size_t n) override { reduce(x, n, MPI_DOUBLE); }

 private:
  // In chunks below 2^31 elements (MPI's int counts).
  static void reduce(void* x, std::size_t n, MPI_Datatype t) {
    int bytes = 0;
    MPI_Type_size(t, &bytes);
    auto* p = static_cast<char*>(x);
    constexpr std::size_t chunk = std::size_t(1) << 30;
    for (std::size_t done = 0; done < n; done += chunk) {
      const int c = int(std::min(chunk, n - done));
      mpi_check(MPI_Allreduce(MPI_IN_PLACE, p + done * std::size_t(bytes), c, t, MPI_SUM, MPI_COMM_WORLD),
                "MPI_Allreduce");
    }
  }
  int rank_ = 0, size_ = 1;
};

}  // namespace seqswap::train
