// lib/support/sha256.hpp — SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), for the authkey
// handshake (auth.cpp), on every platform.
//
// mp's own rather than OpenSSL's libcrypto: loading libcrypto into a process (0.4 MB of
// relocated data, its allocations and mappings) made every later fork of it dearer —
// Pool(4) create + close + join 17% slower in any program that had authenticated one connection
// (docs/DESIGN.md, "Dependencies", has the figures). A handshake hashes under 200 bytes; speed
// is not the concern here, exactness is: the tests hold FIPS 180's and RFC 4231's known answers.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace mp::detail {

inline constexpr std::size_t kSha256Size = 32;
using Sha256Digest = std::array<unsigned char, kSha256Size>;

// Incremental SHA-256. Messages up to 2^61 - 1 bytes (the standard's 2^64 bits).
class Sha256 {
 public:
  static constexpr std::size_t kBlockSize = 64;
  Sha256() noexcept;
  void update(const void* data, std::size_t size) noexcept;
  // The digest of everything updated so far; the object is then spent (make a new one).
  Sha256Digest finish() noexcept;

 private:
  void compress(const unsigned char* block) noexcept;
  std::uint32_t state_[8];
  unsigned char block_[kBlockSize];
  std::size_t buffered_ = 0;  // bytes in block_
  std::uint64_t length_ = 0;  // bytes hashed in all
};

Sha256Digest sha256(const void* data, std::size_t size) noexcept;
// HMAC-SHA256 of `message` under `key` (a key longer than a block is hashed first, as RFC 2104).
Sha256Digest hmac_sha256(const void* key, std::size_t key_size, const void* message,
                         std::size_t message_size) noexcept;

}  // namespace mp::detail
