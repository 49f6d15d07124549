// POSIX part of platform/io.hpp: pipes, sockets, readiness.
#include <cxxabi.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <thread>
#include <vector>

#include "mp/errors.hpp"
#include "platform/io.hpp"
#include "platform/posix.hpp"

namespace mp::platform {

namespace {

sockaddr_un unix_address(const std::string& path, socklen_t& len) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path)
    throw std::invalid_argument("invalid Unix socket address: '" + path + "'");
  std::memcpy(addr.sun_path, path.data(), path.size());
  len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() +
                               (path[0] == '\0' ? 0 : 1));
  return addr;
}

// A path for messages: an abstract name is shown with '@' for its leading NUL (as ss(8) does).
std::string display_path(const std::string& path) {
  return !path.empty() && path[0] == '\0' ? "@" + path.substr(1) : path;
}

Handle new_socket(int family, int type) {
  const int fd = posix::socket_cloexec(family, type, 0);
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
  const int rc =
      ::getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0) throw OSError(EINVAL, "cannot resolve '" + host + "': " + ::gai_strerror(rc));
  int last_errno = 0;
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    const int fd = posix::socket_cloexec(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
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
  throw_error(last_errno, "cannot " + std::string(passive ? "listen on " : "connect to ") + host +
                              ":" + service);
}

}  // namespace

std::pair<Handle, Handle> socket_pair() {
  int fds[2];
  if (posix::socketpair_cloexec(SOCK_STREAM, fds) < 0) throw_last_error("socketpair");
  return {fds[0], fds[1]};
}

namespace {
// Set once ignore_sigpipe() has found or made SIGPIPE ignored: writes to pipes then skip the
// signal-mask dance of SigpipeGuard (a program that later installs a handler itself gets EPIPE
// from sockets still; from pipes it gets its handler, as with any write of its own).
std::atomic<bool> g_sigpipe_ignored{false};
}  // namespace

void ignore_sigpipe() noexcept {
  // As CPython does at start-up: a broken pipe is an error, not a signal. A handler the program
  // installed itself is kept.
  struct sigaction old {};
  if (::sigaction(SIGPIPE, nullptr, &old) != 0) return;
  if (old.sa_handler == SIG_DFL) {
    ::signal(SIGPIPE, SIG_IGN);
    g_sigpipe_ignored.store(true, std::memory_order_relaxed);
  } else if (old.sa_handler == SIG_IGN) {
    g_sigpipe_ignored.store(true, std::memory_order_relaxed);
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
  if (::getsockname(listener, reinterpret_cast<sockaddr*>(&ss), &len) < 0)
    throw_last_error("getsockname");
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

std::optional<std::pair<std::string, std::uint16_t>> peer_tcp_address(Handle conn) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(conn, reinterpret_cast<sockaddr*>(&ss), &len) < 0) return std::nullopt;
  char text[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    if (!::inet_ntop(AF_INET, &a->sin_addr, text, sizeof text)) return std::nullopt;
    return std::pair<std::string, std::uint16_t>(text, ntohs(a->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    if (!::inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof text)) return std::nullopt;
    return std::pair<std::string, std::uint16_t>(text, ntohs(a->sin6_port));
  }
  return std::nullopt;
}

namespace {
// One accept(); TCP connections get TCP_NODELAY. -1 with errno on failure.
int accept_once(Handle listener) {
  const int fd = posix::accept_cloexec(listener);
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
  if (errno != EINTR && errno != ECONNABORTED && errno != EAGAIN && errno != EWOULDBLOCK &&
      errno != EPROTO)
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
    const ssize_t n = posix::send_nosignal(h, data, size, MSG_DONTWAIT);
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
  if (timeout)
    ms = static_cast<int>(
        std::chrono::ceil<std::chrono::milliseconds>(std::max(*timeout, Nanos::zero())).count());
  const int r = ::poll(&p, 1, ms);
  if (r < 0 && errno != EINTR) throw_last_error("poll");
  return r > 0;
}

bool peer_closed(Handle socket) { return posix::peer_hung_up(socket); }

bool write_token(Handle socket) {
  const char token = 't';
  for (;;) {
    if (posix::send_nosignal(socket, &token, 1, MSG_DONTWAIT) == 1) return true;
    if (errno == EINTR) continue;
    if (errno == EPIPE || errno == ECONNRESET || errno == EAGAIN || errno == EWOULDBLOCK)
      return false;
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

std::pair<Handle, Handle> make_pipe() {
  int fds[2];
  if (posix::pipe_cloexec(fds) != 0) throw_last_error("pipe");
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

// One strategy for every write: a socket is written with send() that cannot raise SIGPIPE; a pipe
// (ENOTSOCK) with write() under SigpipeGuard unless SIGPIPE is known to be ignored.
void write_all(Handle h, const void* data, std::size_t size) {
  const char* p = static_cast<const char*>(data);
  std::optional<SigpipeGuard> guard;
  bool is_socket = true;
  while (size > 0) {
    ssize_t n;
    if (is_socket) {
      n = posix::send_nosignal(h, p, size, 0);
      if (n < 0 && errno == ENOTSOCK) {
        is_socket = false;
        if (!g_sigpipe_ignored.load(std::memory_order_relaxed)) guard.emplace();
        continue;
      }
    } else {
      n = ::write(h, p, size);
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      if (e == EPIPE && guard) guard->raised();
      throw_error(e, "cannot write");
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
    throw_last_error("cannot read");
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

std::string make_private_directory(const std::string& prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/" + prefix + "XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data())) throw_last_error("cannot create a private directory in " + templ);
  return std::string(buf.data());
}

void remove_directory(const std::string& path) noexcept { ::rmdir(path.c_str()); }

std::string path_socket_address(std::string& private_dir) {
  private_dir = make_private_directory("mp-");
  return private_dir + "/listener";
}

}  // namespace mp::platform
