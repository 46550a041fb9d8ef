// Google Benchmark: host ops and the teacher's training step.
//   build/release/benchmarks/bench_ops --benchmark_filter=. [--benchmark_out=x.json]
// Counters: items = tokens (ops) or images (train step); GFLOP/s where the FLOPs are known.
#include <benchmark/benchmark.h>

#include "seqswap/attention/softmax_attention.hpp"
#include "bench_util.hpp"
#include "seqswap/core/rng.hpp"
#include "seqswap/model/model.hpp"
#include "seqswap/model/vit.hpp"
#include "seqswap/ops/gemm.hpp"
#include "seqswap/ops/packet_exp.hpp"
#include "seqswap/ops/scan.hpp"
#include "seqswap/ops/selective_scan.hpp"
#include "seqswap/ops/small_gemm.hpp"
#include "seqswap/train/adamw.hpp"
#include "seqswap/train/loop.hpp"

using namespace seqswap;

namespace {
using bench::randn;
}  // namespace

// y = x Wᵀ + b at ViT shapes: rows = B*N tokens, (in, out).
static void BM_linear_forward(benchmark::State& s) {
  const index_t rows = s.range(0), in = s.range(1), out = s.range(2);
  auto x = randn(std::size_t(rows * in), 1), w = randn(std::size_t(out * in), 2), b = randn(std::size_t(out), 3);
  std::vector<float> y(std::size_t(rows * out));
  for (auto _ : s) {
    ops::linear_forward(x.data(), rows, in, w.data(), b.data(), out, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  s.SetItemsProcessed(s.iterations() * rows);
  s.counters["GFLOP/s"] = benchmark::Counter(double(2 * rows * in * out) * double(s.iterations()) * 1e-9,
                                             benchmark::Counter::kIsRate);
}
BENCHMARK(BM_linear_forward)->Args({6400, 64, 192})->Args({6400, 64, 256})->Args({6400, 256, 64})
    ->Args({1576, 192, 576})->UseRealTime()->Unit(benchmark::kMillisecond);

// The linear layer's backward at the same shapes: part 0 = dx = dy W, 1 = dW += dyᵀ x, db,
// 2 = all three in one call (as the layers call it).
static void BM_linear_backward(benchmark::State& s) {
  const index_t rows = s.range(0), in = s.range(1), out = s.range(2);
  const bool weights = s.range(3) != 0, both = s.range(3) == 2;
  auto x = randn(std::size_t(rows * in), 1), w = randn(std::size_t(out * in), 2), dy = randn(std::size_t(rows * out), 3);
  std::vector<float> dx(static_cast<std::size_t>(rows * in)), dw(static_cast<std::size_t>(out * in)),
      db(static_cast<std::size_t>(out));
  for (auto _ : s) {
    if (both)
      ops::linear_backward<float>(x.data(), rows, in, w.data(), out, dy.data(), dx.data(), dw.data(), db.data());
    else if (weights)
      ops::linear_backward<float>(x.data(), rows, in, w.data(), out, dy.data(), nullptr, dw.data(), db.data());
    else
      ops::linear_backward<float>(x.data(), rows, in, w.data(), out, dy.data(), dx.data(), nullptr, nullptr);
    benchmark::DoNotOptimize(dx.data());
    benchmark::DoNotOptimize(dw.data());
  }
  s.SetItemsProcessed(s.iterations() * rows);
  s.counters["GFLOP/s"] = benchmark::Counter(double((both ? 4 : 2) * rows * in * out) * double(s.iterations()) * 1e-9,
                                             benchmark::Counter::kIsRate);
}
BENCHMARK(BM_linear_backward)->ArgNames({"rows", "in", "out", "dW"})
    ->Args({6400, 64, 192, 0})->Args({6400, 64, 192, 1})->Args({6400, 64, 192, 2})
    ->Args({6400, 64, 256, 0})->Args({6400, 64, 256, 1})->Args({6400, 64, 256, 2})
    ->Args({6400, 256, 64, 0})->Args({6400, 256, 64, 1})->Args({6400, 256, 64, 2})
    ->UseRealTime()->Unit(benchmark::kMillisecond);

// The packet exp of a softmax row's shifted logits, in place over 512 rows of 50 (the values
// settle near 0.05, as probabilities do): impl 0 = ops::pexp_nonpositive, 1 = Eigen's pexp.
// One thread; s/value is the time per value (e.g. 413p = 0.413 ns).
static void BM_packet_exp(benchmark::State& s) {
  using namespace Eigen::internal;
  using P = packet_traits<float>::type;
  constexpr std::size_t S = unpacket_traits<P>::size, n = 512 * 50 / S * S;
  const bool eigen = s.range(0) != 0;
  std::vector<float> v(n, 0.05f);
  const P shift = pset1<P>(3.0f);
  for (auto _ : s) {
    for (std::size_t j = 0; j < n; j += S) {
      const P x = psub(ploadu<P>(v.data() + j), shift);
      pstoreu(v.data() + j, eigen ? pexp(x) : ops::pexp_nonpositive(x));
    }
    benchmark::DoNotOptimize(v.data());
  }
  s.counters["s/value"] = benchmark::Counter(double(n) * double(s.iterations()),
                                              benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_packet_exp)->ArgName("eigen")->Arg(0)->Arg(1);

// The six per-head products of softmax attention (ops/small_gemm.hpp) at the teacher's shape,
// one head of n = 50 tokens, width d = 16, in a row of width D = 64 (so the strides are the
// layer's): 0 S = Q Kᵀ, 1 O = P V, 2 dV = Pᵀ dO, 3 dP = dO Vᵀ, 4 dQ = dS K, 5 dK = dSᵀ Q. One
// thread, operands in L1: the register tiles' own rate, to hold against BM_fma_peak's per thread
// (a thousand products an iteration).
static void BM_head_product(benchmark::State& s) {
  const std::int64_t n = 50, d = 16, D = 64, which = s.range(0);
  const auto qkv = randn(std::size_t(n * 3 * D), 5), p = randn(std::size_t(n * n), 6), kt = randn(std::size_t(d * n), 7),
             dout = randn(std::size_t(n * D), 8);
  std::vector<float> out(std::size_t(n * 3 * D + n * n));
  ops::SmallGemmArgs g;
  const float *a = nullptr, *b = nullptr;
  switch (which) {
    case 0: g = {.m = n, .w = n, .k = d, .a_row = 3 * D, .ldb = n, .ldc = n}, a = qkv.data(), b = kt.data(); break;
    case 1: g = {.m = n, .w = d, .k = n, .a_row = n, .ldb = 3 * D, .ldc = D}, a = p.data(), b = qkv.data() + 2 * D; break;
    case 2: g = {.m = n, .w = d, .k = n, .a_row = 1, .a_col = n, .ldb = D, .ldc = 3 * D}, a = p.data(), b = dout.data(); break;
    case 3: g = {.m = n, .w = n, .k = d, .a_row = D, .ldb = n, .ldc = n}, a = dout.data(), b = kt.data(); break;
    case 4: g = {.m = n, .w = d, .k = n, .a_row = n, .ldb = 3 * D, .ldc = 3 * D}, a = p.data(), b = qkv.data() + D; break;
    default: g = {.m = n, .w = d, .k = n, .a_row = 1, .a_col = n, .ldb = 3 * D, .ldc = 3 * D}, a = p.data(), b = qkv.data(); break;
  }
  constexpr int kReps = 1000;  // products per iteration (times in ms, as compare_revisions.sh reads them)
  for (auto _ : s) {
    for (int r = 0; r < kReps; ++r) {
      ops::small_gemm<false>(g, 1.0f, a, b, out.data());
      benchmark::ClobberMemory();
    }
    benchmark::DoNotOptimize(out.data());
  }
  s.counters["GFLOP/s"] = benchmark::Counter(double(2 * g.m * g.w * g.k) * kReps * double(s.iterations()) * 1e-9,
                                             benchmark::Counter::kIsRate);
}
BENCHMARK(BM_head_product)->ArgName("product")->DenseRange(0, 5)->UseRealTime()->Unit(benchmark::kMillisecond);

// Softmax attention (D, H) over B sequences of N tokens: forward, and forward + backward.
// path: 0 = the default choice (rows stored up to N = 512), 1 = rows stored, 2 = memory-bounded
// (query blocks, recomputed in backward); the N 384 / 1024 rows are how the 512 was chosen.
static void BM_attention(benchmark::State& s) {
  const index_t B = s.range(0), N = s.range(1), D = s.range(2), H = s.range(3);
  const bool backward = s.range(4) != 0;
  attention::SoftmaxAttentionOptions o{.dim = D, .heads = H};
  if (s.range(5) == 1) o.store_probs_up_to = N;
  if (s.range(5) == 2) o.store_probs_up_to = 0;
  attention::SoftmaxAttention<float> a(o);
  auto p = randn(a.param_count(), 4);
  // Fan-in scale (as an initialised model has): unscaled N(0, 1) weights made logits of ~±60,
  // whose softmax is all underflow, and timed the denormal exps rather than the attention.
  for (auto& v : p) v /= std::sqrt(float(D));
  std::vector<float> g(p.size());
  const Layout l = Layout::dense(B, N, D);
  auto x = randn(l.size(), 5), dy = randn(l.size(), 6);
  std::vector<float> y(l.size()), dx(l.size());
  attention::SoftmaxAttention<float>::Ctx<backend::Host> c;
  using P = ParamsView<const float>;
  auto step = [&] {
    a.forward(P{p.data(), p.size()}, view_of<const float>(x.data(), l), view_of<float>(y.data(), l), c);
    if (backward)
      a.backward(P{p.data(), p.size()}, c, view_of<const float>(dy.data(), l), view_of<float>(dx.data(), l),
                 ParamsView<float>{g.data(), g.size()});
    benchmark::DoNotOptimize(y.data());
  };
  step();  // untimed: sizes the context's buffers
  for (auto _ : s) step();
  s.SetItemsProcessed(s.iterations() * B * N);
}
BENCHMARK(BM_attention)->ArgNames({"B", "N", "D", "H", "bwd", "path"})
    ->Args({128, 50, 64, 4, 0, 0})->Args({128, 50, 64, 4, 1, 0})
    ->Args({8, 197, 192, 3, 0, 0})->Args({8, 197, 192, 3, 1, 0})
    ->Args({8, 384, 192, 3, 1, 1})->Args({8, 384, 192, 3, 1, 2})
    ->Args({8, 1024, 192, 3, 1, 1})->Args({8, 1024, 192, 3, 1, 2})
    ->UseRealTime()->Unit(benchmark::kMillisecond);

// The linear-recurrence scan over (T, C) with its operands in memory (3 x 48 MB at T 4096,
// C 3072): sequential reference, chunked form, channel-blocked form. bytes = read a, read b,
// write h (the triad's three streams), so bytes_per_second compares with BM_triad.
static void BM_scan(benchmark::State& s) {
  const index_t T = s.range(0), C = s.range(1), chunk = s.range(2);
  const auto path = static_cast<ops::ScanPath>(s.range(3));
  auto a = randn(std::size_t(T * C), 7), b = randn(std::size_t(T * C), 8);
  for (auto& v : a) v = 0.5f + 0.4f * std::tanh(v);
  std::vector<float> h(a.size());
  const std::vector<index_t> offsets{0, T};
  for (auto _ : s) {
    ops::linear_scan(a.data(), b.data(), h.data(), offsets.data(), 1, C, {.chunk = chunk, .path = path});
    benchmark::DoNotOptimize(h.data());
  }
  s.SetItemsProcessed(s.iterations() * T);
  s.SetBytesProcessed(s.iterations() * T * C * 3 * index_t(sizeof(float)));
}
BENCHMARK(BM_scan)->ArgNames({"T", "C", "chunk", "path"})->Args({4096, 3072, 0, 0})
    ->Args({4096, 3072, 256, int(ops::ScanPath::chunked)})
    ->Args({4096, 3072, 256, int(ops::ScanPath::channels)})
    ->UseRealTime()->Unit(benchmark::kMillisecond);

// The fused selective scan alone (one direction), at the selective SSM's shape in a ViT of
// width 192: B 8 sequences of N tokens, E 384 channels, S 16 states. items = tokens.
static void BM_selective_scan(benchmark::State& s) {
  const index_t B = s.range(0), N = s.range(1), E = s.range(2), S = s.range(3), T = B * N;
  auto delta = randn(std::size_t(T * E), 11), u = randn(std::size_t(T * E), 12);
  auto bc = randn(std::size_t(T * 2 * S), 13), A = randn(std::size_t(E * S), 14), D = randn(std::size_t(E), 15);
  for (auto& v : delta) v = 0.01f + 0.05f * std::abs(v);  // Δ: softplus-sized steps
  for (auto& v : A) v = -1.0f - std::abs(v);              // A < 0
  std::vector<float> y(std::size_t(T * E));
  std::vector<index_t> offsets;
  for (index_t b = 0; b <= B; ++b) offsets.push_back(b * N);
  for (auto _ : s) {
    ops::selective_scan_forward<float>({.delta = delta.data(), .u = u.data(), .bc = bc.data(), .ldbc = 2 * S,
                                        .A = A.data(), .Dskip = D.data(), .offsets = offsets.data(),
                                        .batch = B, .E = E, .S = S, .y = y.data()});
    benchmark::DoNotOptimize(y.data());
  }
  s.SetItemsProcessed(s.iterations() * T);
}
BENCHMARK(BM_selective_scan)->ArgNames({"B", "N", "E", "S"})->Args({8, 1024, 384, 16})
    ->UseRealTime()->Unit(benchmark::kMillisecond);

// The shipped teacher's architecture, initialised, its AdamW and a batch of B random images with
// labels: run(m, opt, x, labels) times what the benchmark does with them.
template <class Run>
static void with_teacher_batch(benchmark::State& s, index_t B, Run run) {
  model::VitConfig cfg{.image_size = 28, .channels = 1, .patch = 4, .width = 64, .depth = 8,
                       .heads = 4, .mlp_ratio = 4.0, .classes = 10};
  model::Model m(model::make_vit<float>(cfg));
  m.init(0);
  train::AdamW<float> opt({}, m.params_info(), m.param_count());
  auto x = randn(std::size_t(B * 784), 9);
  std::vector<std::int32_t> labels(static_cast<std::size_t>(B));
  for (index_t i = 0; i < B; ++i) labels[std::size_t(i)] = std::int32_t(i % 10);
  run(m, opt, x, labels);
  s.SetItemsProcessed(s.iterations() * B);
}

// One training step (forward + backward + AdamW) per batch.
static void BM_teacher_train_step(benchmark::State& s) {
  const index_t B = s.range(0);
  with_teacher_batch(s, B, [&](auto& m, auto& opt, const auto& x, const auto& labels) {
    std::vector<float> scratch;
    // Untimed first step: it sizes every context buffer (and touches its pages), ~4x a later one.
    train::train_step(m, opt, x.data(), labels.data(), B, 784, 1e-4, {}, scratch);
    for (auto _ : s) {
      auto r = train::train_step(m, opt, x.data(), labels.data(), B, 784, 1e-4, {}, scratch);
      benchmark::DoNotOptimize(r.loss);
    }
  });
}
BENCHMARK(BM_teacher_train_step)->Arg(128)->UseRealTime()->Unit(benchmark::kMillisecond);

// The same step with the batch's forward and backward in `parts` micro-batches whose gradients
// accumulate (each part's dlogits scaled by its share of the batch), then one clip and AdamW step:
// the gradient of the whole batch up to float summation order, with activations of a part only.
static void BM_teacher_train_step_parts(benchmark::State& s) {
  const index_t B = s.range(0), parts = s.range(1), P = B / parts;
  with_teacher_batch(s, B, [&](auto& m, auto& opt, const auto& x, const auto& labels) {
    std::vector<float> scratch;
    const auto step = [&] {
      m.zero_grad();
      double loss = 0;
      for (index_t k = 0; k < parts; ++k) {
        auto logits = m.forward(x.data() + k * P * 784, P, 784);
        scratch.resize(std::size_t(P * logits.dim));
        loss += train::cross_entropy(logits.data, labels.data() + k * P, P, logits.dim, 0.1, scratch.data()).loss;
        for (auto& g : scratch) g /= float(parts);
        m.backward(scratch.data());
      }
      train::clip_and_step(m, opt, 1e-4, 1.0);
      return loss;
    };
    step();
    for (auto _ : s) benchmark::DoNotOptimize(step());
  });
}
BENCHMARK(BM_teacher_train_step_parts)->ArgNames({"B", "parts"})->Args({128, 1})->Args({128, 2})->Args({128, 4})
    ->UseRealTime()->Unit(benchmark::kMillisecond);

// The teacher's forward, and forward + backward (no optimizer), per batch.
static void BM_teacher(benchmark::State& s) {
  const index_t B = s.range(0);
  const bool backward = s.range(1) != 0;
  model::VitConfig cfg{.image_size = 28, .channels = 1, .patch = 4, .width = 64, .depth = 8,
                       .heads = 4, .mlp_ratio = 4.0, .classes = 10};
  model::Model m(model::make_vit<float>(cfg));
  m.init(0);
  auto x = randn(std::size_t(B * 784), 9), dl = randn(std::size_t(B * 10), 10);
  auto step = [&] {
    auto y = m.forward(x.data(), B, 784);
    if (backward) {
      m.zero_grad();
      m.backward(dl.data());
    }
    benchmark::DoNotOptimize(y.data);
  };
  step();
  for (auto _ : s) step();
  s.SetItemsProcessed(s.iterations() * B);
}
BENCHMARK(BM_teacher)->ArgNames({"B", "bwd"})->Args({128, 0})->Args({128, 1})->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// A ViT-Tiny block stack (D 192, 3 heads, MLP 768, 12 blocks) on B sequences of N tokens.
static void BM_vit_tiny_stack(benchmark::State& s) {
  const index_t B = s.range(0), N = s.range(1);
  const bool backward = s.range(2) != 0;
  model::VitConfig cfg{.image_size = 224, .channels = 3, .patch = 16, .width = 192, .depth = 12,
                       .heads = 3, .mlp_ratio = 4.0, .classes = 1000};
  std::vector<model::Block<float>> blocks;
  for (index_t i = 0; i < cfg.depth; ++i) blocks.push_back(model::make_block<float>(cfg));
  model::Model m(model::Repeat<model::Block<float>>(std::move(blocks), "blocks"));
  m.init(0);
  const Layout l = Layout::dense(B, N, cfg.width);
  auto x = randn(l.size(), 11), dy = randn(l.size(), 12);
  std::vector<float> dx(l.size());
  auto step = [&] {
    auto y = m.forward(view_of<const float>(x.data(), l));
    if (backward) {
      m.zero_grad();
      m.backward(dy.data(), dx.data());
    }
    benchmark::DoNotOptimize(y.data);
  };
  step();
  for (auto _ : s) step();
  s.SetItemsProcessed(s.iterations() * B);
}
BENCHMARK(BM_vit_tiny_stack)->ArgNames({"B", "N", "bwd"})->Args({8, 197, 0})->Args({8, 197, 1})
    ->UseRealTime()->Unit(benchmark::kMillisecond);

// Machine ceilings measured in the same run as everything else: FMA throughput (12 independent
// accumulators of the widest vector the build targets — 16 floats with AVX-512, else 8 — per
// thread, all threads) and the DRAM triad a = b + s c over 3 x 64 MB.
static void BM_fma_peak(benchmark::State& s) {
#if defined(__AVX512F__)
  constexpr int kW = 16;
#else
  constexpr int kW = 8;
#endif
  using vec = float __attribute__((vector_size(4 * kW)));
  const int threads = host::max_threads();
  constexpr long kIters = 1 << 22;
  for (auto _ : s) {
    float sink = 0;
#pragma omp parallel reduction(+ : sink)
    {
      vec acc[12];
      for (int i = 0; i < 12; ++i) acc[i] = vec{} + float(i) * 1e-3f;
      const vec m = vec{} + 0.999999f, a = vec{} + 1e-7f;
      for (long it = 0; it < kIters; ++it)
#pragma unroll
        for (int i = 0; i < 12; ++i) acc[i] = acc[i] * m + a;
      for (int i = 0; i < 12; ++i)
        for (int j = 0; j < kW; ++j) sink += acc[i][j];
    }
    benchmark::DoNotOptimize(sink);
  }
  s.counters["GFLOP/s"] = benchmark::Counter(double(threads) * kIters * 12 * kW * 2 * double(s.iterations()) * 1e-9,
                                             benchmark::Counter::kIsRate);
  s.counters["threads"] = threads;
  s.counters["vector_floats"] = kW;
}
BENCHMARK(BM_fma_peak)->UseRealTime()->Unit(benchmark::kMillisecond);

static void BM_triad(benchmark::State& s) {
  const std::size_t n = std::size_t(16) << 20;  // 64 MB per array
  std::vector<float> a(n), b(n, 1.0f), c(n, 2.0f);
  for (auto _ : s) {
#pragma omp parallel for schedule(static)
    for (std::size_t i = 0; i < n; ++i) a[i] = b[i] + 0.5f * c[i];
    benchmark::DoNotOptimize(a.data());
  }
  s.SetBytesProcessed(s.iterations() * std::int64_t(n * 3 * sizeof(float)));
}
BENCHMARK(BM_triad)->UseRealTime()->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
