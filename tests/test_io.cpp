// Tests for seqswap/io: atomic file writes, safetensors round trip + corruption, IDX loading.
#include <sys/resource.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <sys/wait.h>
#include <unistd.h>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "seqswap/config.hpp"
#include "seqswap/io/atomic_file.hpp"
#include "seqswap/io/idx.hpp"
#include "seqswap/io/safetensors.hpp"

namespace fs = std::filesystem;
using namespace seqswap::io;
using Catch::Contains;

namespace {

// A fresh directory per test, removed afterwards, so tests never see each other's files.
struct TempDir {
  fs::path path;
  TempDir() {
    static std::atomic<int> counter{0};
    std::random_device rd;
    path = fs::temp_directory_path() /
           ("seqswap_test_io_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" +
            std::to_string(rd()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path operator/(const std::string& name) const { return path / name; }
};

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_raw(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string u64_le(std::uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

// Handcrafted safetensors file: exact header text and a buffer of `buffer_size` zero bytes.
void write_handcrafted(const fs::path& p, const std::string& header, std::size_t buffer_size) {
  write_raw(p, u64_le(header.size()) + header + std::string(buffer_size, '\0'));
}

std::vector<std::string> temp_files_in(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename().string().find(".tmp.") != std::string::npos) out.push_back(e.path().string());
  }
  return out;
}

std::string be32(std::uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

void write_gz(const fs::path& p, const std::string& bytes) {
  gzFile f = gzopen(p.c_str(), "wb");
  REQUIRE(f != nullptr);
  if (!bytes.empty()) REQUIRE(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) == int(bytes.size()));
  REQUIRE(gzclose(f) == Z_OK);
}

}  // namespace

TEST_CASE("safetensors round trip", "[io][safetensors]") {
  TempDir dir;
  const fs::path p = dir / "sub" / "model.safetensors";  // parent created by the writer

  const std::vector<float> w = {1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, -7.0f};
  const std::vector<std::int64_t> ids = {0, -1, 1LL << 40};
  const std::vector<std::uint8_t> mask = {1, 0, 1, 1};
  const std::vector<double> scalar = {3.141592653589793};
  const std::vector<std::int32_t> i32 = {7, -8};

  std::vector<TensorData> tensors;
  tensors.push_back(make_tensor("layer.w", {2, 3}, w));
  tensors.push_back(make_tensor("ids", {3}, ids));
  tensors.push_back(make_tensor<std::uint8_t>("mask", {2, 2}, std::span<const std::uint8_t>(mask)));
  tensors.back().dtype = DType::BOOL;
  tensors.push_back(make_tensor("empty", {0, 4}, std::vector<float>{}));
  tensors.push_back(make_tensor("pi", {}, scalar));
  tensors.push_back(make_tensor("i32", {2}, i32));
  const std::map<std::string, std::string> meta = {
      {"format_version", std::to_string(seqswap::checkpoint_format_version)}, {"note", "héllo"}};

  write_safetensors(p, tensors, meta);
  REQUIRE(fs::exists(p));
  CHECK(temp_files_in(p.parent_path()).empty());

  // Header is padded so the buffer starts 8-byte aligned.
  const std::string raw = read_text(p);
  std::uint64_t hlen = 0;
  std::memcpy(&hlen, raw.data(), 8);
  CHECK(hlen % 8 == 0);

  const SafetensorsFile f = read_safetensors(p);
  CHECK(f.metadata == meta);
  REQUIRE(f.tensors.size() == tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    INFO("tensor " << tensors[i].name);
    // Written in the given order, so offset order equals input order (empty tensor included).
    CHECK(f.tensors[i].name == tensors[i].name);
    CHECK(f.tensors[i].dtype == tensors[i].dtype);
    CHECK(f.tensors[i].shape == tensors[i].shape);
    CHECK(f.tensors[i].bytes == tensors[i].bytes);
  }
  CHECK(f.at("layer.w").to_vector<float>() == w);
  CHECK(f.at("ids").to_vector<std::int64_t>() == ids);
  CHECK(f.at("mask").to_vector<std::uint8_t>() == mask);  // BOOL reads as uint8
  CHECK(f.at("empty").numel() == 0);
  CHECK(f.at("empty").to_vector<float>().empty());
  CHECK(f.at("pi").numel() == 1);
  CHECK(f.at("pi").to_vector<double>() == scalar);
  CHECK(f.at("i32").to_vector<std::int32_t>() == i32);
  CHECK(f.find("nope") == nullptr);
  REQUIRE_THROWS_WITH(f.at("nope"), Contains("'nope'") && Contains("layer.w"));

  // No tensors, no metadata: still a valid file.
  write_safetensors(p, {}, {});
  const SafetensorsFile e = read_safetensors(p);
  CHECK(e.tensors.empty());
  CHECK(e.metadata.empty());
}

TEST_CASE("safetensors reader orders tensors by offset", "[io][safetensors]") {
  TempDir dir;
  const fs::path p = dir / "order.safetensors";
  // JSON key order (alphabetical) differs from offset order.
  write_handcrafted(p,
                    R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[3,5]},)"
                    R"("b":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}})",
                    5);
  const SafetensorsFile f = read_safetensors(p);
  REQUIRE(f.tensors.size() == 2);
  CHECK(f.tensors[0].name == "b");
  CHECK(f.tensors[1].name == "a");
}

TEST_CASE("safetensors writer rejects bad input", "[io][safetensors]") {
  TempDir dir;
  const fs::path p = dir / "bad.safetensors";
  const std::vector<float> v = {1, 2};
  REQUIRE_THROWS_WITH(write_safetensors(p, {make_tensor("x", {2}, v), make_tensor("x", {2}, v)}, {}),
                      Contains("duplicate"));
  REQUIRE_THROWS_WITH(make_tensor("x", {3}, v), Contains("expects 3 values, found 2"));
  TensorData bad = make_tensor("x", {2}, v);
  bad.shape = {4};
  REQUIRE_THROWS_WITH(write_safetensors(p, {bad}, {}), Contains("expected 16 bytes, found 8"));
  CHECK_FALSE(fs::exists(p));
  CHECK(temp_files_in(dir.path).empty());
}

TEST_CASE("safetensors reader rejects corrupt files", "[io][safetensors]") {
  TempDir dir;
  const fs::path p = dir / "c.safetensors";
  const std::vector<float> v = {1, 2, 3, 4};

  SECTION("missing file") {
    REQUIRE_THROWS_WITH(read_safetensors(dir / "absent.safetensors"),
                        Contains("file not found") && Contains("absent.safetensors"));
  }
  SECTION("a file that cannot be opened names the reason") {  // issue 19: no errno before
    write_safetensors(p, {make_tensor("w", {4}, v)}, {});
    // No file descriptor left (permissions would not stop root): the open fails with EMFILE.
    rlimit saved{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved) == 0);
    const int lowest_free = ::dup(0);
    REQUIRE(lowest_free >= 0);
    ::close(lowest_free);
    rlimit tight = saved;
    tight.rlim_cur = rlim_t(lowest_free);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &tight) == 0);
    std::string message;
    try {
      read_safetensors(p);
    } catch (const seqswap::Error& e) {
      message = e.what();
    }
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &saved) == 0);
    CHECK_THAT(message, Contains("cannot open file for reading") && Contains("open files"));
  }
  SECTION("shorter than 8 bytes") {
    write_raw(p, "abc");
    REQUIRE_THROWS_WITH(read_safetensors(p), Contains("at least 8"));
  }
  SECTION("truncated data") {
    write_safetensors(p, {make_tensor("w", {4}, v)}, {});
    fs::resize_file(p, fs::file_size(p) - 3);
    REQUIRE_THROWS_WITH(read_safetensors(p), Contains("'w'") && Contains("beyond"));
  }
  SECTION("truncated header") {
    write_safetensors(p, {make_tensor("w", {4}, v)}, {});
    fs::resize_file(p, 20);
    REQUIRE_THROWS_WITH(read_safetensors(p), Contains("exceeds the file size"));
  }
  SECTION("huge header length") {
    write_raw(p, u64_le(0xFFFFFFFFFFFFull) + "{}");
    REQUIRE_THROWS_WITH(read_safetensors(p), Contains("header length") && Contains("limit"));
  }
  SECTION("header not JSON") {
    write_handcrafted(p, "{not json at all", 0);
    REQUIRE_THROWS_WITH(read_safetensors(p), Contains("not valid JSON"));
  }
  SECTION("header not an object") {
    write_handcrafted(p, "[1, 2, 3]", 0);
    REQUIRE_THROWS_WITH(read_safetensors(p), Contains("JSON object") && Contains("array"));
  }
  SECTION("overlapping offsets") {
    write_handcrafted(p,
                      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                      12);
    REQUIRE_THROWS_WITH(read_safetensors(p), Contains("overlap") && Contains("'a'") && Contains("'b'"));
  }
  SECTION("end beyond buffer") {
    write_handcrafted(p, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4);
    REQUIRE_THROWS_WITH(read_safetensors(p), Contains("beyond") && Contains("'a'"));
  }
  SECTION("begin after end") {
    write_handcrafted(p, R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}})", 4);
    REQUIRE_THROWS_WITH(read_safetensors(p), Contains("begin <= end"));
  }
  SECTION("byte length mismatch") {
    write_handcrafted(p, R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8);
    REQUIRE_THROWS_WITH(read_safetensors(p), Contains("'a'") && Contains("[3]") && Contains("= 8 bytes"));
  }
  SECTION("unknown dtype") {
    write_handcrafted(p, R"({"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}})", 4);
    REQUIRE_THROWS_WITH(read_safetensors(p), Contains("unknown dtype 'F16'"));
  }
  SECTION("missing field") {
    write_handcrafted(p, R"({"a":{"dtype":"F32","data_offsets":[0,4]}})", 4);
    REQUIRE_THROWS_WITH(read_safetensors(p), Contains("missing required field 'shape'"));
  }
  SECTION("wrong JSON type") {
    write_handcrafted(p, R"({"a":{"dtype":"F32","shape":"2","data_offsets":[0,8]}})", 8);
    REQUIRE_THROWS_WITH(read_safetensors(p), Contains("shape to be an array"));
  }
  SECTION("negative shape") {
    write_handcrafted(p, R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8);
    REQUIRE_THROWS_WITH(read_safetensors(p), Contains("non-negative"));
  }
  SECTION("metadata value not a string") {
    write_handcrafted(p, R"({"__metadata__":{"epoch":3}})", 0);
    REQUIRE_THROWS_WITH(read_safetensors(p), Contains("metadata value 'epoch'"));
  }
  SECTION("duplicate tensor key") {
    write_handcrafted(p,
                      R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                      R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                      2);
    REQUIRE_THROWS_WITH(read_safetensors(p), Contains("'a' twice"));
  }
  SECTION("wrong dtype for to_vector") {
    write_safetensors(p, {make_tensor("w", {4}, v)}, {});
    const SafetensorsFile f = read_safetensors(p);
    REQUIRE_THROWS_WITH(f.at("w").to_vector<double>(),
                        Contains("'w'") && Contains("expected dtype F64") && Contains("found F32"));
    REQUIRE_THROWS_WITH(f.at("w").to_vector<std::int32_t>(), Contains("found F32"));
  }
}

