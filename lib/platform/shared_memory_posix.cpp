// POSIX part of platform/shared_memory.hpp: named segments (shm_open, shm_unlink, fstat) and the
// tracker's watcher.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "mp/errors.hpp"
#include "platform/posix.hpp"
#include "platform/shared_memory.hpp"

namespace mp::platform {

namespace {
std::string path_of(const std::string& name) { return "/" + name; }
}  // namespace

void check_shm_name(const std::string& name) {
  if (name.size() > kMaxShmName)
    throw_error(ENAMETOOLONG, "shared memory name too long: " + name.substr(0, 32) + "...");
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
      name.find('\0') != std::string::npos)
    throw_error(EINVAL, "invalid shared memory name '" + name + "'");
}

Handle open_shm(const std::string& name) {
  check_shm_name(name);
  const int fd = ::shm_open(path_of(name).c_str(), O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) throw_last_error("cannot open shared memory '" + name + "'");
  return fd;
}

void unlink_shm(const std::string& name) {
  check_shm_name(name);
  if (::shm_unlink(path_of(name).c_str()) != 0)
    throw_last_error("cannot unlink shared memory '" + name + "'");
}

ShmFileId shm_file_id(Handle h) {
  struct stat st {};
  if (::fstat(h, &st) != 0) throw_last_error("fstat");
  return {static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)};
}

void start_shm_watcher(Handle lifeline, void (*cleanup)(void*), void* context) {
  const pid_t middle = ::fork();
  if (middle < 0) throw_last_error("cannot start the shared memory tracker (fork)");
  if (middle == 0) {
    // Only system calls from here on: the parent may have had other threads.
    if (::fork() != 0) ::_exit(0);  // the watcher is orphaned at once: nobody's child to reap
    ::setsid();
    struct sigaction ign {};
    ign.sa_handler = SIG_IGN;
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGUSR1, SIGUSR2})
      ::sigaction(sig, &ign, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (lifeline != 3 && ::dup2(lifeline, 3) < 0) ::_exit(1);
    if (!posix::close_range_from(4)) {
      rlimit rl{};
      const rlim_t top = ::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                             ? rl.rlim_cur
                             : 65536;
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

}  // namespace mp::platform
