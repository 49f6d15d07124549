// Internal OS helpers for the synchronization primitives (lib/futex_lock, lib/synchronize):
// cheap process and thread identities for lock ownership.
#pragma once

namespace mp::platform {

// The calling process's pid, cached (getpid() is a system call) and refreshed in a forked child.
int cached_pid() noexcept;
// The calling thread's OS thread id (gettid), cached per thread and refreshed after fork.
int cached_tid() noexcept;

}  // namespace mp::platform