TEST_CASE("safetensors headers with many entries parse in linear time", "[io][safetensors]") {
  // Issue 19: the duplicate-key parser callback made nlohmann rescan the parent object at
  // every end_object: 4.4 s at 12.5k entries, > 200 s at 200k. 100k entries must now parse in
  // about a second (ctest's TIMEOUT of this binary is the bound), duplicates still be found.
  TempDir dir;
  const std::size_t n = 100000;
  std::vector<TensorData> tensors;
  tensors.reserve(n);
  const std::vector<float> one = {1.0f};
  for (std::size_t i = 0; i < n; ++i) tensors.push_back(make_tensor("t" + std::to_string(i), {1}, one));
  write_safetensors(dir / "many.safetensors", tensors, {});
  const auto f = read_safetensors(dir / "many.safetensors");
  REQUIRE(f.tensors.size() == n);
  REQUIRE(f.find("t99999") != nullptr);
  write_handcrafted(dir / "dup.safetensors",
                    R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"x":{"a":1,"a":2}},)"
                    R"("a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                    4);
  REQUIRE_THROWS_WITH(read_safetensors(dir / "dup.safetensors"), Contains("found 'a' twice"));
}

TEST_CASE("write_file_atomic", "[io][atomic]") {
  TempDir dir;
  const fs::path p = dir / "a" / "b" / "file.txt";

  SECTION("creates parents and replaces an existing file") {
    write_file_atomic(p, std::string_view("first version, longer"));
    CHECK(read_text(p) == "first version, longer");
    write_file_atomic(p, std::string_view("second"));
    CHECK(read_text(p) == "second");
    const std::vector<std::byte> bytes = {std::byte{0}, std::byte{0xff}, std::byte{7}};
    write_file_atomic(p, bytes);
    CHECK(read_text(p) == std::string("\0\xff\x07", 3));
    CHECK(temp_files_in(p.parent_path()).empty());
  }

  SECTION("parent is a regular file") {
    write_file_atomic(dir / "plain", std::string_view("keep"));
    REQUIRE_THROWS_WITH(write_file_atomic(dir / "plain" / "child.txt", std::string_view("x")),
                        Contains("plain") && Contains("parent directory"));
    CHECK(read_text(dir / "plain") == "keep");
    CHECK(temp_files_in(dir.path).empty());
  }

  SECTION("target is a directory") {
    fs::create_directories(dir / "isdir");
    REQUIRE_THROWS_WITH(write_file_atomic(dir / "isdir", std::string_view("x")), Contains("directory"));
    CHECK(fs::is_directory(dir / "isdir"));
    CHECK(temp_files_in(dir.path).empty());
  }

  SECTION("failing write leaves the existing file intact") {
    // Tests may run as root, where permission bits do not stop writes; a file-size limit makes
    // write() itself fail (EFBIG) partway, exercising the mid-write cleanup path.
    write_file_atomic(p, std::string_view("old contents"));
    const std::string big(1 << 20, 'x');
    rlimit old_limit{};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &old_limit) == 0);
    auto* old_handler = std::signal(SIGXFSZ, SIG_IGN);
    rlimit small = old_limit;
    small.rlim_cur = 4096;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
    std::string message;
    try {
      write_file_atomic(p, std::string_view(big));
    } catch (const seqswap::Error& e) {
      message = e.what();
    }
    ::setrlimit(RLIMIT_FSIZE, &old_limit);
    std::signal(SIGXFSZ, old_handler);
    CHECK_THAT(message, Contains("file.txt") && Contains("write"));
    CHECK(read_text(p) == "old contents");
    CHECK(temp_files_in(p.parent_path()).empty());
  }

  if (::geteuid() != 0) {
    SECTION("directory not writable") {
      write_file_atomic(p, std::string_view("old"));
      fs::permissions(p.parent_path(), fs::perms::owner_write, fs::perm_options::remove);
      REQUIRE_THROWS_WITH(write_file_atomic(p, std::string_view("new")), Contains("temp file"));
      fs::permissions(p.parent_path(), fs::perms::owner_write, fs::perm_options::add);
      CHECK(read_text(p) == "old");
      CHECK(temp_files_in(p.parent_path()).empty());
    }
  }
}

