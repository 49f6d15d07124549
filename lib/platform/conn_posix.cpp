// POSIX implementation of lib/platform/conn.hpp: sockets, pipes and descriptor passing.
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstring>

#include "mp/errors.hpp"
#include "platform/conn.hpp"
#include "platform/os.hpp"

namespace mp::platform::conn {
namespace {

sockaddr_un unix_address(const std::string& path, socklen_t& len) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path)
    throw std::invalid_argument("invalid Unix socket address: '" + path + "'");
  std::memcpy(addr.sun_path, path.data(), path.size());
  len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + (path[0] == '\0' ? 0 : 1));
  return addr;
}

// A path for messages: an abstract name is shown with '@' for its leading NUL (as ss(8) does).
std::string display_path(const std::string& path) {
  return !path.empty() && path[0] == '\0' ? "@" + path.substr(1) : path;
}

Handle new_socket(int family, int type) {
  const int fd = ::socket(family, type | SOCK_CLOEXEC, 0);
  if (fd < 0) throw_last_error("cannot create a socket");
  return fd;
}

// getaddrinfo for a TCP endpoint; calls fn(addrinfo*) on each until it returns a valid fd.
template <class F>
Handle with_tcp_address(const std::string& host, std::uint16_t port, bool passive, F fn) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  const int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0) throw OSError(EINVAL, "cannot resolve '" + host + "': " + ::gai_strerror(rc));
  int last_errno = 0;
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last_errno = errno;
      continue;
    }
    if (fn(fd, ai)) {
      ::freeaddrinfo(res);
      return fd;
    }
    last_errno = errno;
    ::close(fd);
  }
  ::freeaddrinfo(res);
  throw_error(last_errno, "cannot " + std::string(passive ? "listen on " : "connect to ") + host + ":" + service);
}

}  // namespace

std::pair<Handle, Handle> socket_pair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0) throw_last_error("socketpair");
  return {fds[0], fds[1]};
}

void ignore_sigpipe() noexcept {
  // As CPython does at start-up: a broken pipe is an error, not a signal. A handler the program
  // installed itself is kept.
  struct sigaction old{};
  if (::sigaction(SIGPIPE, nullptr, &old) == 0 && old.sa_handler == SIG_DFL) ::signal(SIGPIPE, SIG_IGN);
}

std::pair<Handle, Handle> pipe_pair() {
  ignore_sigpipe();
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) < 0) throw_last_error("pipe");
  return {fds[0], fds[1]};
}

std::pair<Handle, Handle> datagram_pair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, fds) < 0) throw_last_error("socketpair");
  return {fds[0], fds[1]};
}

void write_all(Handle h, const void* data, std::size_t size) {
  const char* p = static_cast<const char*>(data);
  bool is_socket = true;
  while (size > 0) {
    // send() with MSG_NOSIGNAL on sockets; a pipe falls back to write(), made safe by
    // ignore_sigpipe() (called when a pipe is created).
    ssize_t n = is_socket ? ::send(h, p, size, MSG_NOSIGNAL) : ::write(h, p, size);
    if (n < 0 && is_socket && errno == ENOTSOCK) {
      is_socket = false;
      continue;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_last_error("cannot write to the connection");
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

std::size_t read_some(Handle h, void* data, std::size_t size) {
  for (;;) {
    const ssize_t n = ::read(h, data, size);
    if (n >= 0) return static_cast<std::size_t>(n);
    if (errno == EINTR) continue;
    if (errno == ECONNRESET) return 0;  // the peer is gone: end of file
    throw_last_error("cannot read from the connection");
  }
}

TryRead try_read(Handle h, void* data, std::size_t size, std::size_t& got) {
  for (;;) {
    const ssize_t n = ::recv(h, data, size, MSG_DONTWAIT);
    if (n >= 0) {
      got = static_cast<std::size_t>(n);
      return TryRead::ok;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return TryRead::would_block;
    if (errno == ENOTSOCK) return TryRead::unsupported;
    if (errno == ECONNRESET) {  // the peer is gone: end of file
      got = 0;
      return TryRead::ok;
    }
    throw_last_error("cannot read from the connection");
  }
}

bool poll_readable(Handle h, const Nanos* timeout) { return wait_readable(h, timeout); }

Handle listen_unix(const std::string& path, int backlog) {
  socklen_t len = 0;
  const sockaddr_un addr = unix_address(path, len);
  const Handle fd = new_socket(AF_UNIX, SOCK_STREAM);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), len) < 0 || ::listen(fd, backlog) < 0) {
    const int e = errno;
    ::close(fd);
    throw_error(e, "cannot listen on '" + display_path(path) + "'");
  }
  return fd;
}

Handle connect_unix(const std::string& path) {
  socklen_t len = 0;
  const sockaddr_un addr = unix_address(path, len);
  const Handle fd = new_socket(AF_UNIX, SOCK_STREAM);
  int rc;
  do rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), len);
  while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    const int e = errno;
    ::close(fd);
    throw_error(e, "cannot connect to '" + display_path(path) + "'");
  }
  return fd;
}

Handle listen_tcp(const std::string& host, std::uint16_t port, int backlog) {
  return with_tcp_address(host, port, true, [&](int fd, addrinfo* ai) {
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    return ::bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd, backlog) == 0;
  });
}

