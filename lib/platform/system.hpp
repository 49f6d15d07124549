// Environment, randomness, HMAC, CPUs, type names, shared libraries loaded on first use, and
// locating code in the loaded binaries (for spawn). system_posix.cpp, system_linux.cpp (getrandom),
// modules_linux.cpp (ELF), crypto_posix.cpp (libcrypto); system_win32.cpp, crypto_win32.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mp::platform {

std::optional<std::string> get_env(const char* name);
void unset_env(const char* name);
// Random bytes from the OS (authkeys, unique names).
void random_bytes(void* out, std::size_t size);
unsigned cpu_count() noexcept;

// HMAC-SHA256 of `message` under `key` into `out` (the authkey handshake, lib/support/auth.cpp).
// POSIX: OpenSSL's libcrypto, loaded on the first call (crypto_posix.cpp); Windows: the OS's
// BCrypt (crypto_win32.cpp; mingw-w64 has no OpenSSL). Returns false if the computation failed;
// throws std::runtime_error naming the library when it cannot be loaded.
inline constexpr std::size_t kSha256Size = 32;
bool hmac_sha256(const void* key, std::size_t key_size, const void* message,
                 std::size_t message_size, unsigned char (&out)[kSha256Size]);
// The demangled name of a type, for messages ("std::runtime_error").
std::string demangle(const char* mangled);
// Lower-case hex of `size` bytes (build ids; system_common.cpp).
std::string to_hex(const void* data, std::size_t size);

// Windows only (system_win32.cpp): calls fn(arg) when the calling thread ends (fiber-local
// storage's callback), the last registered first. For per-thread objects with destructors
// (lib/support/thread_object.hpp): mingw-w64 cannot destroy thread_local objects safely.
void at_thread_exit(void (*fn)(void*), void* arg);

// ---- shared libraries loaded on first use (libcrypto: crypto_posix.cpp)
// Loads the first of `names` that loads (a soname searched as the loader does, or a path), kept
// for the process' life. Thread-safe. Throws std::runtime_error naming `what` and the loader's error.
void* open_library(const std::vector<std::string>& names, const std::string& what);
// The address of `symbol` in a library from open_library(). Throws std::runtime_error.
void* library_symbol(void* library, const char* symbol);

// ---- modules: locating code in the loaded binaries (for spawn)
struct CodeLocation {
  std::string module;    // "" for the main executable, else the path it was loaded from
  std::string build_id;  // GNU build id (hex), empty if the module has none
  std::uint64_t offset = 0;
};
// Where the code at `address` lives. Throws std::invalid_argument if in no loaded module.
CodeLocation locate_code(const void* address);
// The address of `loc` in this process: loads the module if needed and checks the build id.
// Throws mp::ProcessError with a clear message on a missing module or a build-id mismatch.
void* resolve_code(const CodeLocation& loc);

}  // namespace mp::platform
