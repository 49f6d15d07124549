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
#include <cstdint>
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

// The handshake as a state machine over frames, so that a server can authenticate many peers at
// once from one thread without any peer delaying another (lib/support/acceptor.hpp). The blocking
// functions below drive it over a Channel. Use: send output() (and clear it); then, while
// wanted() > 0, feed() that many bytes (or fewer) and send output() again; finished once
// wanted() == 0 and failed() is empty. After a failure, output() may still hold the failure
// message for the peer (CPython sends #FAILURE# too).
class Handshake {
 public:
  enum class Role { server, client, deliver_only, answer_only };
  // Throws AuthenticationError for an empty key (before anything is produced).
  Handshake(const std::string& authkey, Role role);
  std::string& output() noexcept { return out_; }
  // Bytes needed before the next step (at most 4 + kMaxFrame); 0 when finished or failed.
  std::size_t wanted() const noexcept;
  // Takes up to wanted() bytes.
  void feed(const char* data, std::size_t size);
  // Why the handshake failed; empty while it runs or after it succeeded.
  const std::string& failed() const noexcept { return error_; }
  bool succeeded() const noexcept { return finished_ && error_.empty(); }

 private:
  enum class Phase : std::uint8_t { deliver, answer };
  void start_phase();
  void on_frame(const std::string& frame);
  std::string key_;
  Phase phases_[2]{};
  int count_ = 0;  // phases of the role
  int phase_ = 0;  // the current one
  int step_ = 0;   // frames received in the current phase
  bool finished_ = false;
  std::string challenge_;   // what we asked (deliver phase)
  std::string in_;          // the frame being received: 4-byte length, then the body
  std::uint32_t body_ = 0;  // body length once the header is in
  bool have_header_ = false;
  std::string out_;
  std::string error_;
};

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
