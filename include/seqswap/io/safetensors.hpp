// Safetensors reader/writer: u64 LE header length, JSON header, raw little-endian tensor bytes.
#pragma once
#include <algorithm>
#include <cerrno>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <unordered_set>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <system_error>
#include <vector>

#include <nlohmann/json.hpp>

#include "seqswap/core/error.hpp"
#include "seqswap/io/atomic_file.hpp"

namespace seqswap::io {

// Tensor bytes are copied to and from memory as-is; the format stores little-endian.
static_assert(std::endian::native == std::endian::little,
              "seqswap safetensors I/O assumes a little-endian host");

enum class DType { F32, F64, I64, I32, U8, BOOL };

inline std::size_t dtype_size(DType d) {
  switch (d) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::I64: return 8;
    case DType::I32: return 4;
    case DType::U8: return 1;
    case DType::BOOL: return 1;
  }
  fail("dtype_size: expected a valid DType, found enum value ", static_cast<int>(d));
}

inline std::string_view dtype_name(DType d) {
  switch (d) {
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
  }
  fail("dtype_name: expected a valid DType, found enum value ", static_cast<int>(d));
}

// `where` (e.g. "file.safetensors, tensor 'w'") goes into the error message.
inline DType dtype_from_name(std::string_view name, const std::string& where) {
  for (DType d : {DType::F32, DType::F64, DType::I64, DType::I32, DType::U8, DType::BOOL}) {
    if (dtype_name(d) == name) return d;
  }
  fail(where, ": unknown dtype '", name, "', expected one of F32, F64, I64, I32, U8, BOOL");
}

namespace detail {
// The first top-level key of a JSON object text that occurs twice ("" if none, or if the text
// does not parse: the plain parse reports that). One SAX pass, O(length).
class TopKeyCounter : public nlohmann::json_sax<nlohmann::json> {
 public:
  using number_integer_t = nlohmann::json::number_integer_t;
  using number_unsigned_t = nlohmann::json::number_unsigned_t;
  using number_float_t = nlohmann::json::number_float_t;
  using string_t = nlohmann::json::string_t;
  using binary_t = nlohmann::json::binary_t;
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return ++depth_, true; }
  bool end_object() override { return --depth_, true; }
  bool start_array(std::size_t) override { return ++depth_, true; }
  bool end_array() override { return --depth_, true; }
  bool key(string_t& k) override {
    if (depth_ == 1 && !seen_.insert(k).second && duplicate.empty()) duplicate = k;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override { return false; }
  std::string duplicate;

 private:
  int depth_ = 0;
  std::unordered_set<std::string> seen_;
};
inline std::string duplicate_top_level_key(const std::string& text) {
  TopKeyCounter sax;
  nlohmann::json::sax_parse(text, &sax);
  return sax.duplicate;
}


template <class T>
constexpr bool is_tensor_element_v =
    std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, std::int64_t> ||
    std::is_same_v<T, std::int32_t> || std::is_same_v<T, std::uint8_t>;

template <class T>
constexpr DType dtype_of() {
  static_assert(is_tensor_element_v<T>,
                "tensor element type must be float, double, int64_t, int32_t or uint8_t");
  if constexpr (std::is_same_v<T, float>) return DType::F32;
  else if constexpr (std::is_same_v<T, double>) return DType::F64;
  else if constexpr (std::is_same_v<T, std::int64_t>) return DType::I64;
  else if constexpr (std::is_same_v<T, std::int32_t>) return DType::I32;
  else return DType::U8;
}

inline std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// Product of dims with negative/overflow checks; `where` names the tensor for the message.
inline std::int64_t checked_numel(const std::vector<std::int64_t>& shape, const std::string& where) {
  std::int64_t n = 1;
  for (std::int64_t d : shape) {
    if (d < 0) fail(where, ": expected non-negative dims, found shape ", shape_string(shape));
    if (d != 0 && n > std::numeric_limits<std::int64_t>::max() / d) {
      fail(where, ": element count of shape ", shape_string(shape), " overflows int64");
    }
    n *= d;
  }
  return n;
}

}  // namespace detail

// One tensor, owning its raw little-endian bytes.
struct TensorData {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;  // empty shape = scalar (1 element)
  std::vector<std::byte> bytes;

