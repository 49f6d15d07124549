// POSIX sockets for the managers (lib/platform/managers.hpp).
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "mp/errors.hpp"
#include "platform/managers.hpp"

namespace mp::platform {
namespace {

sockaddr_un unix_address(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof a.sun_path)
    throw std::invalid_argument("invalid Unix socket path '" + path + "' (empty or too long)");
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return a;
}

// Resolves host:port (numeric or a name) to the first IPv4/IPv6 address.
addrinfo* resolve(const std::string& host, int port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  const int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0) throw OSError(EINVAL, "cannot resolve '" + host + "': " + ::gai_strerror(rc));
  return res;
}

void set_nodelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

}  // namespace

std::string make_private_directory(const std::string& prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/" + prefix + "XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data())) throw_last_error("cannot create a private directory in " + templ);
  return std::string(buf.data());
}

void remove_file(const std::string& path) noexcept { ::unlink(path.c_str()); }
void remove_directory(const std::string& path) noexcept { ::rmdir(path.c_str()); }

Handle listen_unix(const std::string& path, int backlog) {
  const sockaddr_un a = unix_address(path);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw_last_error("socket(AF_UNIX)");
  // The socket file gets 0600 from the umask at bind time; fchmod on a socket does not apply.
  const mode_t old = ::umask(0177);
  const int rc = ::bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a);
  const int err = errno;
  ::umask(old);
  if (rc != 0) {
    ::close(fd);
    throw_error(err, "cannot bind the Unix socket '" + path + "'");
  }
  if (::listen(fd, backlog) != 0) {
    const int e = errno;
    ::close(fd);
    throw_error(e, "listen");
  }
  return fd;
}

Handle listen_tcp(const std::string& host, int port, int backlog, int* bound_port) {
  addrinfo* res = resolve(host, port, true);
  int fd = -1;
  int err = 0;
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd, backlog) == 0) break;
    err = errno;
    ::close(fd);
    fd = -1;
  }
  ::freeaddrinfo(res);
  if (fd < 0) throw_error(err, "cannot listen on " + host + ":" + std::to_string(port));
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  if (bound_port)
    *bound_port = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                           : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return fd;
}

std::optional<Handle> accept_connection(Handle listener) {
  const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd < 0) {
    if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN || errno == EPROTO) return std::nullopt;
    throw_last_error("accept");
  }
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0 && ss.ss_family != AF_UNIX) set_nodelay(fd);
  return fd;
}

Handle connect_unix(const std::string& path) {
  const sockaddr_un a = unix_address(path);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw_last_error("socket(AF_UNIX)");
  while (::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
    if (errno == EINTR) continue;
    const int e = errno;
    ::close(fd);
    throw_error(e, "cannot connect to the manager at '" + path + "'");
  }
  return fd;
}

Handle connect_tcp(const std::string& host, int port) {
  addrinfo* res = resolve(host, port, false);
  int fd = -1;
  int err = 0;
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
    err = errno;
    ::close(fd);
    fd = -1;
  }
  ::freeaddrinfo(res);
  if (fd < 0) throw_error(err, "cannot connect to the manager at " + host + ":" + std::to_string(port));
  set_nodelay(fd);
  return fd;
}

std::optional<int> peer_pid(Handle connection) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(connection, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.pid <= 0)
    return std::nullopt;
  return static_cast<int>(cred.pid);
}

void set_socket_timeout(Handle connection, Nanos timeout) {
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(timeout).count();
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(us / 1000000);
  tv.tv_usec = static_cast<suseconds_t>(us % 1000000);
  if (::setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
      ::setsockopt(connection, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0)
    throw_last_error("setsockopt(SO_RCVTIMEO)");
}

void send_all(Handle connection, const void* data, std::size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::send(connection, p, size, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_last_error("send");
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

std::size_t recv_some(Handle connection, void* data, std::size_t size) {
  for (;;) {
    const ssize_t n = ::recv(connection, data, size, 0);
    if (n > 0) return static_cast<std::size_t>(n);
    if (n == 0) throw EOFError();
    if (errno == EINTR) continue;
    if (errno == ECONNRESET) throw EOFError("connection reset by peer");
    throw_last_error("recv");
  }
}

void recv_exact(Handle connection, void* data, std::size_t size) {
  char* p = static_cast<char*>(data);
  while (size > 0) {
    const ssize_t n = ::recv(connection, p, size, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ECONNRESET) throw EOFError("connection reset by peer");
      throw_last_error("recv");
    }
    if (n == 0) throw EOFError();
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

}  // namespace mp::platform
