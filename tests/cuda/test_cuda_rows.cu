// Device layer norm, GELU, softmax cross-entropy and AdamW (ops/cuda/rows.cuh) on odd sizes
// against the host ops (ops/layer_norm.hpp, train/loss.hpp, train/adamw.hpp) and, for GELU, the
// exact function: outputs, saved statistics, gradients (parameter gradients accumulated onto
// non-zero values), losses and accuracy counts, and three AdamW steps with a decay mask and
// frozen entries. Outputs start as NaN sentinels. Without a CUDA device it prints "no CUDA device:
// skipped" and exits 77 (ctest: skipped, never passed).
#include <cmath>
#include <numbers>
#include <cstdio>
#include <random>
#include <vector>

#include "seqswap/ops/cuda/rows.cuh"
#include "seqswap/ops/layer_norm.hpp"
#include "seqswap/train/adamw.hpp"
#include "seqswap/train/loss.hpp"
#include "device_check.cuh"

using namespace seqswap;
using seqswap::cuda::DeviceBuffer;

using seqswap::test::down;
using seqswap::test::expect_close;
using seqswap::test::up;

int main() {
  seqswap::test::skip_without_device();
  std::mt19937 g(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const auto randv = [&](std::size_t n, float scale = 1.0f) {
    std::vector<float> v(n);
    for (auto& e : v) e = nd(g) * scale;
    return v;
  };
  const float nan = std::nanf("");

  // Layer norm: 1, 333 rows; widths 1, 37, 192.
  for (long long rows : {1LL, 333LL})
    for (long long D : {1LL, 37LL, 192LL}) {
      const auto x = randv(std::size_t(rows * D), 2.0f), gamma = randv(std::size_t(D)), beta = randv(std::size_t(D)),
                 dy = randv(std::size_t(rows * D));
      std::vector<float> y(x.size()), mean(static_cast<std::size_t>(rows)), rstd(static_cast<std::size_t>(rows)), dx(x.size());
      auto dgamma = randv(std::size_t(D)), dbeta = randv(std::size_t(D));  // accumulated onto
      auto d_x = up(x), d_gamma = up(gamma), d_beta = up(beta), d_dy = up(dy), d_dgamma = up(dgamma),
           d_dbeta = up(dbeta);
      ops::layer_norm_forward(x.data(), rows, D, gamma.data(), beta.data(), 1e-6f, y.data(), mean.data(), rstd.data());
      ops::layer_norm_backward(x.data(), rows, D, gamma.data(), mean.data(), rstd.data(), dy.data(), dx.data(),
                               dgamma.data(), dbeta.data());
      DeviceBuffer<float> d_y, d_mean, d_rstd, d_dx;
      d_y.assign(y.size(), nan);
      d_mean.assign(mean.size(), nan);
      d_rstd.assign(rstd.size(), nan);
      d_dx.assign(dx.size(), nan);
      ops::cuda::layer_norm_forward(d_x.data(), rows, D, d_gamma.data(), d_beta.data(), 1e-6f, d_y.data(),
                                    d_mean.data(), d_rstd.data());
      ops::cuda::layer_norm_backward(d_x.data(), rows, D, d_gamma.data(), d_mean.data(), d_rstd.data(), d_dy.data(),
                                     d_dx.data(), d_dgamma.data(), d_dbeta.data());
      SEQSWAP_CUDA_CHECK(cudaDeviceSynchronize());
      expect_close(down(d_y), y, 1e-5, "layer_norm y");
      expect_close(down(d_mean), mean, 1e-5, "layer_norm mean");
      expect_close(down(d_rstd), rstd, 1e-5, "layer_norm rstd");
      // dx = rstd (dy γ − mean(dy γ) − x̂ mean(dy γ x̂)) cancels: at width 1 it is exactly 0 on the
      // host, and the device's fused multiply-add leaves the rounding of dy γ (times rstd = 1000,
      // the variance being 0). Relative to the terms that cancel, rstd · max |dy γ|.
      double terms = 0;
      for (long long r = 0; r < rows; ++r)
        for (long long j = 0; j < D; ++j) {
          const double g = double(dy[std::size_t(r * D + j)]) * double(gamma[std::size_t(j)]);
          terms = std::max(terms, double(rstd[std::size_t(r)]) * std::abs(g));
        }
      expect_close(down(d_dx), dx, 1e-4, "layer_norm dx", terms);
      expect_close(down(d_dgamma), dgamma, 1e-4, "layer_norm dgamma");
      expect_close(down(d_dbeta), dbeta, 1e-4, "layer_norm dbeta");
    }

  // GELU over 1 and 4097 values (the erf clamp region, |x| / √2 > 4, included) against the exact
  // function in double. The device computes ½ x (1 + erf(x / √2)) with the math library's erf
  // (ops/rows.hpp), the host op with a rational erf within 3e-7 of it (ops/gelu.hpp, checked in
  // tests/test_units.cpp): neither is the other's reference, and in the far negative tail, where
  // Φ(x) is below float's resolution of 1 + erf, both carry absolute errors of ~1e-7 that are
  // large relative errors of a single value. Hence one fixed value at n = 1.
  for (std::size_t n : {std::size_t(1), std::size_t(4097)}) {
    auto x = randv(n, 3.0f);
    if (n == 1) x[0] = -1.3f;
    const auto dy = randv(n);
    std::vector<double> y(n), dx(n);
    for (std::size_t i = 0; i < n; ++i) {
      const double v = x[i], cdf = 0.5 * (1.0 + std::erf(v / std::sqrt(2.0)));
      y[i] = v * cdf;
      dx[i] = dy[i] * (cdf + v * std::exp(-0.5 * v * v) / std::sqrt(2.0 * std::numbers::pi));
    }
    auto d_x = up(x), d_dy = up(dy);
    DeviceBuffer<float> d_y, d_dx;
    d_y.assign(n, nan);
    d_dx.assign(n, nan);
    ops::cuda::gelu_forward(d_x.data(), (long long)n, d_y.data());
    ops::cuda::gelu_backward(d_x.data(), d_dy.data(), (long long)n, d_dx.data());
    SEQSWAP_CUDA_CHECK(cudaDeviceSynchronize());
    expect_close(down(d_y), y, 1e-6, "gelu y");
    expect_close(down(d_dx), dx, 1e-6, "gelu dx");
  }

  // Cross-entropy: B 1, 129; C 10, 1000; smoothing 0 and 0.1.
  for (long long B : {1LL, 129LL})
    for (long long C : {10LL, 1000LL})
      for (double eps : {0.0, 0.1}) {
        const auto z = randv(std::size_t(B * C), 3.0f);
        std::vector<std::int32_t> labels(static_cast<std::size_t>(B));
        for (auto& l : labels) l = std::int32_t(g() % std::uint32_t(C));
        std::vector<float> dz(z.size());
        const auto ref = train::cross_entropy(z.data(), labels.data(), B, C, eps, dz.data());
        auto d_z = up(z);
        auto d_labels = up(labels);
        DeviceBuffer<float> d_dz;
        d_dz.assign(dz.size(), nan);
        DeviceBuffer<double> d_loss;
        d_loss.resize(std::size_t(B));
        DeviceBuffer<std::uint8_t> d_correct;
        d_correct.resize(std::size_t(B));
        ops::cuda::cross_entropy(d_z.data(), d_labels.data(), B, C, eps, d_dz.data(), d_loss.data(), d_correct.data());
        SEQSWAP_CUDA_CHECK(cudaDeviceSynchronize());
        double loss = 0;
        long long correct = 0;
        for (double l : down(d_loss)) loss += l / double(B);
        for (auto c : down(d_correct)) correct += c;
        expect_close(std::vector<double>{loss}, std::vector<double>{ref.loss}, 1e-6, "cross_entropy loss");
        if (correct != ref.correct) {
          std::printf("FAILED: cross_entropy correct %lld, host %lld\n", correct, (long long)ref.correct);
          ++seqswap::test::failures;
        }
        expect_close(down(d_dz), dz, 1e-5, "cross_entropy dlogits");
      }

  // AdamW: 3 steps over 1000 values, every third decayed, every seventh frozen.
  {
    const std::size_t n = 1000;
    std::vector<ParamInfo> infos;
    for (std::size_t off = 0; off + 3 <= n; off += 3) infos.push_back({.name = "w", .offset = off, .count = 1, .decay = true});
    auto p = randv(n), m = std::vector<float>(n, 0.0f), v = std::vector<float>(n, 0.0f);
    std::vector<std::uint8_t> trainable(n, 1);
    for (std::size_t i = 0; i < n; i += 7) trainable[i] = 0;
    train::AdamW<float> host({.lr = 1e-2, .weight_decay = 0.1}, infos, n), dev({.lr = 1e-2, .weight_decay = 0.1}, infos, n);
    auto d_p = up(p), d_m = up(m), d_v = up(v);
    auto d_trainable = up(trainable), d_decay = up(dev.decay_mask());
    for (int step = 0; step < 3; ++step) {
      const auto grad = randv(n);
      host.step(p.data(), grad.data(), m.data(), v.data(), n, 1e-2, trainable.data());
      auto d_g = up(grad);
      ops::cuda::adamw_step(d_p.data(), d_g.data(), d_m.data(), d_v.data(), (long long)n, d_decay.data(),
                            d_trainable.data(), dev.next_step(1e-2));
    }
    SEQSWAP_CUDA_CHECK(cudaDeviceSynchronize());
    expect_close(down(d_p), p, 1e-6, "adamw p");
    expect_close(down(d_m), m, 1e-6, "adamw m");
    expect_close(down(d_v), v, 1e-6, "adamw v");
  }

  return seqswap::test::finish("device layer norm, GELU, cross-entropy and AdamW match the host ops");
}