  std::int64_t numel() const { return detail::checked_numel(shape, "tensor '" + name + "'"); }

  // Copies the values out; the dtype must match T exactly (uint8_t also accepts BOOL), since a
  // silent conversion would hide a checkpoint/model mismatch.
  template <class T>
  std::vector<T> to_vector() const {
    static_assert(detail::is_tensor_element_v<T>,
                  "to_vector element type must be float, double, int64_t, int32_t or uint8_t");
    constexpr DType want = detail::dtype_of<T>();
    const bool ok = dtype == want || (want == DType::U8 && dtype == DType::BOOL);
    check(ok, "tensor '", name, "' shape ", detail::shape_string(shape), ": expected dtype ",
          dtype_name(want), want == DType::U8 ? " or BOOL" : "", ", found ", dtype_name(dtype));
    const auto n = static_cast<std::size_t>(numel());
    check(bytes.size() == n * sizeof(T), "tensor '", name, "' shape ", detail::shape_string(shape),
          ": expected ", n * sizeof(T), " bytes, found ", bytes.size());
    std::vector<T> out(n);
    if (n) std::memcpy(out.data(), bytes.data(), n * sizeof(T));
    return out;
  }
};

struct SafetensorsFile {
  std::filesystem::path path;  // where it was read from; used in error messages
  std::map<std::string, std::string> metadata;
  std::vector<TensorData> tensors;  // in file order of offsets

  const TensorData* find(const std::string& name) const {
    for (const auto& t : tensors) {
      if (t.name == name) return &t;
    }
    return nullptr;
  }

  const TensorData& at(const std::string& name) const {
    if (const TensorData* t = find(name)) return *t;
    std::string avail;
    const std::size_t shown = std::min<std::size_t>(tensors.size(), 8);
    for (std::size_t i = 0; i < shown; ++i) {
      if (i) avail += ", ";
      avail += "'" + tensors[i].name + "'";
    }
    if (tensors.size() > shown) avail += ", ... (" + std::to_string(tensors.size() - shown) + " more)";
    if (tensors.empty()) avail = "(none)";
    fail("safetensors ", path.empty() ? std::string("(in memory)") : path.string(),
         ": expected a tensor named '", name, "', not found; available: ", avail);
  }
};

// Builds a TensorData from typed values; numel must equal the product of `shape`.
template <class T>
TensorData make_tensor(std::string name, std::vector<std::int64_t> shape, std::span<const T> values) {
  TensorData t;
  t.dtype = detail::dtype_of<T>();
  const std::int64_t n = detail::checked_numel(shape, "make_tensor '" + name + "'");
  check(static_cast<std::uint64_t>(n) == values.size(), "make_tensor '", name, "': shape ",
        detail::shape_string(shape), " expects ", n, " values, found ", values.size());
  t.name = std::move(name);
  t.shape = std::move(shape);
  t.bytes.resize(values.size() * sizeof(T));
  if (!values.empty()) std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
  return t;
}

// Convenience so `make_tensor("w", {2, 3}, vec)` deduces T (a span parameter cannot).
template <class T>
TensorData make_tensor(std::string name, std::vector<std::int64_t> shape, const std::vector<T>& values) {
  return make_tensor<T>(std::move(name), std::move(shape), std::span<const T>(values));
}

