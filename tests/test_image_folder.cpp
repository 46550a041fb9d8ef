// Image folders: PNG/JPEG decoding, DeiT preprocessing, corrupt files (reported by path; skipped
// or fatal), the in-memory and streaming loaders, and the stream feeding training steps. The
// folder is written by the test from Fashion-MNIST test images (PNG and JPEG) plus two corrupt
// files.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "seqswap/io/image_folder.hpp"
#include "seqswap/model/model.hpp"
#include "seqswap/model/vit.hpp"
#include "seqswap/train/loop.hpp"
#include "test_util.hpp"

using namespace seqswap;
namespace fs = std::filesystem;

namespace {

struct Fixture {
  fs::path root;
  io::ImageDataset source;        // the images written, in the folder's (sorted) order
  std::vector<bool> is_png;       // per written image
  index_t per_class = 12, classes = 3;

  Fixture() {
    root = fs::temp_directory_path() / ("seqswap_images_" + std::to_string(::getpid()));
    fs::remove_all(root);
    const auto test = io::load_fashion_mnist(io::Split::test);
    source = test;
    source.count = 0;
    source.pixels.clear();
    source.labels.clear();
    const index_t E = test.image_numel();
    for (index_t c = 0; c < classes; ++c) {
      fs::create_directories(root / ("class" + std::to_string(c)));
      index_t written = 0;
      for (index_t i = 0; i < test.count && written < per_class; ++i) {
        if (test.labels[std::size_t(i)] != c) continue;
        io::Image img{test.size, test.size, 1, {test.pixels.begin() + i * E, test.pixels.begin() + (i + 1) * E}};
        const bool png = written % 2 == 0;
        char name[32];
        std::snprintf(name, sizeof name, "img%03d.%s", int(written), png ? "png" : "jpg");
        io::write_image(root / ("class" + std::to_string(c)) / name, img, 95);
        source.pixels.insert(source.pixels.end(), img.pixels.begin(), img.pixels.end());
        source.labels.push_back(std::int32_t(c));
        is_png.push_back(png);
        ++source.count;
        ++written;
      }
    }
    // A truncated JPEG (sorts after the good files of class 0) and bytes that are no image.
    const auto good = io::encode_jpeg(io::Image{28, 28, 1, std::vector<std::uint8_t>(784, 100)});
    std::ofstream(root / "class0" / "zz_truncated.jpg", std::ios::binary)
        .write(reinterpret_cast<const char*>(good.data()), std::streamsize(good.size() / 2));
    std::ofstream(root / "class1" / "zz_garbage.png", std::ios::binary) << "this is not a PNG file at all";
    std::ofstream(root / "class2" / "notes.txt") << "ignored: not an image name";
  }
  ~Fixture() { fs::remove_all(root); }
};

Fixture& fixture() {
  static Fixture f;
  return f;
}

io::FolderOptions eval_options(io::OnCorrupt on_corrupt, std::vector<std::string>* reported = nullptr) {
  io::FolderOptions o;
  o.transform = {.size = 28, .channels = 1, .crop_pct = 1.0};  // 28 / 1.0 = 28: no resize, no crop
  o.norm = io::Normalize::fashion_mnist();
  o.on_corrupt = on_corrupt;
  o.workers = 3;
  if (reported) o.report = [reported](const fs::path& p, const std::string&) { reported->push_back(p.filename().string()); };
  return o;
}

}  // namespace

TEST_CASE("PNG round trips exactly, JPEG closely, and the format is read from the bytes", "[io][images]") {
  io::Image img{5, 3, 3, {}};
  for (int i = 0; i < 45; ++i) img.pixels.push_back(std::uint8_t(i * 5));
  const auto png = io::encode_png(img);
  const auto back = io::decode_image(png.data(), png.size(), 0, "test");
  CHECK(back.width == 5);
  CHECK(back.height == 3);
  CHECK(back.channels == 3);
  CHECK(back.pixels == img.pixels);
  // Grey conversion of an RGB PNG, and a JPEG of a smooth image.
  CHECK(io::decode_image(png.data(), png.size(), 1, "test").channels == 1);
  io::Image smooth{32, 32, 1, {}};
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 32; ++x) smooth.pixels.push_back(std::uint8_t(4 * x + 2 * y));
  const auto jpg = io::encode_jpeg(smooth, 95);
  CHECK(io::sniff_image_format(jpg.data(), jpg.size()) == io::ImageFormat::jpeg);
  const auto dj = io::decode_image(jpg.data(), jpg.size(), 0, "test");
  double err = 0;
  for (std::size_t i = 0; i < dj.pixels.size(); ++i) err += std::abs(int(dj.pixels[i]) - int(smooth.pixels[i]));
  CHECK(err / double(dj.pixels.size()) < 2.0);
  // Errors name the source and what was found.
  const std::uint8_t junk[] = {'G', 'I', 'F', '8'};
  REQUIRE_THROWS_WITH(io::decode_image(junk, 4, 0, "image x.png"),
                      Catch::Contains("image x.png") && Catch::Contains("expected a JPEG") && Catch::Contains("47494638"));
  REQUIRE_THROWS_WITH(io::read_image("/nonexistent/seqswap.png"), Catch::Contains("/nonexistent/seqswap.png"));
  REQUIRE_THROWS_WITH(io::write_image(fs::temp_directory_path() / "x.bmp", img), Catch::Contains(".bmp"));
}

