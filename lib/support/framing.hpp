// lib/support/framing.hpp — the length prefix of every byte stream the library frames: Connection's
// messages on sockets (lib/connection.cpp), the authentication handshake (lib/support/auth.cpp) and a
// spawned child's bootstrap report (lib/spawn.cpp, lib/popen_spawn_posix.cpp).
//   [u32 length][body]                      a body of less than 0xffffffff bytes
//   [0xffffffff][u64 length][body]          a larger one
// As CPython's connection.py, but in native byte order: both ends run this very program on one host.
// Readers cap the length they accept before they allocate (each caller has its own cap).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace mp::detail::framing {

inline constexpr std::uint32_t kLongMarker = 0xffffffffu;
inline constexpr std::size_t kShortHeader = 4;
inline constexpr std::size_t kLongHeader = 12;

// Writes the header for a body of `size` bytes at `out` (room for kLongHeader bytes, or
// kShortHeader when size < kLongMarker); returns its length.
inline std::size_t put_header(char* out, std::uint64_t size) noexcept {
  if (size < kLongMarker) {
    const auto n = static_cast<std::uint32_t>(size);
    std::memcpy(out, &n, sizeof n);
    return kShortHeader;
  }
  std::memcpy(out, &kLongMarker, sizeof kLongMarker);
  std::memcpy(out + kShortHeader, &size, sizeof size);
  return kLongHeader;
}

// Appends one frame (header and body) to `out`.
inline void append(std::string& out, std::string_view body) {
  char header[kLongHeader];
  out.append(header, put_header(header, body.size()));
  out.append(body);
}

// The first kShortHeader bytes of a header: the body's length, or kLongMarker when a u64 length
// follows.
inline std::uint32_t short_length(const char* header) noexcept {
  std::uint32_t n = 0;
  std::memcpy(&n, header, sizeof n);
  return n;
}

// The body's length, given the first four bytes' value; reads the u64 that follows the marker
// with read_exact(void* data, std::size_t size).
template <class ReadExact>
std::uint64_t body_length(std::uint32_t first, ReadExact&& read_exact) {
  if (first != kLongMarker) return first;
  std::uint64_t n = 0;
  read_exact(&n, sizeof n);
  return n;
}

}  // namespace mp::detail::framing
