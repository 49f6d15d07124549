// The cross-process wait object, and the process and thread identities locks record.
// Contract (docs/DESIGN.md, "The cross-process wait object"): a 32-bit word that lives either in a
// view from map_shared() (then every process mapping the segment may wait on and wake it) or in
// process-private memory (then only this process's threads may). wait_on_address blocks while the
// word equals `expected`, until a wake_address on the same word, the timeout, or a spurious
// wake-up; callers re-check their condition in a loop. A wake that finds no waiter costs no
// system call on Linux (futex) and one atomic read on Windows.
// wait_linux.cpp: futex. wait_win32.cpp: a named semaphore per (segment, bucket) with waiter
// counts in the segment's header (WaitOnAddress is per process); private words: WaitOnAddress.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>

#include "platform/handle.hpp"

namespace mp::platform {

// Returns false on timeout; spurious wake-ups return true. `timeout` null = forever.
bool wait_on_address(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                     const Nanos* timeout);
void wake_address(std::atomic<std::uint32_t>* word, int count);  // count = INT_MAX: all

// Whether the process `pid` has ended: every thread of it (an unreaped zombie counts as ended; a
// process whose main thread exited while other threads run does not). How a lock finds that its
// holder died.
bool process_dead(int pid) noexcept;
int current_pid() noexcept;
int current_tid() noexcept;

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
// No-op where there is no fork (Windows).
void hold_across_fork(std::mutex& lock) noexcept;

void yield_cpu() noexcept;  // a pause instruction for spin loops
// Whether this process may run on more than one CPU (its affinity, read once): spinning for a
// peer is pointless when the peer needs this very CPU.
bool several_cpus() noexcept;
// The CPU the calling thread runs on now (a hint: it may move at once); -1 if unknown.
int current_cpu() noexcept;
void sleep_for(Nanos d) noexcept;

}  // namespace mp::platform
