// Image decoding and preprocessing throughput, images per second on ONE core (Google Benchmark's
// items_per_second): JPEG and PNG decode of an ImageNet-sized photo-like image (500 x 375 RGB,
// smooth gradients plus noise), DeiT's evaluation transform (resize 256, centre crop 224) and its
// training transform (random resized crop 224 + flip), and the streaming loader's whole batch
// path with 1 and 2 worker threads (items = images; the workers' rate, not per core).
//
//   build/release/benchmarks/bench_decode
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <filesystem>

#include "seqswap/io/image_folder.hpp"

using namespace seqswap;

namespace {

const io::Image& photo() {
  static const io::Image img = [] {
    io::Image im{500, 375, 3, {}};
    Rng rng(7);
    for (index_t y = 0; y < im.height; ++y)
      for (index_t x = 0; x < im.width; ++x)
        for (index_t c = 0; c < 3; ++c) {
          const double v = 128 + 60 * std::sin(0.02 * double(x) * double(c + 1)) + 40 * std::cos(0.03 * double(y)) +
                           12 * rng.normal();
          im.pixels.push_back(std::uint8_t(std::clamp(v, 0.0, 255.0)));
        }
    return im;
  }();
  return img;
}
const std::vector<std::uint8_t>& jpeg() {
  static const auto bytes = io::encode_jpeg(photo(), 90);
  return bytes;
}
const std::vector<std::uint8_t>& png() {
  static const auto bytes = io::encode_png(photo());
  return bytes;
}

void BM_DecodeJpeg(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(io::decode_image(jpeg().data(), jpeg().size(), 3, "bench"));
  state.SetItemsProcessed(state.iterations());
  state.counters["kB"] = double(jpeg().size()) / 1e3;
}
void BM_DecodePng(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(io::decode_image(png().data(), png().size(), 3, "bench"));
  state.SetItemsProcessed(state.iterations());
  state.counters["kB"] = double(png().size()) / 1e3;
}
void BM_JpegEvalTransform(benchmark::State& state) {
  std::vector<std::uint8_t> planar(3 * 224 * 224);
  for (auto _ : state) {
    const auto img = io::decode_image(jpeg().data(), jpeg().size(), 3, "bench");
    io::to_planar(io::preprocess(img, {.size = 224, .channels = 3}, nullptr), planar.data());
    benchmark::DoNotOptimize(planar.data());
  }
  state.SetItemsProcessed(state.iterations());
}
void BM_JpegTrainTransform(benchmark::State& state) {
  std::vector<std::uint8_t> planar(3 * 224 * 224);
  Rng rng(1);
  for (auto _ : state) {
    const auto img = io::decode_image(jpeg().data(), jpeg().size(), 3, "bench");
    io::to_planar(io::preprocess(img, {.size = 224, .channels = 3, .train = true}, &rng), planar.data());
    benchmark::DoNotOptimize(planar.data());
  }
  state.SetItemsProcessed(state.iterations());
}

// The loader end to end over a folder of 64 copies of the JPEG (page cache warm after the first
// pass): batches of 32, train transform, normalised floats out.
void BM_FolderLoader(benchmark::State& state) {
  namespace fs = std::filesystem;
  static const fs::path root = [] {
    const fs::path r = fs::temp_directory_path() / ("seqswap_bench_decode_" + std::to_string(::getpid()));
    for (int c = 0; c < 2; ++c) {
      fs::create_directories(r / ("c" + std::to_string(c)));
      for (int i = 0; i < 32; ++i)
        io::write_file_atomic(r / ("c" + std::to_string(c)) / ("i" + std::to_string(i) + ".jpg"),
                              std::span<const std::byte>(reinterpret_cast<const std::byte*>(jpeg().data()), jpeg().size()));
    }
    return r;
  }();
  io::FolderOptions o;
  o.transform = {.size = 224, .channels = 3, .train = true};
  o.workers = int(state.range(0));
  io::ImageFolderLoader loader(io::scan_image_folder(root), 32, true, 1, o);
  std::vector<float> x;
  std::vector<std::int32_t> y;
  loader.next_cycling(x, y);  // workers started, first batches in flight
  std::int64_t images = 0;
  for (auto _ : state) images += loader.next_cycling(x, y);
  state.SetItemsProcessed(images);
}

}  // namespace

BENCHMARK(BM_DecodeJpeg)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DecodePng)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_JpegEvalTransform)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_JpegTrainTransform)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FolderLoader)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_MAIN();
