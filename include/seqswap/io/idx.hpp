// IDX loader (MNIST / Fashion-MNIST images and labels), gzip-compressed or plain, via zlib.
#pragma once
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "seqswap/core/error.hpp"

namespace seqswap::io {

struct IdxImages {
  std::int64_t count = 0, rows = 0, cols = 0;
  std::vector<std::uint8_t> pixels;  // count*rows*cols, row-major
};

struct IdxLabels {
  std::int64_t count = 0;
  std::vector<std::uint8_t> labels;
};

namespace detail {

inline constexpr std::uint32_t idx_images_magic = 0x00000803;  // 2051: u8 data, 3 dims
inline constexpr std::uint32_t idx_labels_magic = 0x00000801;  // 2049: u8 data, 1 dim
inline constexpr std::int64_t idx_max_elements = 100'000'000;

struct GzCloser {
  void operator()(gzFile_s* f) const { gzclose(f); }
};
using GzPtr = std::unique_ptr<gzFile_s, GzCloser>;

// The datasets are Debian-packaged; point at the package rather than just "not found".
inline std::string idx_missing_hint(const std::filesystem::path& path) {
  const std::string p = std::filesystem::absolute(path).lexically_normal().string();
  if (p.rfind("/usr/share/datasets/", 0) == 0) {
    return "; install the Debian package dataset-fashion-mnist (cmake/install-deps.sh)";
  }
  return "";
}

inline std::string gz_error_text(gzFile_s* f) {
  int code = Z_OK;
  const char* msg = gzerror(f, &code);
  if (code == Z_ERRNO) return std::generic_category().message(errno);
  return (code != Z_OK && msg && *msg) ? std::string(msg) : std::string();
}

inline GzPtr idx_open(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) fail("IDX file not found: ", path.string(), idx_missing_hint(path));
  if (!std::filesystem::is_regular_file(path, ec)) {
    fail("IDX ", path.string(), ": expected a regular file, found something else");
  }
  GzPtr f(gzopen(path.c_str(), "rb"));
  if (!f) fail("IDX ", path.string(), ": cannot open: ", std::generic_category().message(errno));
  return f;
}

// Reads exactly n bytes or throws; `what` names the part (header, pixels, labels).
inline void idx_read(gzFile_s* f, const std::filesystem::path& path, void* dst, std::uint64_t n,
                     const char* what) {
  auto* out = static_cast<unsigned char*>(dst);
  std::uint64_t got = 0;
  while (got < n) {
    // gzread takes an unsigned int length; chunk to stay far below its limit.
    const std::uint64_t chunk = std::min<std::uint64_t>(n - got, 1u << 30);
    const int r = gzread(f, out + got, static_cast<unsigned>(chunk));
    if (r < 0) {
      fail("IDX ", path.string(), ": read error in ", what, " after ", got, " bytes: ", gz_error_text(f),
           "; corrupt gzip data?");
    }
    if (r == 0) break;
    got += static_cast<std::uint64_t>(r);
  }
  if (got != n) {
    const std::string why = gz_error_text(f);
    fail("IDX ", path.string(), ": truncated: expected ", n, " bytes of ", what, ", found ", got,
         why.empty() ? "" : " (" + why + ")");
  }
}

inline std::uint32_t idx_u32(const unsigned char* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}

inline void idx_check_magic(std::uint32_t found, std::uint32_t expected, const std::filesystem::path& path) {
  if (found == expected) return;
  const char* hint = "";
  if (found == idx_labels_magic) hint = " (that is a labels file)";
  if (found == idx_images_magic) hint = " (that is an images file)";
  if ((found >> 16) == 0x1f8b) hint = " (gzip magic: compressed twice?)";
  fail("IDX ", path.string(), ": bad magic: expected ", expected, ", found ", found, hint);
}

}  // namespace detail

inline IdxImages read_idx_images(const std::filesystem::path& path) {
  auto f = detail::idx_open(path);
  // Magic first, so a labels file (shorter header) is reported as such, not as truncated.
  unsigned char head[16];
  detail::idx_read(f.get(), path, head, 4, "header");
  detail::idx_check_magic(detail::idx_u32(head), detail::idx_images_magic, path);
  detail::idx_read(f.get(), path, head + 4, 12, "header");

  IdxImages img;
  img.count = detail::idx_u32(head + 4);
  img.rows = detail::idx_u32(head + 8);
  img.cols = detail::idx_u32(head + 12);
  // Check each dim before multiplying: two u32 dims can overflow int64 together.
  const auto in_range = [](std::int64_t d) { return d > 0 && d <= detail::idx_max_elements; };
  const bool dims_ok = in_range(img.count) && in_range(img.rows) && in_range(img.cols);
  const std::int64_t per_image = dims_ok ? img.rows * img.cols : 0;
  const bool plausible = dims_ok && per_image <= detail::idx_max_elements &&
                         img.count * per_image <= detail::idx_max_elements;
  if (!plausible) {
    fail("IDX ", path.string(), ": implausible image dims ", img.count, " x ", img.rows, " x ", img.cols,
         ": expected between 1 and ", detail::idx_max_elements, " pixels in total");
  }
  img.pixels.resize(static_cast<std::size_t>(img.count * per_image));
  detail::idx_read(f.get(), path, img.pixels.data(), img.pixels.size(), "pixels");
  return img;
}

inline IdxLabels read_idx_labels(const std::filesystem::path& path) {
  auto f = detail::idx_open(path);
  unsigned char head[8];
  detail::idx_read(f.get(), path, head, 4, "header");
  detail::idx_check_magic(detail::idx_u32(head), detail::idx_labels_magic, path);
  detail::idx_read(f.get(), path, head + 4, 4, "header");

  IdxLabels lab;
  lab.count = detail::idx_u32(head + 4);
  if (lab.count <= 0 || lab.count > detail::idx_max_elements) {
    fail("IDX ", path.string(), ": implausible label count ", lab.count, ": expected between 1 and ",
         detail::idx_max_elements);
  }
  lab.labels.resize(static_cast<std::size_t>(lab.count));
  detail::idx_read(f.get(), path, lab.labels.data(), lab.labels.size(), "labels");
  return lab;
}

}  // namespace seqswap::io
