// POSIX part of platform/system.hpp's HMAC-SHA256: OpenSSL's libcrypto.
//
// libcrypto is loaded on the first handshake (dlopen), not linked: loading it at start-up cost
// every mp program, and every spawned child, 0.7-1.3 ms before main (bench/README.md), while only
// Listener/Client and the managers use it. Linking it statically cost 0.4 ms (4.4 MB of
// relocations, OpenSSL 3's providers come along with HMAC). Its headers give the signatures.
// Python: CPython's multiprocessing also imports hmac only when a connection authenticates.
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <atomic>
#include <climits>

#include "platform/system.hpp"

namespace mp::platform {
namespace {

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
  void* lib = open_library({MP_CRYPTO_SONAME, MP_CRYPTO_PATH},
                           "OpenSSL's libcrypto (needed for authkey handshakes)");
  auto* fresh =
      new Crypto{reinterpret_cast<decltype(&::EVP_sha256)>(library_symbol(lib, "EVP_sha256")),
                 reinterpret_cast<decltype(&::HMAC)>(library_symbol(lib, "HMAC"))};
  const Crypto* expected = nullptr;
  if (g_crypto.compare_exchange_strong(expected, fresh, std::memory_order_acq_rel)) return *fresh;
  delete fresh;
  return *expected;
}

}  // namespace

bool hmac_sha256(const void* key, std::size_t key_size, const void* message,
                 std::size_t message_size, unsigned char (&out)[kSha256Size]) {
  if (key_size > static_cast<std::size_t>(INT_MAX)) return false;
  const Crypto& c = crypto();
  unsigned int len = 0;  // SHA-256 writes exactly kSha256Size bytes
  return c.hmac(c.sha256(), key, static_cast<int>(key_size),
                static_cast<const unsigned char*>(message), message_size, out, &len) &&
         len == kSha256Size;
}

}  // namespace mp::platform
