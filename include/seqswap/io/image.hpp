// Image files: JPEG (libjpeg-turbo) and PNG (libpng) decoding and encoding, and the resampling
// that preprocessing needs (antialiased bilinear resize, crops). Link seqswap::images (CMake)
// or -ljpeg -lpng. Every failure names the file and what was wrong with it.
#pragma once
#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <jpeglib.h>
#include <png.h>

#include "seqswap/core/error.hpp"
#include "seqswap/core/tokens.hpp"
#include "seqswap/io/atomic_file.hpp"

namespace seqswap::io {

// 8-bit pixels, rows of `width` pixels of `channels` interleaved values (HWC).
struct Image {
  index_t width = 0, height = 0, channels = 0;
  std::vector<std::uint8_t> pixels;

  std::uint8_t& at(index_t y, index_t x, index_t c) { return pixels[std::size_t((y * width + x) * channels + c)]; }
  std::uint8_t at(index_t y, index_t x, index_t c) const { return pixels[std::size_t((y * width + x) * channels + c)]; }
};

namespace detail {

inline std::vector<std::uint8_t> read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  check(bool(in), "image ", path.string(), ": cannot open (missing or unreadable)");
  std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  check(!in.bad(), "image ", path.string(), ": read error");
  return bytes;
}

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = {};
};
extern "C" inline void jpeg_error_exit(j_common_ptr cinfo) {
  auto* e = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, e->message);
  std::longjmp(e->jump, 1);
}
extern "C" inline void jpeg_quiet(j_common_ptr, int) {}  // warnings become errors below
// Errors longjmp back to the caller's setjmp (which must be in the caller's own frame).
inline jpeg_error_mgr* jpeg_errors(JpegError& err) {
  jpeg_error_mgr* m = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_error_exit;
  err.mgr.emit_message = jpeg_quiet;
  return m;
}

// libjpeg reports through longjmp: nothing with a destructor may live between setjmp and the
// library calls, so the decoder writes into buffers owned by the caller.
inline bool decode_jpeg_raw(const std::uint8_t* data, std::size_t size, int want, Image& out, char* message) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_errors(err);
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    std::snprintf(message, JMSG_LENGTH_MAX, "%s", err.message);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  const int channels = want != 0 ? want : (cinfo.num_components == 1 ? 1 : 3);
  cinfo.out_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  out.width = cinfo.output_width;
  out.height = cinfo.output_height;
  out.channels = cinfo.output_components;
  out.pixels.resize(std::size_t(out.width * out.height * out.channels));
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = out.pixels.data() + std::size_t(cinfo.output_scanline) * std::size_t(out.width * out.channels);
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  // A truncated file "succeeds" with grey rows and a warning: count it as corrupt.
  const long warnings = err.mgr.num_warnings;
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  if (warnings > 0) {
    std::snprintf(message, JMSG_LENGTH_MAX, "corrupt JPEG data (%ld warning%s; truncated?)", warnings,
                  warnings == 1 ? "" : "s");
    return false;
  }
  return true;
}

inline bool encode_jpeg_raw(const Image& img, int quality, unsigned char** buf, unsigned long* size, char* message) {
  jpeg_compress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_errors(err);
  if (setjmp(err.jump)) {
    jpeg_destroy_compress(&cinfo);
    std::snprintf(message, JMSG_LENGTH_MAX, "%s", err.message);
    return false;
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, buf, size);
  cinfo.image_width = JDIMENSION(img.width);
  cinfo.image_height = JDIMENSION(img.height);
  cinfo.input_components = int(img.channels);
  cinfo.in_color_space = img.channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    auto* row = const_cast<JSAMPROW>(img.pixels.data() + std::size_t(cinfo.next_scanline) * std::size_t(img.width * img.channels));
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  return true;
}

inline void check_image(const Image& img, const std::string& where) {
  check(img.width > 0 && img.height > 0 && (img.channels == 1 || img.channels == 3), where,
        ": expected a non-empty image with 1 or 3 channels, found ", img.width, "x", img.height, "x", img.channels);
  check(img.pixels.size() == std::size_t(img.width * img.height * img.channels), where, ": expected ",
        img.width * img.height * img.channels, " pixel values, found ", img.pixels.size());
}

}  // namespace detail

enum class ImageFormat { unknown, jpeg, png };

