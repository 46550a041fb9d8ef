// write_file_atomic: replace a file's contents all-or-nothing (temp file + fsync + rename).
#pragma once
#include <fcntl.h>
#include <sys/stat.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

#include "seqswap/core/error.hpp"

namespace seqswap::io {

namespace detail {

// std::strerror is not thread-safe; the generic category's message is.
inline std::string errno_text(int err) { return std::generic_category().message(err); }

// Distinguishes temp files of concurrent writers inside one process; the pid separates processes.
inline std::atomic<std::uint64_t> atomic_write_counter{0};

// Removes the temp file unless released, so every failure path cleans up.
struct TempFileGuard {
  std::filesystem::path path;
  int fd = -1;
  bool armed = true;
  ~TempFileGuard() {
    if (fd >= 0) ::close(fd);
    if (armed) {
      std::error_code ec;
      std::filesystem::remove(path, ec);  // best effort: we are already reporting an error
    }
  }
};

// Removes temp files of `path` (`<name>.tmp.<pid>.<n>`) left by writers that no longer run
// (a kill -9 mid-write): their pid is gone. Temp files of live processes are left alone.
inline void remove_stale_temps(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  const std::string prefix = path.filename().string() + ".tmp.";
  const fs::path dir = path.parent_path().empty() ? fs::path(".") : path.parent_path();
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    const std::string rest = name.substr(prefix.size());  // "<pid>.<n>"
    const auto dot = rest.find('.');
    if (dot == std::string::npos || dot == 0) continue;
    long long pid = 0;
    try {
      std::size_t used = 0;
      pid = std::stoll(rest.substr(0, dot), &used);
      if (used != dot) continue;
    } catch (const std::exception&) {
      continue;
    }
    if (pid <= 0 || (::kill(static_cast<::pid_t>(pid), 0) != 0 && errno == ESRCH)) {
      std::error_code rm;
      fs::remove(it->path(), rm);  // best effort: a race with another cleaner is harmless
    }
  }
}

// Writes the concatenation of `parts` to `path` atomically. Taking several pieces lets callers
// (e.g. the safetensors writer) avoid first copying large tensors into one contiguous buffer.
inline void write_parts_atomic(const std::filesystem::path& path,
                               std::span<const std::span<const std::byte>> parts) {
  namespace fs = std::filesystem;
  check(!path.empty() && path.has_filename(), "write_file_atomic: expected a file path, found '",
        path.string(), "'");

  const fs::path parent = path.parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    fs::create_directories(parent, ec);
    if (ec) {
      fail("write_file_atomic ", path.string(), ": cannot create parent directory '",
           parent.string(), "': ", ec.message());
    }
  }
  {
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
      fail("write_file_atomic ", path.string(), ": expected a regular file path, found a directory");
    }
  }

  remove_stale_temps(path);
  TempFileGuard tmp;
  tmp.path = path;
  tmp.path += ".tmp." + std::to_string(static_cast<long long>(::getpid())) + "." +
              std::to_string(atomic_write_counter.fetch_add(1));

  // O_EXCL: never clobber somebody else's temp file that happens to share the name.
  tmp.fd = ::open(tmp.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (tmp.fd < 0) {
    const int err = errno;
    tmp.armed = false;  // we did not create it, so it is not ours to remove
    fail("write_file_atomic ", path.string(), ": cannot create temp file '", tmp.path.string(),
         "': ", errno_text(err));
  }

  std::size_t total = 0;
  for (const auto& part : parts) {
    const std::byte* p = part.data();
    std::size_t left = part.size();
    while (left > 0) {
      const ::ssize_t n = ::write(tmp.fd, p, left);
      if (n < 0) {
        const int err = errno;
        if (err == EINTR) continue;
        fail("write_file_atomic ", path.string(), ": write to temp file '", tmp.path.string(),
             "' failed after ", total, " bytes: ", errno_text(err));
      }
      p += n;
      left -= static_cast<std::size_t>(n);
      total += static_cast<std::size_t>(n);
    }
  }

  // fsync before rename: otherwise a crash can leave the new name pointing at empty data.
  if (::fsync(tmp.fd) != 0) {
    const int err = errno;
    fail("write_file_atomic ", path.string(), ": fsync of temp file '", tmp.path.string(),
         "' failed: ", errno_text(err));
  }
  const int fd = tmp.fd;
  tmp.fd = -1;
  if (::close(fd) != 0) {
    const int err = errno;
    fail("write_file_atomic ", path.string(), ": close of temp file '", tmp.path.string(),
         "' failed: ", errno_text(err));
  }

  std::error_code ec;
  fs::rename(tmp.path, path, ec);
  if (ec) {
    fail("write_file_atomic ", path.string(), ": rename from temp file '", tmp.path.string(),
         "' failed: ", ec.message());
  }
  tmp.armed = false;

  // Persist the directory entry too. Best effort: some filesystems refuse fsync on directories,
  // and the data itself is already safe.
  const fs::path dir = parent.empty() ? fs::path(".") : parent;
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace detail

// Checks, before any work, that `path` can be written the way write_file_atomic writes it
// (parent folder created if missing, a temp file created in it and removed): a driver calls
// it on every output path first, so a bad --out fails at once, not after hours of training.
// `what` names the flag in the message ("--out").
inline void check_writable(const std::filesystem::path& path, const std::string& what) {
  namespace fs = std::filesystem;
  check(!path.empty() && path.has_filename(), what, ": expected a file path, found '", path.string(), "'");
  std::error_code ec;
  if (!path.parent_path().empty()) fs::create_directories(path.parent_path(), ec);
  check(!ec, what, ": cannot create the folder '", path.parent_path().string(), "': ", ec.message());
  check(!fs::is_directory(path, ec), what, ": expected a file path, found a directory '", path.string(), "'");
  fs::path probe = path;
  probe += ".tmp." + std::to_string(static_cast<long long>(::getpid())) + ".probe";
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int err = errno;
    fail(what, ": cannot write next to '", path.string(), "': ", detail::errno_text(err));
  }
  ::close(fd);
  fs::remove(probe, ec);
}

// Replaces `path` with `bytes`: readers see either the old file or the complete new one.
// Creates missing parent directories. Throws seqswap::Error (path + errno text) on failure,
// after removing its temp file.
inline void write_file_atomic(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  const std::span<const std::byte> parts[] = {bytes};
  detail::write_parts_atomic(path, parts);
}

inline void write_file_atomic(const std::filesystem::path& path, std::string_view text) {
  const std::span<const std::byte> parts[] = {
      std::span<const std::byte>(reinterpret_cast<const std::byte*>(text.data()), text.size())};
  detail::write_parts_atomic(path, parts);
}

}  // namespace seqswap::io
