// Data-parallel training over MPI equals one process on the same global batches.
//
// Run as `mpirun -np 2 test_data_parallel` (ctest: mpi.data_parallel). Every rank trains the
// same small ViT twice on the same synthetic data for 20 steps: once alone (no communicator,
// the whole global batch) and once data parallel (its slice of each global batch, gradients
// summed with MPI_Allreduce). The two runs must agree on every step's loss and on the final
// parameters within the tolerances below; every rank must end with the same parameters, bit for
// bit (they take the same optimizer step on the same reduced gradient).
//
// Why not bitwise against one process: the data-parallel gradient is (n0/n) g0 + (n1/n) g1,
// each g a mean over a slice, summed by MPI; one process forms one mean over the whole batch.
// The two differ by float rounding (~1e-7 relative per gradient element). AdamW divides by
// sqrt(v), so a rounding-level difference in a gradient element near zero can move that
// element's update by up to lr; over 20 steps at lr 1e-3 a parameter could in the worst case
// drift by 20 * 2e-3, but elements that small are rare and the measured drift is far below.
// The bounds: 1e-4 absolute on each step's loss (losses ~1.1) and 5e-4 on any parameter (about
// a quarter of one step's largest update, 2 * lr); a real bug (a slice dropped, a share
// misweighted, ranks diverging) moves the loss by 1e-2 or more within a few steps.
//
// Exit codes: 0 passed, 1 failed, 77 skipped (not started by mpirun, or one rank only).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "seqswap/model/model.hpp"
#include "seqswap/model/vit.hpp"
#include "seqswap/train/loop.hpp"
#include "seqswap/train/mpi.hpp"

using namespace seqswap;

int main(int argc, char** argv) try {
  if (!train::launched_by_mpirun()) {
    std::puts("test_data_parallel: not started by mpirun (run: mpirun -np 2 test_data_parallel): skipped");
    return 77;
  }
  train::MpiSession session(&argc, &argv);
  train::MpiCommunicator comm;
  if (comm.size() < 2) {
    std::puts("test_data_parallel: one rank only: skipped");
    return 77;
  }
  const int rank = comm.rank();

  // 45 images: batches of 9 are split 4 + 5 over two ranks (ragged), and the epoch boundary
  // falls mid-run (5 batches per epoch, 20 steps = 4 epochs with a reshuffle each).
  io::ImageDataset data;
  data.name = "synthetic";
  data.count = 45;
  data.size = 8;
  data.classes = 3;
  for (index_t i = 0; i < 45 * 64; ++i) data.pixels.push_back(std::uint8_t((i * 53 + i / 64 * 7) % 251));
  for (index_t i = 0; i < 45; ++i) data.labels.push_back(std::int32_t((i * 7) % 3));
  const model::VitConfig c{.image_size = 8, .channels = 1, .patch = 4, .width = 16, .depth = 2, .heads = 2,
                           .mlp_ratio = 2.0, .classes = 3};
  const train::LoopOptions o{.steps = 20, .batch = 9, .lr = 1e-3, .warmup_steps = 3, .clip_norm = 1.0, .seed = 11,
                             .augment = {.crop_padding = 1, .hflip = true}, .quiet = true};

  // losses[s]: step s's loss on the global batch (data parallel: the share-weighted sum of the
  // ranks' slice losses, reduced after the run).
  const auto train_run = [&](train::Communicator* cm, std::vector<double>& losses) {
    model::Model m(model::make_vit<float>(c));
    m.init(3);
    std::vector<float> dl;
    const auto step = [&](long s, const float* x, const std::int32_t* y, index_t n) {
      const double loss = train::classify_step(m, x, y, n, data.image_numel(), 0.1, dl).loss;
      losses[std::size_t(s)] = cm ? loss * double(n) / double(std::min<index_t>(o.batch, data.count)) : loss;
      return loss;
    };
    train::run_loop(m, data, o, step, {.comm = cm});
    std::vector<float> p(m.params().data, m.params().data + m.param_count());
    return p;
  };
  std::vector<double> loss_one(20, 0.0), loss_dp(20, 0.0);
  const auto p_one = train_run(nullptr, loss_one);
  const auto p_dp = train_run(&comm, loss_dp);
  // A rank whose slice was empty recorded 0; the global batch is always 9 here (45 = 5 x 9).
  comm.allreduce_sum(loss_dp.data(), loss_dp.size());

  double loss_diff = 0, param_diff = 0;
  for (std::size_t s = 0; s < 20; ++s) loss_diff = std::max(loss_diff, std::abs(loss_one[s] - loss_dp[s]));
  for (std::size_t i = 0; i < p_one.size(); ++i)
    param_diff = std::max(param_diff, std::abs(double(p_one[i]) - double(p_dp[i])));
  // Every rank must hold the same data-parallel parameters, bit for bit: compare with rank 0's.
  std::vector<double> mine(p_dp.begin(), p_dp.end()), sum = mine;
  comm.allreduce_sum(sum.data(), sum.size());
  double rank_spread = 0;
  for (std::size_t i = 0; i < mine.size(); ++i)
    rank_spread = std::max(rank_spread, std::abs(sum[i] / comm.size() - mine[i]));

  const bool ok = loss_diff <= 1e-4 && param_diff <= 5e-4 && rank_spread == 0.0 && loss_one[19] < loss_one[0];
  std::printf("rank %d of %d: %zu parameters, loss %.5f -> %.5f; max |loss 1 rank - loss %d ranks| %.3g (bound 1e-4), "
              "max |param diff| %.3g (bound 5e-4), ranks differ by %.3g (must be 0): %s\n",
              rank, comm.size(), p_one.size(), loss_one[0], loss_one[19], comm.size(), loss_diff, param_diff,
              rank_spread, ok ? "passed" : "FAILED");
  int failed = ok ? 0 : 1;
  MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return failed ? 1 : 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "test_data_parallel: error: %s\n", e.what());
  return 1;
}