// By content (magic bytes), not by file name.
inline ImageFormat sniff_image_format(const std::uint8_t* data, std::size_t size) {
  if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return ImageFormat::jpeg;
  if (size >= 8 && png_sig_cmp(data, 0, 8) == 0) return ImageFormat::png;
  return ImageFormat::unknown;
}

// Decodes a JPEG or PNG held in memory; `channels` 1 (grey) or 3 (RGB) converts, 0 keeps the
// file's (grey stays 1, everything else becomes 3; alpha is composited on black by libpng).
// `what` names the source in errors.
inline Image decode_image(const std::uint8_t* data, std::size_t size, int channels, const std::string& what) {
  check(channels == 0 || channels == 1 || channels == 3, what, ": expected 0, 1 or 3 output channels, found ", channels);
  Image img;
  switch (sniff_image_format(data, size)) {
    case ImageFormat::jpeg: {
      char message[JMSG_LENGTH_MAX] = {};
      check(detail::decode_jpeg_raw(data, size, channels, img, message), what, ": not a valid JPEG (", message, ")");
      break;
    }
    case ImageFormat::png: {
      png_image p{};
      p.version = PNG_IMAGE_VERSION;
      check(png_image_begin_read_from_memory(&p, data, size) != 0, what, ": not a valid PNG (", p.message, ")");
      const bool grey = channels == 1 || (channels == 0 && (p.format & PNG_FORMAT_FLAG_COLOR) == 0);
      p.format = grey ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
      img.width = p.width;
      img.height = p.height;
      img.channels = grey ? 1 : 3;
      img.pixels.resize(PNG_IMAGE_SIZE(p));
      const png_color black{0, 0, 0};
      const bool ok = png_image_finish_read(&p, &black, img.pixels.data(), 0, nullptr) != 0;
      const std::string message = p.message;
      png_image_free(&p);
      check(ok, what, ": not a valid PNG (", message, ")");
      break;
    }
    default: {
      std::string head;
      for (std::size_t i = 0; i < std::min<std::size_t>(size, 4); ++i) {
        char b[4];
        std::snprintf(b, sizeof b, "%02x", data[i]);
        head += b;
      }
      fail(what, ": expected a JPEG (ff d8 ff) or PNG (89 50 4e 47) file, found ",
           size == 0 ? std::string("an empty file") : "bytes " + head);
    }
  }
  detail::check_image(img, what);
  return img;
}

inline Image read_image(const std::filesystem::path& path, int channels = 0) {
  const auto bytes = detail::read_bytes(path);
  return decode_image(bytes.data(), bytes.size(), channels, "image " + path.string());
}

// Encodes to PNG (lossless) or JPEG (`quality` 1-100) and writes the file atomically.
inline std::vector<std::uint8_t> encode_png(const Image& img) {
  detail::check_image(img, "encode_png");
  png_image p{};
  p.version = PNG_IMAGE_VERSION;
  p.width = png_uint_32(img.width);
  p.height = png_uint_32(img.height);
  p.format = img.channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  check(png_image_write_to_memory(&p, nullptr, &size, 0, img.pixels.data(), 0, nullptr) != 0,
        "encode_png: ", p.message);
  std::vector<std::uint8_t> out(size);
  check(png_image_write_to_memory(&p, out.data(), &size, 0, img.pixels.data(), 0, nullptr) != 0,
        "encode_png: ", p.message);
  out.resize(size);
  return out;
}
inline std::vector<std::uint8_t> encode_jpeg(const Image& img, int quality = 95) {
  detail::check_image(img, "encode_jpeg");
  check(quality >= 1 && quality <= 100, "encode_jpeg: expected quality in 1..100, found ", quality);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  char message[JMSG_LENGTH_MAX] = {};
  const bool ok = detail::encode_jpeg_raw(img, quality, &buf, &size, message);
  std::vector<std::uint8_t> out(buf, buf + (ok ? size : 0));
  std::free(buf);
  check(ok, "encode_jpeg: ", message);
  return out;
}
inline void write_image(const std::filesystem::path& path, const Image& img, int jpeg_quality = 95) {
  auto ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  check(ext == ".png" || ext == ".jpg" || ext == ".jpeg", "write_image ", path.string(),
        ": expected a .png, .jpg or .jpeg name, found '", ext, "'");
  const auto bytes = ext == ".png" ? encode_png(img) : encode_jpeg(img, jpeg_quality);
  write_file_atomic(path, std::span<const std::byte>(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()));
}

