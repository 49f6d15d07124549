// POSIX part of lib/platform/sync.hpp: pid/tid caches kept right across fork() by pthread_atfork.
#include <pthread.h>
#include <unistd.h>

#include "platform/os.hpp"
#include "platform/sync.hpp"

namespace mp::platform {

std::atomic<int> g_pid_cache{0};
// In a forked child only the forking thread exists, and the fork handler (which runs in it)
// clears its stale value.
thread_local constinit int t_tid_cache = 0;

namespace {
void after_fork_in_child() noexcept {
  g_pid_cache.store(static_cast<int>(::getpid()), std::memory_order_relaxed);
  t_tid_cache = 0;
}
}  // namespace

int read_pid_slow() noexcept {
  static const bool registered = [] {
    ::pthread_atfork(nullptr, nullptr, after_fork_in_child);
    return true;
  }();
  (void)registered;
  const int pid = static_cast<int>(::getpid());
  g_pid_cache.store(pid, std::memory_order_relaxed);
  return pid;
}

int read_tid_slow() noexcept {
  (void)read_pid_slow();  // registers the fork handler before any tid is cached
  t_tid_cache = current_tid();
  return t_tid_cache;
}

}  // namespace mp::platform
