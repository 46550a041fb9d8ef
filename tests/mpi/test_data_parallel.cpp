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
// The same for distillation: stage 1 (free-running, layer MSE + CE, only the new mixer moves)
// and stage 2 (every parameter, CE + KL) of a student whose block 1 is a minGRU, 10 steps each,
// alone vs data parallel: same bounds on the final parameters and on the stage-1 layer loss
// (reduced over the ranks, weighted by slice). And split evaluation (each rank a share of the
// batches, sums all-reduced) gives one process's accuracy exactly and its loss to 1e-6.
//
// Exit codes: 0 passed, 1 failed, 77 skipped (not started by mpirun, or one rank only).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "seqswap/distill/stages.hpp"
#include "seqswap/mixers/min_gru.hpp"
#include "seqswap/model/model.hpp"
#include "seqswap/model/vit.hpp"
#include "seqswap/train/loop.hpp"
#include "seqswap/train/mpi.hpp"

using namespace seqswap;

namespace {
// Counts the all-reduces a run makes: a stage that ignored its communicator would train on the
// whole batch on every rank and match the one-process run trivially.
class CountingComm : public train::Communicator {
 public:
  explicit CountingComm(train::Communicator& inner) : inner_(inner) {}
  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  void allreduce_sum(float* x, std::size_t n) override { ++calls, inner_.allreduce_sum(x, n); }
  void allreduce_sum(double* x, std::size_t n) override { ++calls, inner_.allreduce_sum(x, n); }
  long calls = 0;

 private:
  train::Communicator& inner_;
};
}  // namespace

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

  // Distillation stages 1 and 2.
  using Student = model::VitOf<float, model::Layers<attention::SoftmaxAttention<float>, 1>,
                               model::Layers<mixers::MinGru<float>, 1>>;
  const auto distil = [&](train::Communicator* cm, std::vector<double>& layer_loss) {
    model::Model teacher(model::make_vit<float>(c));
    teacher.init(3);
    model::Model<Student> student(model::make_vit<float, model::Layers<attention::SoftmaxAttention<float>, 1>,
                                                  model::Layers<mixers::MinGru<float>, 1>>(c));
    student.init(4);
    model::inherit_params(student, teacher);
    const distill::Plan plan{.layers = {1}};
    const auto r1 = distill::stage1(teacher, student, plan, data,
                                    {.steps = 10, .batch = 9, .lr = 2e-3, .ce_weight = 1.0, .free_running = true,
                                     .seed = 5, .comm = cm});
    layer_loss = r1.layer_loss;
    distill::stage2(teacher, student, data, {.steps = 10, .batch = 9, .lr = 1e-3, .kl_weight = 1.0, .seed = 6, .comm = cm});
    return std::vector<float>(student.params().data, student.params().data + student.param_count());
  };
  // Split evaluation: each rank a share of the batches, the sums all-reduced.
  double eval_loss_diff = 1, eval_acc_diff = 1;
  index_t eval_count = 0;
  {
    model::Model m(model::make_vit<float>(c));
    m.init(8);
    const auto whole = train::evaluate(m, data, 4);  // 12 batches: 11 of 4 and one of 1
    const auto split = train::evaluate_split(m, data, &comm, 4);
    eval_loss_diff = std::abs(whole.loss - split.loss);
    eval_acc_diff = std::abs(whole.accuracy - split.accuracy);
    eval_count = split.count;
  }
  std::printf("rank %d: split evaluation: |loss diff| %.3g (bound 1e-6), |accuracy diff| %.3g (must be 0), %ld images\n",
              rank, eval_loss_diff, eval_acc_diff, long(eval_count));

  std::vector<double> ll_one, ll_dp;
  const auto d_one = distil(nullptr, ll_one);
  CountingComm counting(comm);
  const auto d_dp = distil(&counting, ll_dp);
  double distil_param_diff = 0, layer_loss_diff = 0;
  for (std::size_t i = 0; i < d_one.size(); ++i)
    distil_param_diff = std::max(distil_param_diff, std::abs(double(d_one[i]) - double(d_dp[i])));
  layer_loss_diff = std::abs(ll_one.at(0) - ll_dp.at(0)) / std::max(1e-12, ll_one.at(0));

  const bool ok = loss_diff <= 1e-4 && param_diff <= 5e-4 && rank_spread == 0.0 && loss_one[19] < loss_one[0] &&
                  distil_param_diff <= 5e-4 && layer_loss_diff <= 1e-4 &&
                  counting.calls >= 2 * 20 &&  // gradients and loss, every step of both stages
                  eval_loss_diff <= 1e-6 && eval_acc_diff == 0.0 && eval_count == 45;
  std::printf("rank %d: distillation (stage 1 + 2, 10 steps each): max |param diff| %.3g (bound 5e-4), stage-1 layer "
              "loss %.6f vs %.6f, relative diff %.3g (bound 1e-4), %ld all-reduces (at least 40)\n",
              rank, distil_param_diff, ll_one.at(0), ll_dp.at(0), layer_loss_diff, counting.calls);
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
