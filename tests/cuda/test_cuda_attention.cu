// Device streamed attention (ops/cuda/attention.cuh) against the host executor of the same row
// functions (ops/flash_attention.hpp; that executor is itself checked against
// SoftmaxAttentionCore in tests/test_flash_attention.cpp): outputs, row statistics' use in the
// backward, and dqkv, for every policy on a ragged batch (an empty sequence, one-token
// sequences, sequences of 64, 65 and 197 tokens: one block, a block and one row, four blocks)
// with and without a keep-mask, at head widths 8 and 128 (the kernels for any width) and 16, 32
// and 64 (the float kernels specialised at compile time). Without a CUDA device it
// prints "no CUDA device: skipped" and exits 77 (ctest: skipped, never passed).
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "seqswap/ops/cuda/attention.cuh"
#include "seqswap/ops/flash_attention.hpp"
#include "device_check.cuh"

using namespace seqswap;
namespace flash = seqswap::ops::flash;


namespace {

// Every policy, with and without the keep-mask, at width D with H heads.
void check_width(flash::idx D, flash::idx H, std::mt19937& g) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const std::vector<flash::idx> lengths{5, 0, 1, 197, 33, 1, 64, 65};
  std::vector<flash::idx> offsets{0};
  for (auto n : lengths) offsets.push_back(offsets.back() + n);
  const flash::idx rows = offsets.back(), batch = flash::idx(lengths.size());
  std::vector<float> qkv(std::size_t(rows * 3 * D)), dpre(std::size_t(rows * D));
  for (auto& v : qkv) v = nd(g);
  std::vector<std::uint8_t> keep(std::size_t(rows), 1);
  for (flash::idx t = 0; t < rows; ++t) keep[std::size_t(t)] = (t * 7) % 3 != 1;
  seqswap::cuda::DeviceBuffer<float> d_qkv, d_pre, d_dpre, d_delta, d_dqkv;
  seqswap::cuda::DeviceBuffer<flash::idx> d_off;
  seqswap::cuda::DeviceBuffer<std::uint8_t> d_keep;
  seqswap::cuda::DeviceBuffer<flash::RowStats<float>> d_stats;
  d_qkv.upload(qkv.data(), qkv.size());
  d_off.upload(offsets.data(), offsets.size());
  d_keep.upload(keep.data(), keep.size());
  d_pre.resize(std::size_t(rows * D));
  d_delta.resize(std::size_t(rows * H));
  d_dqkv.resize(qkv.size());
  d_stats.resize(std::size_t(rows * H));
  const struct {
    flash::Rule rule;
    flash::idx k;
    double tau;
    const char* name;
  } cases[] = {{flash::Rule::dense, 0, 0, "dense"}, {flash::Rule::top_k, 4, 0, "top_k 4"},
               {flash::Rule::top_k, 1, 0, "top_k 1"}, {flash::Rule::threshold, 0, 0.3, "threshold 0.3"}};
  for (const auto& c : cases)
    for (bool masked : {false, true}) {
      const std::uint8_t* hk = masked ? keep.data() : nullptr;
      for (flash::idx t = 0; t < rows; ++t)
        for (flash::idx e = 0; e < D; ++e) dpre[std::size_t(t * D + e)] = (hk && !hk[t]) ? 0.0f : nd(g);
      flash::Problem<float> hp{.qkv = qkv.data(), .offsets = offsets.data(), .keep = hk, .batch = batch, .dim = D,
                               .heads = H, .rule = c.rule, .top_k = c.k, .threshold = c.tau};
      std::vector<float> pre(std::size_t(rows * D)), delta(std::size_t(rows * H)), dqkv(qkv.size());
      std::vector<flash::RowStats<float>> stats(std::size_t(rows * H));
      flash::forward_host(hp, pre.data(), stats.data());
      flash::backward_host(hp, stats.data(), pre.data(), dpre.data(), delta.data(), dqkv.data());

      flash::Problem<float> dp = hp;
      dp.qkv = d_qkv.data();
      dp.offsets = d_off.data();
      dp.keep = masked ? d_keep.data() : nullptr;
      d_dpre.upload(dpre.data(), dpre.size());
      d_pre.assign(pre.size(), std::nanf(""));    // sentinels: every value must be written
      d_dqkv.assign(qkv.size(), std::nanf(""));
      ops::cuda::flash_attention_forward(dp, rows, d_pre.data(), d_stats.data());
      ops::cuda::flash_attention_backward(dp, rows, d_stats.data(), d_pre.data(), d_dpre.data(), d_delta.data(),
                                          d_dqkv.data());
      SEQSWAP_CUDA_CHECK(cudaDeviceSynchronize());
      std::vector<float> got_pre(pre.size()), got_dqkv(dqkv.size());
      d_pre.download(got_pre.data(), got_pre.size());
      d_dqkv.download(got_dqkv.data(), got_dqkv.size());
      const std::string where = std::string(" (") + c.name + (masked ? ", masked" : "") + ", D " + std::to_string(D) +
                                ", heads " + std::to_string(H) + ")";
      seqswap::test::expect_close(got_pre, pre, 1e-5, "pre" + where);
      seqswap::test::expect_close(got_dqkv, dqkv, 1e-4, "dqkv" + where);
    }
}

}  // namespace

int main() {
  seqswap::test::skip_without_device();
  std::mt19937 g(3);
  check_width(48, 3, g);    // head width 16 (the float kernels' specialisation for 16)
  check_width(64, 2, g);    // head width 32 (specialised)
  check_width(192, 3, g);   // head width 64 (specialised; DeiT's)
  check_width(24, 3, g);    // head width 8: the kernels for any width
  check_width(256, 2, g);   // head width 128: the largest, 32 KB of shared memory per tile (any width)
  return seqswap::test::finish("device attention: every policy matches the host executor");
}