Handle connect_tcp(const std::string& host, std::uint16_t port) {
  return with_tcp_address(host, port, false, [&](int fd, addrinfo* ai) {
    int rc;
    do rc = ::connect(fd, ai->ai_addr, ai->ai_addrlen);
    while (rc < 0 && errno == EINTR);
    if (rc != 0) return false;
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return true;
  });
}

std::uint16_t local_port(Handle listener) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(listener, reinterpret_cast<sockaddr*>(&ss), &len) < 0) throw_last_error("getsockname");
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

namespace {
// One accept4(); TCP connections get TCP_NODELAY. -1 with errno on failure.
int accept_once(Handle listener) {
  const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd >= 0) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0 && ss.ss_family != AF_UNIX) {
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
  }
  return fd;
}
}  // namespace

std::optional<Handle> try_accept(Handle listener, int& error) noexcept {
  error = 0;
  const int fd = accept_once(listener);
  if (fd >= 0) return fd;
  if (errno != EINTR && errno != ECONNABORTED && errno != EAGAIN && errno != EWOULDBLOCK && errno != EPROTO)
    error = errno;
  return std::nullopt;
}

std::optional<Handle> try_accept(Handle listener) {
  int error = 0;
  const std::optional<Handle> fd = try_accept(listener, error);
  if (error) throw_error(error, "accept failed");
  return fd;
}

void set_nonblocking(Handle listener) {
  const int flags = ::fcntl(listener, F_GETFL);
  if (flags < 0 || ::fcntl(listener, F_SETFL, flags | O_NONBLOCK) < 0) throw_last_error("fcntl");
}

namespace {
// Waits for `events` on `h` until `deadline`; throws OSError ETIMEDOUT when it passes first.
void wait_until(Handle h, short events, Clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) throw OSError(ETIMEDOUT, "timed out");
    pollfd p{h, events, 0};
    const int r = ::poll(&p, 1, static_cast<int>(std::min<std::int64_t>(left.count(), INT32_MAX)));
    if (r > 0) return;
    if (r < 0 && errno != EINTR) throw_last_error("poll");
  }
}
}  // namespace

std::size_t read_some_until(Handle h, void* data, std::size_t size, Clock::time_point deadline) {
  for (;;) {
    std::size_t got = 0;
    const TryRead r = try_read(h, data, size, got);
    if (r == TryRead::ok) return got;
    wait_until(h, POLLIN, deadline);
    if (r == TryRead::unsupported) return read_some(h, data, size);  // a pipe: readable now
  }
}

void write_all_until(Handle h, const void* data, std::size_t size, Clock::time_point deadline) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const std::size_t n = try_write(h, p, size);
    p += n;
    size -= n;
    if (size > 0) wait_until(h, POLLOUT, deadline);
  }
}

std::size_t try_write(Handle h, const void* data, std::size_t size) {
  for (;;) {
    const ssize_t n = ::send(h, data, size, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) return static_cast<std::size_t>(n);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    throw_last_error("cannot write to the connection");
  }
}

void unlink_path(const std::string& path) noexcept {
  if (!path.empty() && path[0] != '\0') ::unlink(path.c_str());
}

bool wait_writable(Handle h, const Nanos* timeout) {
  pollfd p{h, POLLOUT, 0};
  int ms = -1;
  if (timeout) ms = static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(std::max(*timeout, Nanos::zero())).count());
  const int r = ::poll(&p, 1, ms);
  if (r < 0 && errno != EINTR) throw_last_error("poll");
  return r > 0;
}

bool send_descriptor(Handle socket, std::uint64_t tag, Handle fd) {
  iovec iov{&tag, sizeof tag};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  for (;;) {
    if (::sendmsg(socket, &msg, MSG_NOSIGNAL | MSG_DONTWAIT) >= 0) return true;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
    if (errno != EINTR) throw_last_error("cannot pass a descriptor");
  }
}

bool receive_descriptor(Handle socket, std::uint64_t& tag, Handle& fd, bool peek) {
  iovec iov{&tag, sizeof tag};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do n = ::recvmsg(socket, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC | (peek ? MSG_PEEK : 0));
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
    throw_last_error("cannot receive a descriptor");
  }
  fd = kInvalidHandle;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
  if (n != static_cast<ssize_t>(sizeof tag) || fd == kInvalidHandle || (msg.msg_flags & MSG_CTRUNC)) {
    close_handle(fd);
    throw ProcessError("mp: corrupt out-of-band message in a queue");
  }
  return true;
}

bool peer_closed(Handle socket) {
  pollfd p{socket, POLLRDHUP, 0};
  int r;
  do r = ::poll(&p, 1, 0);
  while (r < 0 && errno == EINTR);
  if (r < 0) throw_last_error("poll");
  return r > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

bool write_token(Handle socket) {
  const char token = 't';
  for (;;) {
    if (::send(socket, &token, 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1) return true;
    if (errno == EINTR) continue;
    if (errno == EPIPE || errno == ECONNRESET || errno == EAGAIN || errno == EWOULDBLOCK) return false;
    throw_last_error("cannot write to the connection");
  }
}

int read_token(Handle socket) {
  char token;
  for (;;) {
    const ssize_t n = ::recv(socket, &token, 1, MSG_DONTWAIT);
    if (n >= 0) return static_cast<int>(n);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return -1;
    if (errno == ECONNRESET) return 0;
    throw_last_error("cannot read from the connection");
  }
}

}  // namespace mp::platform::conn
