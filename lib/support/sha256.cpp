// SHA-256 and HMAC-SHA256 (sha256.hpp): FIPS 180-4 §6.2, written from the standard.
#include "support/sha256.hpp"

#include <cstring>

namespace mp::detail {
namespace {

// The first 32 bits of the fractional parts of the cube roots of the first 64 primes.
constexpr std::uint32_t kRound[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

constexpr std::uint32_t rotr(std::uint32_t x, int n) noexcept { return (x >> n) | (x << (32 - n)); }

std::uint32_t load_be32(const unsigned char* p) noexcept {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}

}  // namespace

Sha256::Sha256() noexcept
    // The first 32 bits of the fractional parts of the square roots of the first 8 primes.
    : state_{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
             0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19},
      block_{} {}

void Sha256::compress(const unsigned char* block) noexcept {
  std::uint32_t w[64];
  for (int t = 0; t < 16; ++t) w[t] = load_be32(block + 4 * t);
  for (int t = 16; t < 64; ++t) {
    const std::uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
    const std::uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
    w[t] = w[t - 16] + s0 + w[t - 7] + s1;
  }
  std::uint32_t a = state_[0], b = state_[1], c = state_[2], d = state_[3];
  std::uint32_t e = state_[4], f = state_[5], g = state_[6], h = state_[7];
  for (int t = 0; t < 64; ++t) {
    const std::uint32_t t1 =
        h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + kRound[t] + w[t];
    const std::uint32_t t2 =
        (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    h = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  state_[0] += a;
  state_[1] += b;
  state_[2] += c;
  state_[3] += d;
  state_[4] += e;
  state_[5] += f;
  state_[6] += g;
  state_[7] += h;
}

void Sha256::update(const void* data, std::size_t size) noexcept {
  if (size == 0) return;  // data may be null
  const auto* p = static_cast<const unsigned char*>(data);
  length_ += size;
  if (buffered_ > 0) {
    const std::size_t take = size < kBlockSize - buffered_ ? size : kBlockSize - buffered_;
    std::memcpy(block_ + buffered_, p, take);
    buffered_ += take;
    p += take;
    size -= take;
    if (buffered_ < kBlockSize) return;
    compress(block_);
    buffered_ = 0;
  }
  for (; size >= kBlockSize; p += kBlockSize, size -= kBlockSize) compress(p);
  if (size > 0) std::memcpy(block_, p, size);
  buffered_ = size;
}

Sha256Digest Sha256::finish() noexcept {
  // Padding: 0x80, zeros up to 56 bytes into a block, then the length in bits, big-endian.
  const std::uint64_t bits = length_ * 8;
  block_[buffered_++] = 0x80;
  if (buffered_ > kBlockSize - 8) {
    std::memset(block_ + buffered_, 0, kBlockSize - buffered_);
    compress(block_);
    buffered_ = 0;
  }
  std::memset(block_ + buffered_, 0, kBlockSize - 8 - buffered_);
  for (int i = 0; i < 8; ++i)
    block_[kBlockSize - 1 - i] = static_cast<unsigned char>(bits >> (8 * i));
  compress(block_);
  buffered_ = 0;
  Sha256Digest out;
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 4; ++j)
      out[static_cast<std::size_t>(4 * i + j)] =
          static_cast<unsigned char>(state_[i] >> (24 - 8 * j));
  return out;
}

Sha256Digest sha256(const void* data, std::size_t size) noexcept {
  Sha256 h;
  h.update(data, size);
  return h.finish();
}

Sha256Digest hmac_sha256(const void* key, std::size_t key_size, const void* message,
                         std::size_t message_size) noexcept {
  unsigned char k[Sha256::kBlockSize] = {};
  if (key_size > Sha256::kBlockSize) {
    const Sha256Digest hashed = sha256(key, key_size);
    std::memcpy(k, hashed.data(), hashed.size());
  } else if (key_size > 0) {
    std::memcpy(k, key, key_size);
  }
  unsigned char pad[Sha256::kBlockSize];
  for (std::size_t i = 0; i < sizeof pad; ++i) pad[i] = static_cast<unsigned char>(k[i] ^ 0x36);
  Sha256 inner;
  inner.update(pad, sizeof pad);
  inner.update(message, message_size);
  const Sha256Digest inner_digest = inner.finish();
  for (std::size_t i = 0; i < sizeof pad; ++i) pad[i] = static_cast<unsigned char>(k[i] ^ 0x5c);
  Sha256 outer;
  outer.update(pad, sizeof pad);
  outer.update(inner_digest.data(), inner_digest.size());
  return outer.finish();
}

}  // namespace mp::detail
