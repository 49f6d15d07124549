// HMAC-SHA256 challenge–response (OpenSSL libcrypto).
#include "auth.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstdint>
#include <cstring>

#include "mp/errors.hpp"
#include "platform/os.hpp"

namespace mp::auth {
namespace {

constexpr const char kChallenge[] = "#CHALLENGE#";
constexpr const char kWelcome[] = "#WELCOME#";
constexpr const char kFailure[] = "#FAILURE#";

void send_frame(Channel& ch, const std::string& bytes) {
  const auto n = static_cast<std::uint32_t>(bytes.size());
  ch.write_all(&n, sizeof n);
  ch.write_all(bytes.data(), bytes.size());
}

std::string recv_frame(Channel& ch) {
  std::uint32_t n = 0;
  ch.read_exact(&n, sizeof n);
  if (n > kMaxFrame) throw AuthenticationError("message too long in the authentication handshake");
  std::string s(n, '\0');
  ch.read_exact(s.data(), n);
  return s;
}

void check_key(const std::string& authkey) {
  if (authkey.empty()) throw AuthenticationError("an empty authkey is not allowed");
}

}  // namespace

std::string hmac_sha256(const std::string& key, const std::string& message) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
            reinterpret_cast<const unsigned char*>(message.data()), message.size(), out, &len))
    throw AuthenticationError("HMAC computation failed");
  return std::string(reinterpret_cast<const char*>(out), len);
}

bool constant_time_equal(const std::string& a, const std::string& b) noexcept {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

void deliver_challenge(Channel& ch, const std::string& authkey) {
  check_key(authkey);
  std::string challenge(kMessageLength, '\0');
  platform::random_bytes(challenge.data(), challenge.size());
  send_frame(ch, kChallenge + challenge);
  const std::string response = recv_frame(ch);
  if (!constant_time_equal(response, hmac_sha256(authkey, challenge))) {
    send_frame(ch, kFailure);
    throw AuthenticationError("digest received was wrong");
  }
  send_frame(ch, kWelcome);
}

void answer_challenge(Channel& ch, const std::string& authkey) {
  check_key(authkey);
  const std::string message = recv_frame(ch);
  const std::size_t prefix = sizeof kChallenge - 1;
  if (message.size() != prefix + kMessageLength || message.compare(0, prefix, kChallenge) != 0)
    throw AuthenticationError("protocol error: no challenge received");
  send_frame(ch, hmac_sha256(authkey, message.substr(prefix)));
  if (recv_frame(ch) != kWelcome) throw AuthenticationError("digest sent was rejected");
}

void serve_handshake(Channel& ch, const std::string& authkey) {
  deliver_challenge(ch, authkey);
  answer_challenge(ch, authkey);
}

void client_handshake(Channel& ch, const std::string& authkey) {
  answer_challenge(ch, authkey);
  deliver_challenge(ch, authkey);
}

}  // namespace mp::auth
