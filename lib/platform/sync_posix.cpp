// POSIX part of lib/platform/sync.hpp: pid/tid caches kept right across fork() by pthread_atfork.
#include <pthread.h>
#include <unistd.h>

#include <atomic>

#include "platform/os.hpp"
#include "platform/sync.hpp"

namespace mp::platform {
namespace {

std::atomic<int> g_pid{0};
// Bumped in every forked child so that per-thread caches made before the fork are recomputed.
std::atomic<unsigned> g_fork_generation{1};

void after_fork_in_child() noexcept {
  g_pid.store(static_cast<int>(::getpid()), std::memory_order_relaxed);
  g_fork_generation.fetch_add(1, std::memory_order_relaxed);
}

int register_and_read_pid() noexcept {
  static const bool registered = [] {
    ::pthread_atfork(nullptr, nullptr, after_fork_in_child);
    return true;
  }();
  (void)registered;
  const int pid = static_cast<int>(::getpid());
  g_pid.store(pid, std::memory_order_relaxed);
  return pid;
}

}  // namespace

int cached_pid() noexcept {
  const int pid = g_pid.load(std::memory_order_relaxed);
  return pid != 0 ? pid : register_and_read_pid();
}

int cached_tid() noexcept {
  thread_local unsigned generation = 0;
  thread_local int tid = 0;
  const unsigned now = g_fork_generation.load(std::memory_order_relaxed);
  if (generation != now || tid == 0) {
    (void)cached_pid();  // makes sure the fork handler is registered
    tid = current_tid();
    generation = g_fork_generation.load(std::memory_order_relaxed);
  }
  return tid;
}

}  // namespace mp::platform
