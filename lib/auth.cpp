// HMAC-SHA256 challenge–response (OpenSSL libcrypto).
//
// libcrypto is loaded on the first handshake (dlopen), not linked: loading it at start-up cost
// every mp program, and every spawned child, 0.7-1.3 ms before main (bench/README.md), while only
// Listener/Client and the managers use it. Linking it statically cost 0.4 ms (4.4 MB of
// relocations, OpenSSL 3's providers come along with HMAC). Its headers give the signatures.
// Python: CPython's multiprocessing also imports hmac only when a connection authenticates.
#include "auth.hpp"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <atomic>
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

// The libcrypto functions used, resolved once (a failed load is retried by the next call).
struct Crypto {
  decltype(&::EVP_sha256) sha256;
  decltype(&::HMAC) hmac;
};

// Loaded on first use without an initialization guard (a thread forking while another loads
// would leave the child a guard that never completes): threads that race each load it (the
// loader counts references) and keep the first result.
constinit std::atomic<const Crypto*> g_crypto{nullptr};

const Crypto& crypto() {
  if (const Crypto* c = g_crypto.load(std::memory_order_acquire)) return *c;
  void* lib = platform::open_library({MP_CRYPTO_SONAME, MP_CRYPTO_PATH},
                                     "OpenSSL's libcrypto (needed for authkey handshakes)");
  auto* fresh = new Crypto{reinterpret_cast<decltype(&::EVP_sha256)>(platform::library_symbol(lib, "EVP_sha256")),
                           reinterpret_cast<decltype(&::HMAC)>(platform::library_symbol(lib, "HMAC"))};
  const Crypto* expected = nullptr;
  if (g_crypto.compare_exchange_strong(expected, fresh, std::memory_order_acq_rel)) return *fresh;
  delete fresh;
  return *expected;
}

}  // namespace

std::string hmac_sha256(const std::string& key, const std::string& message) {
  const Crypto& c = crypto();
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!c.hmac(c.sha256(), key.data(), static_cast<int>(key.size()),
              reinterpret_cast<const unsigned char*>(message.data()), message.size(), out, &len))
    throw AuthenticationError("HMAC computation failed");
  return std::string(reinterpret_cast<const char*>(out), len);
}

// Time depends on the sizes only (as CRYPTO_memcmp): every byte is compared and the differences
// are OR-ed into a volatile, which the compiler cannot turn into an early exit.
bool constant_time_equal(const std::string& a, const std::string& b) noexcept {
  if (a.size() != b.size()) return false;
  volatile unsigned char diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) diff = diff | static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
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
