// Internal OS calls for the child's lifeline to its parent (lib/lifeline.cpp).
#pragma once

namespace mp::platform {

// The pid of the calling process' parent as the OS sees it now (getppid): it changes to the
// reaper (init or a subreaper) once the parent has died.
int os_parent_pid() noexcept;
// Ends the calling process at once with SIGKILL (no handlers, no atexit, no flushing).
[[noreturn]] void kill_self() noexcept;

}  // namespace mp::platform
