// Windows part of platform/system.hpp's HMAC-SHA256: BCrypt, the OS's own crypto (mingw-w64 has
// no OpenSSL, and BCrypt needs no library beside the OS: link bcrypt). The algorithm provider is
// opened once (the costly step) with BCRYPT_ALG_HANDLE_HMAC_FLAG and shared by every thread;
// each HMAC is one BCryptHash call on it.
#include <climits>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "platform/system.hpp"
#include "platform/win32.hpp"

#include <bcrypt.h>  // after <windows.h>

namespace mp::platform {
namespace {

BCRYPT_ALG_HANDLE hmac_provider() {
  struct Provider {
    BCRYPT_ALG_HANDLE handle = nullptr;
    NTSTATUS status = 0;
    Provider() {
      status = ::BCryptOpenAlgorithmProvider(&handle, BCRYPT_SHA256_ALGORITHM, nullptr,
                                             BCRYPT_ALG_HANDLE_HMAC_FLAG);
    }
  };
  static const Provider provider;  // no fork on Windows: a static's guard is safe here
  if (provider.status < 0 || !provider.handle) {
    char code[16];
    std::snprintf(code, sizeof code, "0x%08lx", static_cast<unsigned long>(provider.status));
    throw std::runtime_error(
        std::string("mp: cannot open BCrypt's HMAC-SHA256 provider (needed for authkey "
                    "handshakes): NTSTATUS ") +
        code);
  }
  return provider.handle;
}

}  // namespace

bool hmac_sha256(const void* key, std::size_t key_size, const void* message,
                 std::size_t message_size, unsigned char (&out)[kSha256Size]) {
  if (key_size > ULONG_MAX || message_size > ULONG_MAX) return false;
  // BCrypt takes non-const buffers but reads them only.
  const NTSTATUS status =
      ::BCryptHash(hmac_provider(), static_cast<PUCHAR>(const_cast<void*>(key)),
                   static_cast<ULONG>(key_size), static_cast<PUCHAR>(const_cast<void*>(message)),
                   static_cast<ULONG>(message_size), out, static_cast<ULONG>(kSha256Size));
  return status >= 0;
}

}  // namespace mp::platform
