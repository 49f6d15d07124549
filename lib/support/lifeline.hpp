// Internal: how a child follows its parent's life (CPython has no equivalent; see
// docs/RELIABILITY.md).
#pragma once

#include "platform/handle.hpp"

namespace mp::detail {

// Opens a process handle on the parent of the calling child, immune to PID reuse: if the parent
// had already died (and its pid could have been reused) when this runs, returns kInvalidHandle,
// so parent_process()->is_alive() is false rather than watching a stranger.
platform::Handle open_parent(int parent_pid) noexcept;

// In a daemonic child: a background thread waits on a duplicate of `parent` and ends this
// process with SIGKILL as soon as the parent has ended, however it ended (SIGKILL included).
// Unlike PR_SET_PDEATHSIG this follows the parent *process*, not the thread that started the
// child, so a daemon started from a short-lived thread lives on. With an invalid handle: ends
// the child at once if the parent is already gone, else does nothing (no descriptor was left).
void watch_parent_for_daemon(platform::Handle parent, int parent_pid) noexcept;

// Runs `hook` on the watch thread just before a daemonic child ends because its parent died
// (e.g. a manager server removing its socket file). It must not block.
void set_parent_death_hook(void (*hook)()) noexcept;

}  // namespace mp::detail
