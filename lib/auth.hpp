// Internal: the authkey challenge–response (CPython: connection.deliver_challenge /
// answer_challenge), used by Listener/Client and the managers.
//
// Mutual: the server challenges the client, then the client challenges the server. A challenge
// is 32 random bytes; the answer is HMAC-SHA256(key, challenge), compared in constant time.
// Frames are [u32 length][bytes] with a hard cap, so a hostile peer cannot make us allocate.
// A wrong key raises AuthenticationError on the side that detects it; the other side sees the
// failure message (or EOF) and raises too. An empty key is refused.
#pragma once

#include <cstddef>
#include <functional>
#include <string>

namespace mp::auth {

// Blocking byte transport: write all bytes / read exactly n bytes (throw EOFError on EOF).
struct Channel {
  std::function<void(const void*, std::size_t)> write_all;
  std::function<void(void*, std::size_t)> read_exact;
};

inline constexpr std::size_t kMessageLength = 32;
inline constexpr std::size_t kMaxFrame = 256;

// Server side of the handshake (after accept). Throws AuthenticationError.
void serve_handshake(Channel& ch, const std::string& authkey);
// Client side of the handshake (after connect). Throws AuthenticationError.
void client_handshake(Channel& ch, const std::string& authkey);

// Pieces, for tests and fuzzing.
void deliver_challenge(Channel& ch, const std::string& authkey);
void answer_challenge(Channel& ch, const std::string& authkey);
std::string hmac_sha256(const std::string& key, const std::string& message);
bool constant_time_equal(const std::string& a, const std::string& b) noexcept;

}  // namespace mp::auth
