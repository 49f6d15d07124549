// Linux part of lib/platform/shm.hpp: segments are files of /dev/shm (where glibc's shm_open
// keeps them). A new one is an O_TMPFILE there, sized, then linked under its name: nobody ever
// sees a segment of size 0 or a name whose creator died half-way.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "platform/shm.hpp"

#ifndef SYS_close_range
#define SYS_close_range 436
#endif

namespace mp::platform::shm {
namespace {
constexpr char kDir[] = "/dev/shm";
constexpr char kDirSlash[] = "/dev/shm/";
}  // namespace

Handle create_unnamed(std::size_t size) {
  const int fd = ::open(kDir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) throw_last_error(std::string("cannot create shared memory in ") + kDir);
  // Mode 0600 less the umask, as shm_open: never more than the owner.
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    const int e = errno;
    ::close(fd);
    throw_error(e, "cannot size shared memory of " + std::to_string(size) + " bytes");
  }
  return fd;
}

void publish(Handle h, const std::string& name) {
  check_name(name);
  const std::string target = kDirSlash + name;
  char source[64];
  std::snprintf(source, sizeof source, "/proc/self/fd/%d", h);
  if (::linkat(AT_FDCWD, source, AT_FDCWD, target.c_str(), AT_SYMLINK_FOLLOW) == 0) return;
  int e = errno;
  if (e == ENOENT && ::linkat(h, "", AT_FDCWD, target.c_str(), AT_EMPTY_PATH) == 0) return;  // no /proc
  if (e == ENOENT) e = errno;
  throw_error(e, "cannot create shared memory '" + name + "'");
}

void start_watcher(Handle lifeline, void (*cleanup)(void*), void* context) {
  const pid_t middle = ::fork();
  if (middle < 0) throw_last_error("cannot start the shared memory tracker (fork)");
  if (middle == 0) {
    // Only system calls from here on: the parent may have had other threads.
    if (::fork() != 0) ::_exit(0);  // the watcher is orphaned at once: nobody's child to reap
    ::setsid();
    struct sigaction ign {};
    ign.sa_handler = SIG_IGN;
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGUSR1, SIGUSR2}) ::sigaction(sig, &ign, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (lifeline != 3 && ::dup2(lifeline, 3) < 0) ::_exit(1);
    if (::syscall(SYS_close_range, 4u, ~0u, 0u) != 0) {
      rlimit rl{};
      const rlim_t top = ::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? rl.rlim_cur : 65536;
      for (rlim_t fd = 4; fd < top; ++fd) ::close(static_cast<int>(fd));
    }
    const int null = ::open("/dev/null", O_RDWR);
    for (int fd = 0; fd < 3; ++fd)
      if (null != fd) ::dup2(null, fd);
    if (null > 2) ::close(null);
    char byte;
    for (;;) {
      const ssize_t n = ::read(3, &byte, 1);
      if (n == 0 || (n < 0 && errno != EINTR)) break;
    }
    cleanup(context);
    ::_exit(0);
  }
  int status = 0;
  while (::waitpid(middle, &status, 0) < 0 && errno == EINTR) {
  }
}

void unlink_if_same(const char* name, std::size_t size, FileId id) noexcept {
  char path[sizeof kDirSlash + kMaxName];
  if (size == 0 || size > kMaxName) return;
  std::memcpy(path, kDirSlash, sizeof kDirSlash - 1);
  std::memcpy(path + sizeof kDirSlash - 1, name, size);
  path[sizeof kDirSlash - 1 + size] = '\0';
  if (std::memchr(name, '/', size) || std::memchr(name, '\0', size)) return;
  struct stat st {};
  if (::fstatat(AT_FDCWD, path, &st, AT_SYMLINK_NOFOLLOW) != 0) return;
  if (static_cast<std::uint64_t>(st.st_dev) != id.dev || static_cast<std::uint64_t>(st.st_ino) != id.ino) return;
  ::unlinkat(AT_FDCWD, path, 0);
}

}  // namespace mp::platform::shm
