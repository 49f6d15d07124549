// Linux part of platform/io.hpp: the descriptor mode of a Pipe end (eventfd + epoll), abstract
// sockets and peer credentials (SO_PEERCRED).
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>

#include "platform/io.hpp"
#include "platform/system.hpp"

namespace mp::platform {

Handle make_event() {
  const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) throw_last_error("eventfd");
  return fd;
}

void set_event(Handle event, bool on) {
  std::uint64_t v = 1;
  for (;;) {
    const ssize_t n = on ? ::write(event, &v, sizeof v) : ::read(event, &v, sizeof v);
    if (n >= 0 || errno == EAGAIN) return;  // EAGAIN on read: already clear
    if (errno != EINTR) throw_last_error("eventfd");
  }
}

Handle make_ready_set(Handle socket, Handle event) {
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) throw_last_error("epoll_create1");
  epoll_event e{};
  e.events = EPOLLIN | EPOLLRDHUP;
  e.data.fd = socket;
  epoll_event f{};
  f.events = EPOLLIN;
  f.data.fd = event;
  if (::epoll_ctl(ep, EPOLL_CTL_ADD, socket, &e) < 0 ||
      ::epoll_ctl(ep, EPOLL_CTL_ADD, event, &f) < 0) {
    const int err = errno;
    ::close(ep);
    throw_error(err, "epoll_ctl");
  }
  return ep;
}

std::string private_socket_address(std::string& private_dir) {
  private_dir.clear();
  unsigned char random[12];
  random_bytes(random, sizeof random);
  static const char hex[] = "0123456789abcdef";
  std::string name("\0mp-", 4);
  for (unsigned char c : random) {
    name += hex[c >> 4];
    name += hex[c & 15];
  }
  return name;
}

namespace {
std::optional<ucred> peer_credentials(Handle connection) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(connection, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.pid <= 0)
    return std::nullopt;
  return cred;
}
}  // namespace

std::optional<int> peer_pid(Handle connection) {
  const auto cred = peer_credentials(connection);
  if (!cred) return std::nullopt;
  return static_cast<int>(cred->pid);
}

bool peer_is_same_user(Handle connection) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(connection, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return false;
  if (ss.ss_family != AF_UNIX) return true;
  ucred cred{};
  len = sizeof cred;
  if (::getsockopt(connection, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return false;
  return cred.uid == ::geteuid() || cred.uid == 0;
}

}  // namespace mp::platform