TEST_CASE("resizing is antialiased and exact at scale 1", "[io][images]") {
  io::Image board{64, 64, 1, {}};
  for (int y = 0; y < 64; ++y)
    for (int x = 0; x < 64; ++x) board.pixels.push_back(std::uint8_t(((x + y) % 2) * 254));
  // Halving a 1-pixel checkerboard averages it (nearest-pixel sampling would give 0 or 254).
  const auto half = io::resize_region(board, 0, 0, 64, 64, 32, 32);
  for (int y = 2; y < 30; ++y)
    for (int x = 2; x < 30; ++x) CHECK(std::abs(int(half.at(y, x, 0)) - 127) <= 1);
  const auto same = io::resize_region(board, 0, 0, 64, 64, 64, 64);
  CHECK(same.pixels == board.pixels);
  // DeiT's evaluation transform of a 300 x 200 image: shorter side to 256, centre 224.
  io::Image wide{300, 200, 3, std::vector<std::uint8_t>(300 * 200 * 3, 77)};
  const auto t = io::preprocess(wide, {.size = 224, .channels = 3}, nullptr);
  CHECK(t.width == 224);
  CHECK(t.height == 224);
  CHECK(t.at(100, 100, 2) == 77);
  Rng rng(1);
  const auto r = io::preprocess(wide, {.size = 96, .channels = 3, .train = true}, &rng);
  CHECK(r.width == 96);
  CHECK(r.at(50, 50, 0) == 77);
}

TEST_CASE("an image folder loads into memory; corrupt files fail or are skipped by path", "[io][images]") {
  auto& fx = fixture();
  const auto folder = io::scan_image_folder(fx.root);
  CHECK(folder.classes == std::vector<std::string>{"class0", "class1", "class2"});
  CHECK(index_t(folder.samples.size()) == fx.source.count + 2);  // .txt left out

  REQUIRE_THROWS_WITH(io::load_image_folder(folder, eval_options(io::OnCorrupt::fail)),
                      Catch::Contains("zz_truncated.jpg") && Catch::Contains("on-corrupt skip"));
  std::vector<std::string> reported;
  index_t skipped = 0;
  const auto d = io::load_image_folder(folder, eval_options(io::OnCorrupt::skip, &reported), &skipped);
  CHECK(skipped == 2);
  std::sort(reported.begin(), reported.end());
  CHECK(reported == std::vector<std::string>{"zz_garbage.png", "zz_truncated.jpg"});
  REQUIRE(d.count == fx.source.count);
  CHECK(d.classes == 3);
  CHECK(d.labels == fx.source.labels);
  CHECK(d.norm == io::Normalize::fashion_mnist());
  const index_t E = d.image_numel();
  double jpeg_err = 0;
  index_t jpegs = 0;
  for (index_t i = 0; i < d.count; ++i) {
    const auto a = d.pixels.cbegin() + i * E, b = fx.source.pixels.cbegin() + i * E;
    if (fx.is_png[std::size_t(i)]) {
      CHECK(std::equal(a, a + E, b));  // lossless end to end
    } else {
      for (index_t k = 0; k < E; ++k) jpeg_err += std::abs(int(a[k]) - int(b[k]));
      ++jpegs;
    }
  }
  CHECK(jpeg_err / double(jpegs * E) < 3.0);  // quality 95: a few grey levels on average

  // Bad folders.
  REQUIRE_THROWS_WITH(io::scan_image_folder(fx.root / "nope"), Catch::Contains("nope") && Catch::Contains("found nothing"));
  REQUIRE_THROWS_WITH(io::scan_image_folder(fx.root / "class0"), Catch::Contains("class folders"));
  REQUIRE_THROWS_WITH(io::scan_image_folder(fx.root, {"class0", "class1"}), Catch::Contains("'(none)' vs 'class2'"));
  auto rgb = eval_options(io::OnCorrupt::skip);
  rgb.transform.channels = 3;  // Fashion-MNIST's one-value normalisation still applies to 3 channels
  CHECK(io::load_image_folder(folder, rgb).channels == 3);
  rgb.norm = io::Normalize{{0.1, 0.2}, {0.3, 0.3}};
  REQUIRE_THROWS_WITH(io::load_image_folder(folder, rgb), Catch::Contains("1 or 3 values"));
}

