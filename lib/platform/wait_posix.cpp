// POSIX part of platform/wait.hpp: the library's fork handlers. They keep the pid/tid caches
// right in a forked child and hold the library's process-wide locks across fork(), so a child
// never inherits one that another thread held in the middle of an update.
// Also: pid, CPU pause, sleeping, CPU affinity.
#include <cxxabi.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <thread>

#include "platform/wait.hpp"

namespace mp::platform {

std::atomic<int> g_pid_cache{0};
// In a forked child only the forking thread exists, and the fork handler (which runs in it)
// clears its stale value.
thread_local constinit int t_tid_cache = 0;

namespace {

constexpr int kMaxForkLocks = 16;
// Appended to, never removed from (the locks belong to objects that live until the process ends).
constinit std::atomic<std::mutex*> g_fork_locks[kMaxForkLocks] = {};
constinit std::atomic<int> g_fork_lock_count{0};
constinit std::atomic<bool> g_handlers_installed{false};

int fork_lock_count() noexcept {
  return std::min(g_fork_lock_count.load(std::memory_order_acquire), kMaxForkLocks);
}

// A lock registered but not yet stored (the registering thread was between its two steps) is
// skipped: it cannot be held yet, since registration happens before the object is published.
void before_fork() noexcept {
  for (int i = 0, n = fork_lock_count(); i < n; ++i)
    if (std::mutex* m = g_fork_locks[i].load(std::memory_order_acquire)) m->lock();
}

void unlock_fork_locks() noexcept {
  for (int i = fork_lock_count() - 1; i >= 0; --i)
    if (std::mutex* m = g_fork_locks[i].load(std::memory_order_acquire)) m->unlock();
}

void after_fork_in_parent() noexcept { unlock_fork_locks(); }

void after_fork_in_child() noexcept {
  g_pid_cache.store(static_cast<int>(::getpid()), std::memory_order_relaxed);
  t_tid_cache = 0;
  unlock_fork_locks();
}

void install_fork_handlers() noexcept {
  if (!g_handlers_installed.exchange(true, std::memory_order_acq_rel))
    ::pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child);
}

// While the library loads (before main, on one thread): no thread can be installing the handlers
// when a fork happens. A lazily initialized function-local static would leave a forked child a
// guard marked "in progress" forever if another thread was inside it at the fork.
[[maybe_unused]] const bool g_installed_at_load = (install_fork_handlers(), true);

}  // namespace

int read_pid_slow() noexcept {
  install_fork_handlers();  // already done at load time, unless called by a static initializer
  const int pid = static_cast<int>(::getpid());
  g_pid_cache.store(pid, std::memory_order_relaxed);
  return pid;
}

int read_tid_slow() noexcept {
  (void)read_pid_slow();  // the fork handlers are in place before any tid is cached
  t_tid_cache = current_tid();
  return t_tid_cache;
}

void hold_across_fork(std::mutex& lock) noexcept {
  install_fork_handlers();
  const int i = g_fork_lock_count.fetch_add(1, std::memory_order_acq_rel);
  if (i >= kMaxForkLocks) std::abort();  // a library bug: raise kMaxForkLocks
  g_fork_locks[i].store(&lock, std::memory_order_release);
}

int current_pid() noexcept { return static_cast<int>(::getpid()); }

void yield_cpu() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

void sleep_for(Nanos d) noexcept { std::this_thread::sleep_for(d); }

bool several_cpus() noexcept {
#ifdef __linux__
  // Read once, cached without an initialization guard (0 = not read yet), so it is fork-safe.
  static constinit std::atomic<int> cache{0};
  int v = cache.load(std::memory_order_relaxed);
  if (v == 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    v = ::sched_getaffinity(0, sizeof set, &set) != 0 || CPU_COUNT(&set) > 1 ? 2 : 1;
    cache.store(v, std::memory_order_relaxed);
  }
  return v == 2;
#else
  return true;
#endif
}

}  // namespace mp::platform