// Writes tensors in the given order, header padded with spaces to a multiple of 8 so the
// buffer starts aligned. Atomic: the target is either the old file or the complete new one.
inline void write_safetensors(const std::filesystem::path& path, const std::vector<TensorData>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  const std::string file = path.string();
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }

  std::set<std::string> seen;
  std::uint64_t offset = 0;
  for (const auto& t : tensors) {
    const std::string where = "safetensors " + file + ", tensor '" + t.name + "'";
    check(!t.name.empty(), "safetensors ", file, ": expected non-empty tensor names, found an empty one");
    check(t.name != "__metadata__", where, ": name is reserved for the metadata entry");
    check(seen.insert(t.name).second, where, ": expected unique tensor names, found a duplicate");
    const auto n = static_cast<std::uint64_t>(detail::checked_numel(t.shape, where));
    const std::uint64_t want = n * dtype_size(t.dtype);
    check(t.bytes.size() == want, where, " shape ", detail::shape_string(t.shape), " dtype ",
          dtype_name(t.dtype), ": expected ", want, " bytes, found ", t.bytes.size());
    header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + want}}};
    offset += want;
  }

  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    // dump() rejects strings that are not valid UTF-8 (names or metadata).
    fail("safetensors ", file, ": expected UTF-8 tensor names and metadata, found invalid text: ", e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');

  std::byte len_le[8];
  const std::uint64_t len = text.size();
  std::memcpy(len_le, &len, 8);

  // Write header and tensor bytes straight from their owners: no full-file copy in memory.
  std::vector<std::span<const std::byte>> parts;
  parts.reserve(tensors.size() + 2);
  parts.emplace_back(len_le, 8);
  parts.emplace_back(reinterpret_cast<const std::byte*>(text.data()), text.size());
  for (const auto& t : tensors) parts.emplace_back(t.bytes);
  detail::write_parts_atomic(path, parts);
}

namespace detail {

inline constexpr std::uint64_t max_safetensors_header = 100ull * 1000 * 1000;

// Reads a non-negative JSON integer; `what` names the field for the error message.
inline std::uint64_t json_uint(const nlohmann::json& j, const std::string& where, const char* what) {
  if (!j.is_number_integer()) {
    fail(where, ": expected ", what, " to be an integer, found ", j.type_name(), " ", j.dump());
  }
  if (!j.is_number_unsigned()) {
    fail(where, ": expected ", what, " to be non-negative, found ", j.get<std::int64_t>());
  }
  return j.get<std::uint64_t>();
}

}  // namespace detail

