// Encodes and decodes a PNG and a JPEG through an installed seqswap's image headers.
#include <cstdio>
#include <seqswap/io/image.hpp>

int main() {
  using namespace seqswap;
  io::Image img{4, 3, 3, std::vector<std::uint8_t>(36, 200)};
  const auto png = io::encode_png(img);
  const auto back = io::decode_image(png.data(), png.size(), 0, "consumer");
  const auto jpg = io::encode_jpeg(img, 90);
  const auto jback = io::decode_image(jpg.data(), jpg.size(), 1, "consumer");
  std::printf("seqswap images: png %zu bytes, jpeg %zu bytes\n", png.size(), jpg.size());
  return back.pixels == img.pixels && jback.channels == 1 ? 0 : 1;
}
