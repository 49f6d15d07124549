// Linux part of platform/wait.hpp: futexes, process liveness by pidfd or /proc, gettid,
// sched_getcpu (glibc reads it from rseq, no system call).
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

#include "platform/wait.hpp"

namespace mp::platform {

bool wait_on_address(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                     const Nanos* timeout) {
  timespec ts{};
  if (timeout) {
    const auto t = *timeout < Nanos::zero() ? Nanos::zero() : *timeout;
    ts.tv_sec = static_cast<time_t>(t.count() / 1000000000);
    ts.tv_nsec = static_cast<long>(t.count() % 1000000000);
  }
  // Not FUTEX_PRIVATE: the word is shared between processes. The timeout is relative.
  const long r = ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAIT, expected,
                           timeout ? &ts : nullptr, nullptr, 0);
  if (r == 0) return true;
  if (errno == ETIMEDOUT) return false;
  if (errno == EAGAIN || errno == EINTR) return true;
  throw_last_error("futex wait");
}

void wake_address(std::atomic<std::uint32_t>* word, int count) {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE, count, nullptr, nullptr,
            0);
}

namespace {
// /proc's view, for when no pidfd can be opened (no descriptor to spare): the thread-group
// leader's state, and how many threads the group still has. A leader whose thread ended shows
// as a zombie while other threads run; the process has ended only when it is the last one.
bool process_dead_by_proc(int pid) noexcept {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/status", pid);
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT || errno == ESRCH;
  char buf[2048];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return true;
  buf[n] = '\0';
  const char* state = std::strstr(buf, "\nState:");
  const char* threads = std::strstr(buf, "\nThreads:");
  if (!state || !threads) return false;  // unreadable: never take a lock from a live holder
  state += 7;
  while (*state == ' ' || *state == '\t') ++state;
  const long count = std::strtol(threads + 9, nullptr, 10);
  return (*state == 'Z' || *state == 'X' || *state == 'x') && count <= 1;
}
}  // namespace

bool process_dead(int pid) noexcept {
  if (pid <= 0) return false;
  // A pidfd is readable only once the whole thread group has ended, which is the definition
  // needed here: a process whose main thread exited (pthread_exit in main, a raw SYS_exit) while
  // another thread still runs is alive, and may be inside a critical section.
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) {
    if (errno == ESRCH) return true;  // reaped, or never existed
    return process_dead_by_proc(pid);
  }
  pollfd p{fd, POLLIN, 0};
  const int r = ::poll(&p, 1, 0);
  ::close(fd);
  if (r < 0) return process_dead_by_proc(pid);
  return r > 0;
}

int current_tid() noexcept { return static_cast<int>(::syscall(SYS_gettid)); }

int current_cpu() noexcept { return ::sched_getcpu(); }

}  // namespace mp::platform
