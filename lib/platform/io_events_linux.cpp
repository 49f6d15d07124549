// Linux part of platform/io.hpp: the descriptor mode of a Pipe end (eventfd + epoll). No portable
// POSIX form (poll cannot be nested in one descriptor): macOS and the BSDs would use a kqueue with
// an EVFILT_USER event (docs/DESIGN.md §6).
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "platform/io.hpp"

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

}  // namespace mp::platform