TEST_CASE("the streaming loader matches the in-memory one and does not depend on the worker count", "[io][images]") {
  auto& fx = fixture();
  const auto folder = io::scan_image_folder(fx.root);
  std::vector<std::string> reported;
  const auto d = io::load_image_folder(folder, eval_options(io::OnCorrupt::skip));
  {
    // Evaluation order: the stream over one epoch equals BatchLoader over the loaded dataset.
    io::ImageFolderLoader stream(folder, 7, /*shuffle=*/false, 0, eval_options(io::OnCorrupt::skip, &reported));
    io::BatchLoader mem(d, 7, false, 0);
    std::vector<float> a, b, xa, xb;
    std::vector<std::int32_t> la, lb, ya, yb;
    while (index_t n = stream.next(xa, ya)) {
      a.insert(a.end(), xa.begin(), xa.begin() + n * stream.image_numel());
      la.insert(la.end(), ya.begin(), ya.end());
    }
    while (index_t n = mem.next(xb, yb)) {
      b.insert(b.end(), xb.begin(), xb.begin() + n * mem.image_numel());
      lb.insert(lb.end(), yb.begin(), yb.end());
    }
    CHECK(la == lb);
    CHECK(a == b);
    CHECK(stream.skipped() == 2);
    CHECK(reported.size() == 2);  // each corrupt file reported once
  }
  // Training: shuffled, augmented; batch k is a function of (seed, k) only.
  auto train = eval_options(io::OnCorrupt::skip);
  train.transform = {.size = 24, .channels = 1, .train = true, .scale_min = 0.5};
  std::vector<std::vector<float>> runs[2];
  for (int w : {1, 4}) {
    train.workers = w;
    io::ImageFolderLoader stream(folder, 8, true, 42, train, /*prefetch=*/3);
    std::vector<float> x;
    std::vector<std::int32_t> y;
    for (int k = 0; k < 12; ++k) {  // 3 epochs of 5 batches (38 files, 2 skipped)
      stream.next_cycling(x, y);
      runs[w == 4].push_back(x);
    }
  }
  CHECK(runs[0] == runs[1]);
  CHECK(runs[0][0] != runs[0][5]);  // another epoch, another order and crop
  {
    // seek(k) continues the stream at batch k (a resumed run), without the batches before it.
    train.workers = 2;
    io::ImageFolderLoader stream(folder, 8, true, 42, train, 3);
    std::vector<float> x;
    std::vector<std::int32_t> y;
    stream.next_cycling(x, y);
    stream.seek(7);
    for (int k = 7; k < 12; ++k) {
      stream.next_cycling(x, y);
      CHECK(x == runs[0][std::size_t(k)]);
    }
  }
  train.on_corrupt = io::OnCorrupt::fail;
  io::ImageFolderLoader strict(folder, 100, false, 0, train);
  std::vector<float> x;
  std::vector<std::int32_t> y;
  REQUIRE_THROWS_WITH(strict.next_cycling(x, y), Catch::Contains("zz_"));
}

TEST_CASE("the streaming loader feeds training steps", "[io][images][train]") {
  auto& fx = fixture();
  const auto folder = io::scan_image_folder(fx.root);
  const model::VitConfig cfg{.image_size = 28, .channels = 1, .patch = 7, .width = 16, .depth = 1, .heads = 2,
                             .mlp_ratio = 2.0, .classes = 3};
  model::Model<model::Vit<float>> m(model::make_vit<float>(cfg));
  m.init(5);
  const std::vector<float> before(m.params().data, m.params().data + m.params().size);
  auto o = eval_options(io::OnCorrupt::skip);
  o.transform.train = true;
  o.transform.scale_min = 0.6;
  o.workers = 2;
  io::ImageFolderLoader stream(folder, 8, true, 3, o);
  std::vector<float> dlogits;
  long steps = 0;
  const auto r = train::run_loop(m, stream, {.steps = 6, .batch = 8, .lr = 1e-3, .quiet = true},
                                 [&](long, const float* x, const std::int32_t* y, index_t n) {
                                   ++steps;
                                   return train::classify_step(m, x, y, n, stream.image_numel(), 0.0, dlogits).loss;
                                 });
  CHECK(steps == 6);
  CHECK(std::isfinite(r.final_loss));
  CHECK(r.final_loss > 0);
  CHECK(!std::equal(before.begin(), before.end(), m.params().data));
}
