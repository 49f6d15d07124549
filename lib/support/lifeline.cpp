// The child's lifeline to its parent: parent handles immune to PID reuse, and the watch that ends
// a daemonic child when its parent dies (however it dies).
#include "support/lifeline.hpp"

#include <atomic>
#include <exception>
#include <thread>

#include "platform/handle.hpp"
#include "platform/io.hpp"
#include "platform/process.hpp"

namespace mp::detail {
namespace {
std::atomic<void (*)()> g_parent_death_hook{nullptr};

[[noreturn]] void die_with_parent() noexcept {
  if (void (*hook)() = g_parent_death_hook.load()) hook();
  platform::kill_self();
}
}  // namespace

void set_parent_death_hook(void (*hook)()) noexcept { g_parent_death_hook.store(hook); }

platform::Handle open_parent(int parent_pid) noexcept {
  platform::Handle h = platform::kInvalidHandle;
  try {
    h = platform::open_process(parent_pid);
  } catch (const std::exception&) {
    return platform::kInvalidHandle;  // already gone
  }
  // The handle was opened by pid: if the parent died first, the pid may name another process
  // now. Our OS parent is still `parent_pid` only while the parent lives (an orphan is re-parented
  // to a reaper), and the handle, once open, cannot be re-targeted: checking after opening closes
  // the race.
  if (platform::parent_pid() != parent_pid) {
    platform::close_handle(h);
    return platform::kInvalidHandle;
  }
  return h;
}

void watch_parent_for_daemon(platform::Handle parent, int parent_pid) noexcept {
  if (parent == platform::kInvalidHandle) {
    if (platform::parent_pid() != parent_pid) platform::kill_self();
    return;
  }
  try {
    const platform::Handle h = platform::duplicate_handle(parent);
    std::thread([h] {
      try {
        platform::wait_readable(h, nullptr);
      } catch (...) {
      }
      die_with_parent();
    }).detach();
  } catch (...) {
    // No thread or descriptor left: the daemon cannot follow its parent; it still ends with the
    // parent's normal exit (terminate() from the exit function).
  }
}

}  // namespace mp::detail
