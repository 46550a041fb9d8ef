// The drivers' ranks: built with MPI (seqswap::mpi) and started by mpirun or srun, an MPI
// session for the life of main() and its communicator; otherwise one process, no communicator,
// and MPI is never called (the same binary runs both ways).
#pragma once
#include <optional>

#include "seqswap/train/comm.hpp"
#ifdef SEQSWAP_HAVE_MPI
#include "seqswap/train/mpi.hpp"
#endif

class Ranks {
 public:
  Ranks(int* argc, char*** argv) {
#ifdef SEQSWAP_HAVE_MPI
    if (seqswap::train::launched_by_mpirun()) {
      session_.emplace(argc, argv);
      comm_ = &mpi_.emplace();
    }
#else
    (void)argc;
    (void)argv;
#endif
  }
  Ranks(const Ranks&) = delete;
  Ranks& operator=(const Ranks&) = delete;

  seqswap::train::Communicator* comm() const { return comm_; }

 private:
#ifdef SEQSWAP_HAVE_MPI
  std::optional<seqswap::train::MpiSession> session_;
  std::optional<seqswap::train::MpiCommunicator> mpi_;
#endif
  seqswap::train::Communicator* comm_ = nullptr;
};