TEST_CASE("write_file_atomic removes temp files of writers that died", "[io][atomic]") {
  // Issue 19: temp names carry the pid, so those left by kill -9 were never cleaned.
  TempDir dir;
  const fs::path p = dir / "results.json";
  const pid_t child = ::fork();  // a pid that certainly no longer runs once reaped
  if (child == 0) ::_exit(0);
  int status = 0;
  ::waitpid(child, &status, 0);
  const std::string dead = "results.json.tmp." + std::to_string(child) + ".0";
  const std::string alive = "results.json.tmp." + std::to_string(::getpid()) + ".999999";
  write_raw(dir / dead, "partial");
  write_raw(dir / alive, "a live writer's");
  write_raw(dir / "other.json.tmp.1.0", "another file's");
  write_file_atomic(p, std::string_view("{}"));
  CHECK(read_text(p) == "{}");
  CHECK(!fs::exists(dir / dead));
  CHECK(fs::exists(dir / alive));  // its process is running: not ours to remove
  CHECK(fs::exists(dir / "other.json.tmp.1.0"));
}

TEST_CASE("check_writable fails at once on an output that cannot be written", "[io][atomic]") {
  // Issue 19: drivers found a bad --out only after the work.
  TempDir dir;
  REQUIRE_NOTHROW(check_writable(dir / "new" / "ok.json", "--out"));
  CHECK(fs::is_directory(dir / "new"));
  CHECK(fs::is_empty(dir / "new"));  // the probe is gone
  write_raw(dir / "plain", "a file, not a folder");
  REQUIRE_THROWS_WITH(check_writable(dir / "plain" / "x.json", "--out"),
                      Contains("--out") && Contains("cannot create the folder"));
  fs::create_directories(dir / "folder");
  REQUIRE_THROWS_WITH(check_writable(dir / "folder", "--json"), Contains("--json") && Contains("directory"));
}

