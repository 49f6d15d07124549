// Portable POSIX implementation of platform/posix.hpp (MP_PLATFORM_POSIX_FALLBACKS; what macOS and
// the BSDs need): descriptors are created, then made close-on-exec with fcntl. Between the two
// calls a concurrent fork+exec in another thread can inherit the descriptor (CPython on macOS has
// the same window); posix_linux.cpp has none. Sends avoid SIGPIPE with MSG_NOSIGNAL (POSIX.1-2008;
// Linux, FreeBSD) or, where it is missing (macOS), SO_NOSIGPIPE set on every socket at creation.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "platform/posix.hpp"

namespace mp::platform::posix {

namespace {

// Marks `fd` close-on-exec; on failure closes it and returns -1 with errno set.
int cloexec_or_close(int fd) noexcept {
  if (fd < 0) return fd;
  const int flags = ::fcntl(fd, F_GETFD);
  if (flags < 0 || ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) {
    const int e = errno;
    ::close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

// A socket that must not raise SIGPIPE where MSG_NOSIGNAL does not exist.
int no_sigpipe_or_close(int fd) noexcept {
#if !defined(MSG_NOSIGNAL) && defined(SO_NOSIGPIPE)
  if (fd < 0) return fd;
  const int one = 1;
  if (::setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one) < 0) {
    const int e = errno;
    ::close(fd);
    errno = e;
    return -1;
  }
#endif
  return fd;
}

#ifdef MSG_NOSIGNAL
constexpr int kNoSignal = MSG_NOSIGNAL;
#else
constexpr int kNoSignal = 0;  // SO_NOSIGPIPE is set on the socket instead
#endif

}  // namespace

int socket_cloexec(int family, int type, int protocol) noexcept {
  return no_sigpipe_or_close(cloexec_or_close(::socket(family, type, protocol)));
}

int socketpair_cloexec(int type, int fds[2]) noexcept {
  int pair[2];
  if (::socketpair(AF_UNIX, type, 0, pair) < 0) return -1;
  pair[0] = no_sigpipe_or_close(cloexec_or_close(pair[0]));
  if (pair[0] < 0) {
    const int e = errno;
    ::close(pair[1]);
    errno = e;
    return -1;
  }
  pair[1] = no_sigpipe_or_close(cloexec_or_close(pair[1]));
  if (pair[1] < 0) {
    const int e = errno;
    ::close(pair[0]);
    errno = e;
    return -1;
  }
  fds[0] = pair[0];
  fds[1] = pair[1];
  return 0;
}

int pipe_cloexec(int fds[2]) noexcept {
  int pair[2];
  if (::pipe(pair) < 0) return -1;
  if (cloexec_or_close(pair[0]) < 0) {
    const int e = errno;
    ::close(pair[1]);
    errno = e;
    return -1;
  }
  if (cloexec_or_close(pair[1]) < 0) {
    const int e = errno;
    ::close(pair[0]);
    errno = e;
    return -1;
  }
  fds[0] = pair[0];
  fds[1] = pair[1];
  return 0;
}

int accept_cloexec(int listener) noexcept {
  // accept4 also keeps the accepted socket blocking whatever the listener's O_NONBLOCK; BSD's
  // accept() copies the listener's O_NONBLOCK (Linux's does not): clear it, as io.hpp promises
  // blocking accepted sockets.
  const int fd = no_sigpipe_or_close(cloexec_or_close(::accept(listener, nullptr, nullptr)));
  if (fd < 0) return fd;
  const int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0 || ((fl & O_NONBLOCK) && ::fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)) {
    const int e = errno;
    ::close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

int dup_to_cloexec(int fd, int target) noexcept {
  if (fd == target) {  // dup3 refuses this (EINVAL); dup2 would do nothing
    errno = EINVAL;
    return -1;
  }
  int r;
  do r = ::dup2(fd, target);
  while (r < 0 && errno == EINTR);
  if (r < 0) return -1;
  // Not cloexec_or_close: on failure the target stays open, as after a failed dup3.
  const int flags = ::fcntl(r, F_GETFD);
  if (flags < 0 || ::fcntl(r, F_SETFD, flags | FD_CLOEXEC) < 0) return -1;
  return r;
}

ssize_t recvmsg_cloexec(int socket, msghdr* msg, int flags) noexcept {
  const ssize_t n = ::recvmsg(socket, msg, flags);
  if (n < 0 || msg->msg_controllen == 0) return n;
  // Every descriptor received gets FD_CLOEXEC, whatever the caller then does with the message
  // (a peeked message's descriptors are new descriptors too). A truncated control buffer still
  // holds complete descriptors (CMSG_NXTHDR stops at its end).
  for (cmsghdr* c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      const int fl = ::fcntl(fd, F_GETFD);
      if (fl >= 0) ::fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
    }
  }
  return n;
}

ssize_t send_nosignal(int socket, const void* data, std::size_t size, int flags) noexcept {
  return ::send(socket, data, size, flags | kNoSignal);
}

ssize_t sendmsg_nosignal(int socket, const msghdr* msg, int flags) noexcept {
  return ::sendmsg(socket, msg, flags | kNoSignal);
}

bool peer_hung_up(int socket) noexcept {
  // No POLLRDHUP: a peer that closed its end shows as POLLHUP (both directions shut: Linux, macOS
  // and the BSDs for Unix-domain sockets) or as a readable socket whose peek returns 0. Unlike
  // POLLRDHUP, the peek cannot see an end of file behind unread bytes: the Pipe channel reads its
  // wake tokens and asks again, and POLLHUP (a closed peer) needs no peek.
  pollfd p{socket, POLLIN, 0};
  int r;
  do r = ::poll(&p, 1, 0);
  while (r < 0 && errno == EINTR);
  if (r <= 0) return false;
  if (p.revents & (POLLHUP | POLLERR)) return true;
  if (!(p.revents & POLLIN)) return false;
  char byte;
  ssize_t n;
  do n = ::recv(socket, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  return n == 0 || (n < 0 && errno == ECONNRESET);
}

bool close_range_from(int) noexcept { return false; }

}  // namespace mp::platform::posix