// Resamples (x0, y0, w, h) of `src` to out_w x out_h with a triangle (bilinear) filter whose
// support widens with the downscale factor, as PIL's resize does (antialiasing), so a 500-pixel
// image shrunk to 256 averages its pixels instead of skipping them. Separable: rows, then columns.
inline Image resize_region(const Image& src, double x0, double y0, double w, double h, index_t out_w, index_t out_h) {
  check(out_w > 0 && out_h > 0 && w > 0 && h > 0, "resize: expected positive sizes, found region ", w, "x", h,
        " to ", out_w, "x", out_h);
  // Per output position: the first source index and `width` weights (zero-padded), flat.
  struct Taps {
    std::vector<index_t> first;
    std::vector<float> weights;
    index_t width = 0;
  };
  auto taps = [](double start, double extent, index_t in, index_t out) {
    Taps t;
    const double scale = extent / double(out), support = std::max(1.0, scale);
    t.width = index_t(std::ceil(2 * support)) + 1;
    t.first.resize(std::size_t(out));
    t.weights.assign(std::size_t(out * t.width), 0.0f);
    for (index_t i = 0; i < out; ++i) {
      const double centre = start + (double(i) + 0.5) * scale;
      index_t lo = std::max<index_t>(0, index_t(std::floor(centre - support)));
      const index_t hi = std::min<index_t>({in, index_t(std::ceil(centre + support)), lo + t.width});
      float* w = t.weights.data() + i * t.width;
      double sum = 0;
      for (index_t k = lo; k < hi; ++k) {
        const double d = std::abs((double(k) + 0.5 - centre) / support);
        w[k - lo] = float(d < 1 ? 1 - d : 0);
        sum += w[k - lo];
      }
      if (sum <= 0) {  // the region lies outside the image: nearest edge pixel
        lo = std::clamp<index_t>(index_t(centre), 0, in - 1);
        w[0] = 1.0f;
        sum = 1;
      }
      for (index_t k = 0; k < t.width; ++k) w[k] = float(w[k] / sum);
      t.first[std::size_t(i)] = lo;
    }
    return t;
  };
  const Taps tx = taps(x0, w, src.width, out_w), ty = taps(y0, h, src.height, out_h);
  const index_t C = src.channels, W = src.width;
  // Only the source rows some output row reads go through the horizontal pass.
  const index_t row_lo = *std::min_element(ty.first.begin(), ty.first.end()),
                row_hi = std::min(src.height, *std::max_element(ty.first.begin(), ty.first.end()) + ty.width);
  std::vector<float> rows(std::size_t((row_hi - row_lo) * out_w * C), 0.0f);
  for (index_t y = row_lo; y < row_hi; ++y) {
    const std::uint8_t* line = src.pixels.data() + y * W * C;
    float* dst = rows.data() + (y - row_lo) * out_w * C;
    for (index_t x = 0; x < out_w; ++x) {
      const float* wt = tx.weights.data() + x * tx.width;
      const index_t x0i = tx.first[std::size_t(x)], n = std::min(tx.width, W - x0i);
      for (index_t c = 0; c < C; ++c) {
        float acc = 0;
        for (index_t k = 0; k < n; ++k) acc += wt[k] * float(line[(x0i + k) * C + c]);
        dst[x * C + c] = acc;
      }
    }
  }
  Image out{out_w, out_h, C, std::vector<std::uint8_t>(std::size_t(out_w * out_h * C))};
  const index_t stride = out_w * C;
  std::vector<float> acc(static_cast<std::size_t>(stride));
  for (index_t y = 0; y < out_h; ++y) {
    const float* wt = ty.weights.data() + y * ty.width;
    const index_t y0i = ty.first[std::size_t(y)], n = std::min(ty.width, row_hi - y0i);
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (index_t k = 0; k < n; ++k) {
      const float wk = wt[k];
      if (wk == 0.0f) continue;
      const float* r = rows.data() + (y0i + k - row_lo) * stride;
      for (index_t i = 0; i < stride; ++i) acc[std::size_t(i)] += wk * r[i];
    }
    std::uint8_t* o = out.pixels.data() + y * stride;
    for (index_t i = 0; i < stride; ++i) o[i] = std::uint8_t(std::clamp(std::lround(acc[std::size_t(i)]), 0L, 255L));
  }
  return out;
}

}  // namespace seqswap::io
