// Internal OS API for named shared memory (lib/shared_memory.cpp, lib/shm_tracker.cpp).
// shm_posix.cpp: opening, unlinking, identity (shm_open/shm_unlink/fstat); shm_linux.cpp: creation
// that publishes a segment only once it is complete, and the tracker's watcher process.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "platform/os.hpp"

namespace mp::platform::shm {

// Which file a name refers to (device and inode): lets the watcher check that a name still
// refers to the segment it recorded before unlinking it.
struct FileId {
  std::uint64_t dev = 0;
  std::uint64_t ino = 0;
  friend bool operator==(const FileId&, const FileId&) = default;
};

// Longest name accepted (without the leading '/'), as NAME_MAX.
inline constexpr std::size_t kMaxName = 255;

// Throws OSError EINVAL (as shm_open) for a name that is empty, contains '/' or NUL, or is "."
// or "..", and ENAMETOOLONG past kMaxName.
void check_name(const std::string& name);

// A new segment of exactly `size` bytes (zero-filled, mode 0600) that has no name yet: nobody
// can open it until publish(). Throws OSError (e.g. EFBIG, ENOSPC, EMFILE).
Handle create_unnamed(std::size_t size);
// Gives `h` (from create_unnamed) the name `name`, atomically: an opener sees the complete
// segment or nothing. Throws OSError EEXIST if the name exists, leaving it untouched.
void publish(Handle h, const std::string& name);
// Opens an existing segment read-write. Throws OSError (ENOENT: no such name, EACCES).
Handle open(const std::string& name);
// Removes the name. Throws OSError (ENOENT).
void unlink(const std::string& name);
FileId file_id(Handle h);

// The tracker's watcher (lib/shm_tracker.cpp): a process outside this one's process tree
// (double fork: not a child anyone must reap or count; its own session, so a terminal's ^C for
// the program's process group does not reach it) that blocks reading `lifeline` until every
// holder of the pipe's write end has ended, then calls `cleanup(context)` and exits. Between
// fork and exit it runs only system calls (the caller may have other threads). It holds no
// other descriptor of the caller and has /dev/null as stdio. Returns once the watcher runs.
// Throws OSError when fork fails.
void start_watcher(Handle lifeline, void (*cleanup)(void* context), void* context);
// In the watcher (async-signal-safe): unlinks `name` only if it still refers to `id`.
void unlink_if_same(const char* name, std::size_t size, FileId id) noexcept;

}  // namespace mp::platform::shm
