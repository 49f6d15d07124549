// POSIX part of the internal OS API (lib/platform/os.hpp): descriptors, pipes, stdio, fork.
#include <cxxabi.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <thread>

#include "mp/errors.hpp"
#include "platform/os.hpp"

namespace mp::platform {

void throw_error(int errnum, const std::string& what) {
  throw OSError(errnum, what);
}

void throw_last_error(const std::string& what) { throw_error(errno, what); }

void close_handle(Handle h) noexcept {
  if (h >= 0) ::close(h);  // not retried on EINTR: Linux has closed the descriptor already
}

Handle duplicate_handle(Handle h) {
  const int fd = ::fcntl(h, F_DUPFD_CLOEXEC, 3);
  if (fd < 0) throw_last_error("cannot duplicate a descriptor");
  return fd;
}

void set_inheritable(Handle h, bool inheritable) {
  const int flags = ::fcntl(h, F_GETFD);
  if (flags < 0) throw_last_error("fcntl(F_GETFD)");
  const int wanted = inheritable ? (flags & ~FD_CLOEXEC) : (flags | FD_CLOEXEC);
  if (::fcntl(h, F_SETFD, wanted) < 0) throw_last_error("fcntl(F_SETFD)");
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

namespace {
// poll() until something is ready (returns the count) or the timeout passed (returns 0);
// EINTR is retried with the time left.
int poll_until(pollfd* fds, std::size_t n, const Nanos* timeout) {
  const auto deadline = timeout ? Clock::now() + *timeout : Clock::time_point::max();
  for (;;) {
    int ms = -1;
    if (timeout) {
      const auto left = deadline - Clock::now();
      ms = left <= Nanos::zero()
               ? 0
               : static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(left).count());
    }
    const int r = ::poll(fds, n, ms);
    if (r > 0) return r;
    if (r == 0) {
      if (!timeout || Clock::now() >= deadline) return 0;
      continue;
    }
    if (errno != EINTR) throw_last_error("poll");
  }
}
}  // namespace

bool wait_readable(Handle h, const Nanos* timeout) {
  pollfd p{h, POLLIN, 0};
  return poll_until(&p, 1, timeout) > 0;
}

std::vector<std::size_t> wait_any(const std::vector<Handle>& handles, const Nanos* timeout) {
  std::vector<pollfd> fds(handles.size());
  for (std::size_t i = 0; i < handles.size(); ++i) fds[i] = pollfd{handles[i], POLLIN, 0};
  std::vector<std::size_t> ready;
  if (poll_until(fds.data(), fds.size(), timeout) > 0)
    for (std::size_t i = 0; i < fds.size(); ++i)
      if (fds[i].revents != 0) ready.push_back(i);
  return ready;
}

void flush_stdio() noexcept {
  try {
    std::cout.flush();
    std::cerr.flush();
    std::clog.flush();
  } catch (...) {
  }
  std::fflush(nullptr);
}

int fork_process() {
  flush_stdio();
  const pid_t pid = ::fork();
  if (pid < 0) throw_last_error("fork");
  return static_cast<int>(pid);
}

void at_fork_in_child(void (*fn)()) { ::pthread_atfork(nullptr, nullptr, fn); }

void exit_now(int code) noexcept { ::_exit(code & 0xff); }

void kill_and_reap(int pid) noexcept {
  ::kill(pid, SIGKILL);
  while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
}

std::pair<Handle, Handle> make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_last_error("pipe");
  return {fds[0], fds[1]};
}

namespace {
// Blocks SIGPIPE on the calling thread for its lifetime; a SIGPIPE raised meanwhile by a write to
// a closed pipe is consumed (unless one was already pending), so EPIPE is reported as an error
// instead of killing the process, whatever the program's SIGPIPE disposition.
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigemptyset(&pending);
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~SigpipeGuard() {
    if (raised_ && !was_pending_) {
      const timespec zero{0, 0};
      while (sigtimedwait(&pipe_, nullptr, &zero) < 0 && errno == EINTR) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  void raised() noexcept { raised_ = true; }

 private:
  sigset_t pipe_, old_;
  bool was_pending_ = false;
  bool raised_ = false;
};
}  // namespace

void write_all(Handle h, const void* data, std::size_t size) {
  const char* p = static_cast<const char*>(data);
  SigpipeGuard guard;
  while (size > 0) {
    const ssize_t n = ::write(h, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      if (e == EPIPE) guard.raised();
      throw_error(e, "write");
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

std::size_t read_some(Handle h, void* data, std::size_t size) {
  for (;;) {
    const ssize_t n = ::read(h, data, size);
    if (n >= 0) return static_cast<std::size_t>(n);
    if (errno != EINTR) throw_last_error("read");
  }
}

std::string read_to_end(Handle h) {
  std::string out;
  char buf[4096];
  for (;;) {
    const std::size_t n = read_some(h, buf, sizeof buf);
    if (n == 0) return out;
    out.append(buf, n);
  }
}

std::optional<std::string> get_env(const char* name) {
  const char* v = std::getenv(name);
  if (!v) return std::nullopt;
  return std::string(v);
}

void unset_env(const char* name) { ::unsetenv(name); }

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

unsigned cpu_count() noexcept {
  const long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<unsigned>(n) : 1u;
}

std::string demangle(const char* mangled) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> p(abi::__cxa_demangle(mangled, nullptr, nullptr, &status),
                                           std::free);
  return status == 0 && p ? std::string(p.get()) : std::string(mangled);
}

}  // namespace mp::platform
