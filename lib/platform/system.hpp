// Environment, randomness, CPUs, type names and locating code in the loaded binaries (for spawn).
// system_posix.cpp, system_linux.cpp (getrandom), modules_linux.cpp (ELF); system_win32.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace mp::platform {

std::optional<std::string> get_env(const char* name);
void unset_env(const char* name);
// Random bytes from the OS (authkeys, unique names).
void random_bytes(void* out, std::size_t size);
unsigned cpu_count() noexcept;

// The demangled name of a type, for messages ("std::runtime_error").
std::string demangle(const char* mangled);
// Lower-case hex of `size` bytes (build ids; system_common.cpp).
std::string to_hex(const void* data, std::size_t size);

// Windows only (system_win32.cpp): calls fn(arg) when the calling thread ends (fiber-local
// storage's callback), the last registered first. For per-thread objects with destructors
// (lib/support/thread_object.hpp): mingw-w64 cannot destroy thread_local objects safely.
void at_thread_exit(void (*fn)(void*), void* arg);

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
