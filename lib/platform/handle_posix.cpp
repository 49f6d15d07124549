// POSIX part of platform/handle.hpp: errors and descriptors.
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
#include "platform/handle.hpp"

namespace mp::platform {

void throw_error(int errnum, const std::string& what) { throw OSError(errnum, what); }

void throw_errno(int posix_errno, const std::string& what) { throw OSError(posix_errno, what); }

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

}  // namespace mp::platform