inline SafetensorsFile read_safetensors(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  using nlohmann::json;
  const std::string file = path.string();
  const std::string where = "safetensors " + file;

  std::error_code ec;
  if (!fs::exists(path, ec)) fail("safetensors: file not found: ", file);
  if (!fs::is_regular_file(path, ec)) fail(where, ": expected a regular file, found something else");
  const std::uint64_t file_size = fs::file_size(path, ec);
  if (ec) fail(where, ": cannot get file size: ", ec.message());
  if (file_size < 8) {
    fail(where, ": file is ", file_size, " bytes, expected at least 8 (u64 header length); truncated?");
  }

  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;  // ifstream sets no error code of its own; the OS's says why
    fail(where, ": cannot open file for reading: ", err ? std::generic_category().message(err) : "unknown reason");
  }

  unsigned char len_le[8];
  in.read(reinterpret_cast<char*>(len_le), 8);
  if (!in) fail(where, ": could not read the 8-byte header length");
  std::uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_le[i];
  if (header_len > detail::max_safetensors_header) {
    fail(where, ": header length ", header_len, " exceeds the ", detail::max_safetensors_header,
         "-byte limit; not a safetensors file or corrupt");
  }
  if (header_len > file_size - 8) {
    fail(where, ": header length ", header_len, " exceeds the file size ", file_size,
         " minus 8; truncated or not a safetensors file");
  }
  const std::uint64_t buffer_size = file_size - 8 - header_len;

  std::string text(header_len, '\0');
  in.read(text.data(), static_cast<std::streamsize>(header_len));
  if (!in) fail(where, ": could not read the ", header_len, "-byte header");

  // Duplicate top-level keys, which nlohmann would silently collapse, are found by a SAX pass
  // (linear); then a plain parse. (A parser callback did the same but put nlohmann 3.11 on a
  // path that rescans the parent object at every end_object: quadratic in the tensor count.)
  const std::string duplicate = detail::duplicate_top_level_key(text);
  const json header = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) {
    fail(where, ": header (", header_len, " bytes) is not valid JSON; not a safetensors file or corrupt");
  }
  if (!header.is_object()) fail(where, ": expected the header to be a JSON object, found ", header.type_name());
  if (!duplicate.empty()) fail(where, ": expected unique header keys, found '", duplicate, "' twice");

  SafetensorsFile out;
  out.path = path;

  struct Range {
    std::uint64_t begin, end;
    std::size_t index;
  };
  std::vector<Range> ranges;

  for (const auto& [key, entry] : header.items()) {
    if (key == "__metadata__") {
      if (!entry.is_object()) {
        fail(where, ": expected __metadata__ to be an object of strings, found ", entry.type_name());
      }
      for (const auto& [mk, mv] : entry.items()) {
        if (!mv.is_string()) {
          fail(where, ": expected metadata value '", mk, "' to be a string, found ", mv.type_name(), " ",
               mv.dump());
        }
        out.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }

    const std::string twhere = where + ", tensor '" + key + "'";
    if (!entry.is_object()) fail(twhere, ": expected an object entry, found ", entry.type_name());
    for (const char* field : {"dtype", "shape", "data_offsets"}) {
      if (!entry.contains(field)) fail(twhere, ": missing required field '", field, "'");
    }
    const json& jd = entry["dtype"];
    const json& js = entry["shape"];
    const json& jo = entry["data_offsets"];
    if (!jd.is_string()) fail(twhere, ": expected dtype to be a string, found ", jd.type_name());
    if (!js.is_array()) fail(twhere, ": expected shape to be an array, found ", js.type_name());
    if (!jo.is_array() || jo.size() != 2) {
      fail(twhere, ": expected data_offsets to be [begin, end], found ", jo.dump());
    }

    TensorData t;
    t.name = key;
    t.dtype = dtype_from_name(jd.get<std::string>(), twhere);
    for (const json& d : js) {
      const std::uint64_t dim = detail::json_uint(d, twhere, "shape dims");
      if (dim > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        fail(twhere, ": shape dim ", dim, " does not fit int64");
      }
      t.shape.push_back(static_cast<std::int64_t>(dim));
    }
    const std::uint64_t begin = detail::json_uint(jo[0], twhere, "data_offsets begin");
    const std::uint64_t end = detail::json_uint(jo[1], twhere, "data_offsets end");
    if (begin > end) fail(twhere, ": expected data_offsets begin <= end, found [", begin, ", ", end, "]");
    if (end > buffer_size) {
      fail(twhere, ": data_offsets end ", end, " is beyond the data buffer of ", buffer_size,
           " bytes; file truncated?");
    }
    const auto numel = static_cast<std::uint64_t>(detail::checked_numel(t.shape, twhere));
    const std::uint64_t elt = dtype_size(t.dtype);
    if (numel > buffer_size / elt + 1 || numel * elt != end - begin) {
      fail(twhere, " shape ", detail::shape_string(t.shape), " dtype ", dtype_name(t.dtype), ": expected ",
           numel, " x ", elt, " bytes, found data_offsets [", begin, ", ", end, "] = ", end - begin, " bytes");
    }
    ranges.push_back({begin, end, out.tensors.size()});
    out.tensors.push_back(std::move(t));
  }

  // Overlap check on non-empty ranges; empty tensors occupy no bytes and may sit anywhere.
  std::stable_sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  const Range* prev = nullptr;
  for (const Range& r : ranges) {
    if (r.begin == r.end) continue;
    if (prev && r.begin < prev->end) {
      fail(where, ": tensors '", out.tensors[prev->index].name, "' [", prev->begin, ", ", prev->end,
           ") and '", out.tensors[r.index].name, "' [", r.begin, ", ", r.end, ") overlap");
    }
    prev = &r;
  }

  // Read each tensor straight into its own storage, in file order.
  const std::uint64_t data_start = 8 + header_len;
  std::vector<TensorData> ordered;
  ordered.reserve(out.tensors.size());
  for (const Range& r : ranges) {
    TensorData& t = out.tensors[r.index];
    t.bytes.resize(r.end - r.begin);
    if (!t.bytes.empty()) {
      in.seekg(static_cast<std::streamoff>(data_start + r.begin));
      in.read(reinterpret_cast<char*>(t.bytes.data()), static_cast<std::streamsize>(t.bytes.size()));
      if (!in) {
        fail(where, ", tensor '", t.name, "': expected ", t.bytes.size(), " bytes at offset ", data_start + r.begin,
             ", read ", in.gcount(), "; file changed while reading?");
      }
    }
    ordered.push_back(std::move(t));
  }
  out.tensors = std::move(ordered);
  return out;
}

}  // namespace seqswap::io
