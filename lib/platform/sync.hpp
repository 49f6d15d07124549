// Internal OS helpers for the synchronization primitives (lib/support/futex_lock, lib/synchronize):
// cheap process and thread identities for lock ownership.
#pragma once

#include <atomic>
#include <mutex>

namespace mp::platform {

// Caches behind cached_pid()/cached_tid(); 0 = not known yet. A forked child refreshes them.
extern std::atomic<int> g_pid_cache;
extern thread_local constinit int t_tid_cache;  // constinit: direct TLS access, no wrapper
int read_pid_slow() noexcept;
int read_tid_slow() noexcept;

// The calling process's pid, cached (getpid() is a system call) and refreshed in a forked child.
inline int cached_pid() noexcept {
  const int pid = g_pid_cache.load(std::memory_order_relaxed);
  return pid != 0 ? pid : read_pid_slow();
}
// The calling thread's OS thread id (gettid), cached per thread and refreshed after fork.
inline int cached_tid() noexcept {
  const int tid = t_tid_cache;
  return tid != 0 ? tid : read_tid_slow();
}

// Makes every fork() of this process (the library's or the program's own) take `lock` first and
// release it after, in the parent and in the child, so a forked child never inherits it held by
// a thread that does not exist there (CPython resets such locks with register_after_fork).
// For the library's process-wide locks, which live until the process ends. Locks are taken in
// registration order: code holding one of them must not take one registered earlier, nor fork.
void hold_across_fork(std::mutex& lock) noexcept;

// The CPU the calling thread runs on now (a hint: it may move at once); -1 if unknown.
int current_cpu() noexcept;

}  // namespace mp::platform
