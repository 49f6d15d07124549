// Internal: the tracker that unlinks the named shared memory segments a program created (with
// tracking) once every process that tracked them has ended, however they ended (CPython:
// multiprocessing/resource_tracker.py). See docs/RELIABILITY.md and lib/shm_tracker.cpp.
//
// Design: each process that creates a tracked segment has its own registry (a small shared
// mapping holding the names) and its own watcher, a tiny process started on the first
// registration that blocks on a pipe whose write end only the registering process (and the
// children it forks, which inherit it) holds. EOF on the pipe means they have all ended; the
// watcher then unlinks what the registry still lists, and exits. No daemon outlives the program.
//
// Guarantees
// - A registered name is unlinked by the watcher after the registering process has ended, and
//   the children it forked after the watcher started (they may still use the name), however they
//   ended (normal exit, exception, abort, SIGKILL) — unless unregistered first.
// - The watcher unlinks a name only if it still refers to the very segment registered (device and
//   inode): a name unlinked and re-created meanwhile by anyone else is left alone.
// - Only creators register: a process that merely attached never causes an unlink (gh-82300).
// Limits
// - A spawned child does not share its parent's tracker: what it creates is tracked by its own.
// - If the watcher itself is killed (SIGKILL by hand), the names it watched are no longer cleaned.
#pragma once

#include <cstdint>
#include <string>

#include "platform/shared_memory.hpp"

namespace mp::detail::shm_tracker {

// A registration: the slot in the registry and a check value, kept by the SharedMemory state.
struct Ticket {
  void* registry =
      nullptr;  // the registering process's registry (mapped in its forked children too)
  std::uint32_t slot = 0;
  std::uint64_t serial = 0;  // 0: not registered
};

// Records `name` (the segment `id`). Starts the watcher on the first call in this process.
// Throws OSError when the watcher cannot be started or the registry is full (ENOSPC).
Ticket register_segment(const std::string& name, platform::ShmFileId id);
// Forgets a registration (no-op for an empty ticket or one already forgotten); works from the
// registering process and from its forked children.
void unregister_segment(const Ticket& ticket) noexcept;
// The number of names this process's registry lists (tests and debugging).
std::size_t registered_count() noexcept;

}  // namespace mp::detail::shm_tracker