TEST_CASE("IDX loader", "[io][idx]") {
  TempDir dir;
  const std::string pixels = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, static_cast<char>(255)};  // 2 images 2x3

  SECTION("images and labels round trip, gzip and plain") {
    const std::string img = be32(2051) + be32(2) + be32(2) + be32(3) + pixels;
    write_gz(dir / "img.gz", img);
    write_raw(dir / "img.raw", img);
    for (const char* name : {"img.gz", "img.raw"}) {
      INFO(name);
      const IdxImages r = read_idx_images(dir / name);
      CHECK(r.count == 2);
      CHECK(r.rows == 2);
      CHECK(r.cols == 3);
      REQUIRE(r.pixels.size() == 12);
      CHECK(r.pixels[5] == 5);
      CHECK(r.pixels[11] == 255);
    }
    write_gz(dir / "lab.gz", be32(2049) + be32(3) + std::string{9, 0, 4});
    const IdxLabels l = read_idx_labels(dir / "lab.gz");
    CHECK(l.count == 3);
    CHECK(l.labels == std::vector<std::uint8_t>{9, 0, 4});
  }
  SECTION("bad magic") {
    write_gz(dir / "lab.gz", be32(2049) + be32(3) + std::string{9, 0, 4});
    REQUIRE_THROWS_WITH(read_idx_images(dir / "lab.gz"),
                        Contains("expected 2051") && Contains("found 2049") && Contains("lab.gz"));
    write_gz(dir / "img.gz", be32(2051) + be32(2) + be32(2) + be32(3) + pixels);
    REQUIRE_THROWS_WITH(read_idx_labels(dir / "img.gz"), Contains("expected 2049") && Contains("found 2051"));
  }
  SECTION("truncated pixels") {
    write_gz(dir / "img.gz", be32(2051) + be32(2) + be32(2) + be32(3) + pixels.substr(0, 7));
    REQUIRE_THROWS_WITH(read_idx_images(dir / "img.gz"),
                        Contains("expected 12 bytes of pixels, found 7"));
  }
  SECTION("truncated header") {
    write_gz(dir / "lab.gz", be32(2049) + "\0\0");
    REQUIRE_THROWS_WITH(read_idx_labels(dir / "lab.gz"), Contains("truncated") && Contains("header"));
  }
  SECTION("implausible dims") {
    write_gz(dir / "img.gz", be32(2051) + be32(0) + be32(28) + be32(28));
    REQUIRE_THROWS_WITH(read_idx_images(dir / "img.gz"), Contains("implausible"));
    write_gz(dir / "img2.gz", be32(2051) + be32(0xFFFFFFFF) + be32(0xFFFFFFFF) + be32(0xFFFFFFFF));
    REQUIRE_THROWS_WITH(read_idx_images(dir / "img2.gz"), Contains("implausible"));
  }
  SECTION("missing file") {
    REQUIRE_THROWS_WITH(read_idx_labels(dir / "absent.gz"), Contains("not found") && Contains("absent.gz"));
    REQUIRE_THROWS_WITH(read_idx_labels("/usr/share/datasets/no-such-dir/x.gz"),
                        Contains("dataset-fashion-mnist"));
  }
}

TEST_CASE("Fashion-MNIST test labels, if installed", "[io][idx][dataset]") {
  const fs::path p = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz";
  if (!fs::exists(p)) {
    WARN("skipping: " << p << " not installed (Debian package dataset-fashion-mnist)");
    return;
  }
  const IdxLabels l = read_idx_labels(p);
  CHECK(l.count == 10000);
  REQUIRE(l.labels.size() == 10000);
  for (std::uint8_t v : l.labels) REQUIRE(v < 10);
}
