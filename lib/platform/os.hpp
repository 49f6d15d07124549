// The internal OS API. Shared code calls only these; lib/platform/*_<os>.cpp implement them and
// CMake picks the files. Every descriptor returned is close-on-exec.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mp::platform {

#ifdef _WIN32
using Handle = std::intptr_t;  // a HANDLE; INVALID_HANDLE_VALUE is -1
#else
using Handle = int;  // a file descriptor
#endif
inline constexpr Handle kInvalidHandle = -1;
using Clock = std::chrono::steady_clock;
using Nanos = std::chrono::nanoseconds;

// Throws mp::OSError for the calling thread's last error (errno), "<what>: <strerror>".
[[noreturn]] void throw_last_error(const std::string& what);
[[noreturn]] void throw_error(int errnum, const std::string& what);
void close_handle(Handle h) noexcept;
// Duplicates `h` (close-on-exec).
Handle duplicate_handle(Handle h);
// Marks `h` close-on-exec (true) or inheritable (false).
void set_inheritable(Handle h, bool inheritable);

// ---- shared memory: anonymous, unnamed, freed by the OS when the last mapping and handle go.
// Zero-filled; pages are committed on first touch. Throws std::bad_alloc for more than RAM + swap,
// OSError otherwise.
Handle create_shared_memory(std::size_t size);
std::size_t shared_memory_size(Handle h);
void* map_shared(Handle h, std::size_t size);
void unmap(void* address, std::size_t size) noexcept;

// ---- wait on a 32-bit word in shared memory (a futex on Linux).
// Returns false on timeout; spurious wake-ups return true. `timeout` null = forever.
bool wait_on_address(std::atomic<std::uint32_t>* word, std::uint32_t expected, const Nanos* timeout);
void wake_address(std::atomic<std::uint32_t>* word, int count);  // count = INT_MAX: all
// Whether the process `pid` has ended: every thread of it (an unreaped zombie counts as ended; a
// process whose main thread exited while other threads run does not).
bool process_dead(int pid) noexcept;
int current_pid() noexcept;
int current_tid() noexcept;
void yield_cpu() noexcept;  // a pause instruction for spin loops
// Whether this process may run on more than one CPU (its affinity, read once): spinning for a
// peer is pointless when the peer needs this very CPU.
bool several_cpus() noexcept;
void sleep_for(Nanos d) noexcept;

// ---- processes
// A handle that refers to one process (pidfd), immune to PID reuse; readable once it ended.
Handle open_process(int pid);
// Waits until `h` is readable or the timeout passes; true if readable. EINTR is retried.
bool wait_readable(Handle h, const Nanos* timeout);
// Several handles; returns the indexes of the ready ones (empty on timeout).
std::vector<std::size_t> wait_any(const std::vector<Handle>& handles, const Nanos* timeout);
// Reaps the child behind the process handle; nullopt if it still runs and !block.
// Exit code as Python: the status, or -N for signal N.
std::optional<int> reap(Handle process, bool block);
void send_signal(Handle process, int sig);  // no error if the process already ended
inline constexpr int kTerminateSignal = 15;  // SIGTERM
inline constexpr int kKillSignal = 9;       // SIGKILL
// SIGKILLs the child `pid`, which the caller has not reaped (so the pid is still this child's),
// and reaps it. For a child no process handle could be had for.
void kill_and_reap(int pid) noexcept;
// The signal's name, e.g. "SIGKILL" ("signal N" when unknown).
std::string signal_name(int sig);
// Makes the calling process receive `sig` when its parent thread ends (0 = off). No-op where
// the OS has no such facility.
void set_parent_death_signal(int sig) noexcept;

// Flushes C and C++ stdio buffers (before fork, and before a child leaves).
void flush_stdio() noexcept;
// fork(); returns 0 in the child, the pid in the parent. Throws OSError.
int fork_process();
// Runs fn() in the child after every fork() (pthread_atfork), e.g. to re-make a mutex another
// thread held during the fork.
void at_fork_in_child(void (*fn)());
// Leaves at once with `code` (no atexit handlers, no static destructors).
[[noreturn]] void exit_now(int code) noexcept;
// Runs fn(status) first when the process calls exit()/std::exit() (glibc on_exit), so a forked
// child leaves through its own cleanup and never runs the parent's static destructors.
void on_exit_first(void (*fn)(int status));

// The running executable, for re-execution (/proc/self/exe on Linux).
std::string executable_path();
// The program's file as the OS resolves it now (for argv[0] of spawned children); falls back to
// executable_path().
std::string executable_display_path();
// In a spawned child: names the process after the program's file (what ps and top show), not
// after the path it was executed by.
void name_process_after_executable() noexcept;
// A unidirectional pipe {read, write}, close-on-exec.
std::pair<Handle, Handle> make_pipe();
// Blocking full write / read. read_some returns 0 at EOF. EINTR is retried; EPIPE is an OSError.
void write_all(Handle h, const void* data, std::size_t size);
std::size_t read_some(Handle h, void* data, std::size_t size);
// Reads until EOF.
std::string read_to_end(Handle h);
// Environment
std::optional<std::string> get_env(const char* name);
void unset_env(const char* name);
// Random bytes from the OS (authkeys, unique names).
void random_bytes(void* out, std::size_t size);
unsigned cpu_count() noexcept;
// The demangled name of a type, for messages ("std::runtime_error").
std::string demangle(const char* mangled);

// ---- shared libraries loaded on first use (libcrypto: lib/auth.cpp)
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
