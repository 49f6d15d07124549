// HMAC-SHA256 challenge–response. The HMAC is mp's own (support/sha256.hpp), on every platform.
#include "support/auth.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "support/framing.hpp"
#include "mp/errors.hpp"
#include "platform/system.hpp"
#include "support/sha256.hpp"

namespace mp::auth {
namespace {

constexpr const char kChallenge[] = "#CHALLENGE#";
constexpr const char kWelcome[] = "#WELCOME#";
constexpr const char kFailure[] = "#FAILURE#";

void check_key(const std::string& authkey) {
  if (authkey.empty()) throw AuthenticationError("an empty authkey is not allowed");
}

}  // namespace

std::string hmac_sha256(const std::string& key, const std::string& message) {
  const detail::Sha256Digest mac =
      detail::hmac_sha256(key.data(), key.size(), message.data(), message.size());
  return std::string(reinterpret_cast<const char*>(mac.data()), mac.size());
}

// Time depends on the sizes only (as CRYPTO_memcmp): every byte is compared and the differences
// are OR-ed into a volatile, which the compiler cannot turn into an early exit.
bool constant_time_equal(const std::string& a, const std::string& b) noexcept {
  if (a.size() != b.size()) return false;
  volatile unsigned char diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) diff = diff | static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

Handshake::Handshake(const std::string& authkey, Role role) : key_(authkey) {
  check_key(authkey);
  switch (role) {
    case Role::server:
      phases_[0] = Phase::deliver, phases_[1] = Phase::answer, count_ = 2;
      break;
    case Role::client:
      phases_[0] = Phase::answer, phases_[1] = Phase::deliver, count_ = 2;
      break;
    case Role::deliver_only:
      phases_[0] = Phase::deliver, count_ = 1;
      break;
    case Role::answer_only:
      phases_[0] = Phase::answer, count_ = 1;
      break;
  }
  start_phase();
}

std::size_t Handshake::wanted() const noexcept {
  if (finished_ || !error_.empty()) return 0;
  return have_header_ ? body_ - (in_.size() - 4) : 4 - in_.size();
}

void Handshake::start_phase() {
  step_ = 0;
  if (phases_[phase_] == Phase::deliver) {
    challenge_.assign(kMessageLength, '\0');
    platform::random_bytes(challenge_.data(), challenge_.size());
    detail::framing::append(out_, kChallenge + challenge_);
  }
}

void Handshake::feed(const char* data, std::size_t size) {
  while (size > 0 && wanted() > 0) {
    const std::size_t n = std::min(size, wanted());
    in_.append(data, n);
    data += n;
    size -= n;
    if (!have_header_) {
      if (in_.size() < 4) continue;
      body_ = detail::framing::short_length(in_.data());  // the long form exceeds kMaxFrame
      if (body_ > kMaxFrame) {
        error_ = "message too long in the authentication handshake";
        return;
      }
      have_header_ = true;
    }
    if (in_.size() - 4 < body_) continue;
    const std::string frame = in_.substr(4);
    in_.clear();
    have_header_ = false;
    on_frame(frame);
  }
}

void Handshake::on_frame(const std::string& frame) {
  const std::size_t prefix = sizeof kChallenge - 1;
  if (phases_[phase_] == Phase::deliver) {
    // The peer's digest of our challenge.
    if (!constant_time_equal(frame, hmac_sha256(key_, challenge_))) {
      detail::framing::append(out_, kFailure);
      error_ = "digest received was wrong";
      return;
    }
    detail::framing::append(out_, kWelcome);
  } else if (step_++ == 0) {
    // The peer's challenge: answer it, then wait for its verdict.
    if (frame.size() != prefix + kMessageLength || frame.compare(0, prefix, kChallenge) != 0) {
      error_ = "protocol error: no challenge received";
      return;
    }
    detail::framing::append(out_, hmac_sha256(key_, frame.substr(prefix)));
    return;
  } else if (frame != kWelcome) {
    error_ = "digest sent was rejected";
    return;
  }
  if (++phase_ == count_)
    finished_ = true;
  else
    start_phase();
}

namespace {

// Drives `h` over a blocking channel; read errors (EOFError, OSError) pass through.
void run(Handshake& h, Channel& ch) {
  char buf[4 + kMaxFrame];
  for (;;) {
    if (!h.output().empty()) {
      ch.write_all(h.output().data(), h.output().size());
      h.output().clear();
    }
    if (!h.failed().empty()) throw AuthenticationError(h.failed());
    const std::size_t n = h.wanted();
    if (n == 0) return;
    ch.read_exact(buf, n);
    h.feed(buf, n);
  }
}

}  // namespace

void deliver_challenge(Channel& ch, const std::string& authkey) {
  Handshake h(authkey, Handshake::Role::deliver_only);
  run(h, ch);
}

void answer_challenge(Channel& ch, const std::string& authkey) {
  Handshake h(authkey, Handshake::Role::answer_only);
  run(h, ch);
}

void serve_handshake(Channel& ch, const std::string& authkey) {
  Handshake h(authkey, Handshake::Role::server);
  run(h, ch);
}

void client_handshake(Channel& ch, const std::string& authkey) {
  Handshake h(authkey, Handshake::Role::client);
  run(h, ch);
}

}  // namespace mp::auth
