// The OS layer's base (lib/platform/, one namespace mp::platform). Shared code calls only the
// capability headers beside this one; lib/platform/*_<os>.cpp implement them and CMake picks the
// files: *_posix.cpp portable POSIX, *_linux.cpp Linux-only calls, *_win32.cpp Windows.
//   handle.hpp         handles and errors
//   process.hpp        process launch, reaping, signals, the lifeline, fork
//   shared_memory.hpp  anonymous and named shared memory
//   wait.hpp           the cross-process wait object; process and thread identity
//   io.hpp             pipes, sockets, readiness
//   handle_passing.hpp handles sent to another process
//   system.hpp         environment, randomness, loaded code, shared libraries
// Every handle returned is close-on-exec (non-inheritable on Windows).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace mp::platform {

#ifdef _WIN32
using Handle = std::intptr_t;  // a HANDLE; INVALID_HANDLE_VALUE is -1
#else
using Handle = int;  // a file descriptor
#endif
inline constexpr Handle kInvalidHandle = -1;
using Clock = std::chrono::steady_clock;
using Nanos = std::chrono::nanoseconds;

// Throws mp::OSError for the calling thread's last error (errno; GetLastError on Windows),
// "<what>: <text>".
[[noreturn]] void throw_last_error(const std::string& what);
// Throws mp::OSError for an error code of the OS (errno; a Win32 error code on Windows).
[[noreturn]] void throw_error(int errnum, const std::string& what);
// Throws mp::OSError for a POSIX condition (EPIPE, ENOENT, ...) on every platform, so shared code
// raises and tests the conditions the contract names without #ifs (std::generic_category() on
// Windows, where it compares equal to the same errno).
[[noreturn]] void throw_errno(int posix_errno, const std::string& what);
void close_handle(Handle h) noexcept;
// Duplicates `h` (close-on-exec).
Handle duplicate_handle(Handle h);
// Marks `h` close-on-exec (false) or inheritable (true).
void set_inheritable(Handle h, bool inheritable);

}  // namespace mp::platform
