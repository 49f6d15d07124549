// Shared memory: anonymous segments (every start method; passed to children as handles) and
// named ones (mp::SharedMemory; POSIX shm_open names, and the tracker's watcher).
// Anonymous: shared_memory_linux.cpp (memfd), shared_memory_win32.cpp (pagefile-backed section).
// Named: shared_memory_posix.cpp (shm_open, shm_unlink, fstat), shared_memory_linux.cpp
// (creation that publishes only complete segments; the watcher), shared_memory_win32.cpp (named
// pagefile-backed sections, `Local\NAME`, gone with their last handle as CPython's on Windows).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "platform/handle.hpp"

namespace mp::platform {

// ---- anonymous: unnamed, freed by the OS when the last mapping and handle go.
// Zero-filled; pages are committed on first touch. Throws std::bad_alloc for more than RAM + swap,
// OSError otherwise.
Handle create_shared_memory(std::size_t size);
std::size_t shared_memory_size(Handle h);
// Maps `size` bytes (at most the segment's size) read-write. A word in such a view can be waited
// on by every process mapping the segment (platform/wait.hpp).
void* map_shared(Handle h, std::size_t size);
void unmap(void* address, std::size_t size) noexcept;
// Gives the pages of bytes [offset, offset + size) of segment `h` back to the OS: the range reads
// as zeros afterwards in every process that maps it. False where the platform cannot (Linux can;
// the portable fallback cannot): the caller then clears the range itself.
bool discard_shared_range(Handle h, std::size_t offset, std::size_t size) noexcept;
// Called by the reaper of process `pid` once it ended: removes what the process may have left
// named while it made an anonymous segment (the portable fallback names one for two system calls).
// Does nothing where anonymous segments are never named (Linux, Windows).
void forget_ended_process(int pid) noexcept;

// ---- named (POSIX shm names)
// Which file a name refers to (device and inode): lets the watcher check that a name still
// refers to the segment it recorded before unlinking it.
struct ShmFileId {
  std::uint64_t dev = 0;
  std::uint64_t ino = 0;
  friend bool operator==(const ShmFileId&, const ShmFileId&) = default;
};

// Longest name accepted (without the leading '/'), as NAME_MAX.
inline constexpr std::size_t kMaxShmName = 255;

// Whether a segment must get its name when it is made. Windows: a section cannot be named later,
// and its name goes with its last handle, so nothing is left to track or unlink: mp::SharedMemory
// creates it with create_named_shm and never registers it with the tracker. POSIX: made unnamed,
// registered with the tracker, then published (create_unnamed_shm, publish_shm).
#ifdef _WIN32
inline constexpr bool kShmNamedWhenMade = true;
#else
inline constexpr bool kShmNamedWhenMade = false;
#endif

// Throws OSError EINVAL (as shm_open) for a name that is empty, contains '/' or NUL (Windows:
// also a backslash), or is "." or "..", and ENAMETOOLONG past kMaxShmName bytes.
void check_shm_name(const std::string& name);
// A new segment of exactly `size` bytes (zero-filled, mode 0600) that has no name yet: nobody
// can open it until publish_shm(). Throws OSError (e.g. EFBIG, ENOSPC, EMFILE).
// Windows: throws std::logic_error (kShmNamedWhenMade).
Handle create_unnamed_shm(std::size_t size);
// Gives `h` (from create_unnamed_shm) the name `name`, atomically: an opener sees the complete
// segment or nothing. Throws OSError EEXIST if the name exists, leaving it untouched.
// Windows: throws std::logic_error (kShmNamedWhenMade).
void publish_shm(Handle h, const std::string& name);
// A new segment of exactly `size` bytes (zero-filled) named `name`: an opener sees it complete,
// with its exact size, or not at all. Throws OSError EEXIST if the name exists, leaving it
// untouched.
Handle create_named_shm(const std::string& name, std::size_t size);
// Opens an existing segment read-write; shared_memory_size() gives the size it was made with
// (exactly, also on Windows, which rounds sections to pages). Throws OSError (ENOENT: no such
// name, EACCES; Windows: EINVAL for a section another program made, without mp's header).
Handle open_shm(const std::string& name);
// Removes the name. Throws OSError (ENOENT). Windows: does nothing once the name is checked, as
// CPython's SharedMemory.unlink there: a section's name goes with its last handle, and no call
// removes it sooner.
void unlink_shm(const std::string& name);
ShmFileId shm_file_id(Handle h);

// The tracker's watcher (lib/shm_tracker.cpp): a process outside this one's process tree
// (double fork: not a child anyone must reap or count; its own session, so a terminal's ^C for
// the program's process group does not reach it) that blocks reading `lifeline` until every
// holder of the pipe's write end has ended, then calls `cleanup(context)` and exits. Between
// fork and exit it runs only system calls (the caller may have other threads). It holds no
// other descriptor of the caller and has /dev/null as stdio. Returns once the watcher runs.
// Throws OSError when fork fails. Windows: starts nothing and never calls `cleanup` (a section
// does not outlive its last handle there, so there is nothing to clean up).
void start_shm_watcher(Handle lifeline, void (*cleanup)(void* context), void* context);
// In the watcher (async-signal-safe): unlinks `name` only if it still refers to `id`.
// Windows: does nothing.
void unlink_shm_if_same(const char* name, std::size_t size, ShmFileId id) noexcept;

}  // namespace mp::platform
