// POSIX part of platform/handle_passing.hpp: SCM_RIGHTS over Unix sockets, descriptor moves.
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
#include <stdexcept>

#include "mp/errors.hpp"
#include "platform/handle_passing.hpp"
#include "platform/posix.hpp"

namespace mp::platform {

std::pair<Handle, Handle> datagram_pair() {
  int fds[2];
  if (posix::socketpair_cloexec(SOCK_DGRAM, fds) < 0) throw_last_error("socketpair");
  return {fds[0], fds[1]};
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
    if (posix::sendmsg_nosignal(socket, &msg, MSG_DONTWAIT) >= 0) return true;
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
  do n = posix::recvmsg_cloexec(socket, &msg, MSG_DONTWAIT | (peek ? MSG_PEEK : 0));
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
    throw_last_error("cannot receive a descriptor");
  }
  fd = kInvalidHandle;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
      std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
  if (n != static_cast<ssize_t>(sizeof tag) || fd == kInvalidHandle ||
      (msg.msg_flags & MSG_CTRUNC)) {
    close_handle(fd);
    throw ProcessError("mp: corrupt out-of-band message in a queue");
  }
  return true;
}

void send_with_descriptors(Handle socket, const void* data, std::size_t size,
                           const std::vector<Handle>& fds) {
  if (size == 0 || fds.size() > kMaxDescriptors)
    throw std::invalid_argument("mp forkserver: bad message");
  const char* p = static_cast<const char*>(data);
  std::vector<char> control(CMSG_SPACE(sizeof(int) * kMaxDescriptors));
  bool first = true;
  while (size > 0) {
    iovec iov{const_cast<char*>(p), size};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (first && !fds.empty()) {
      msg.msg_control = control.data();
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    const ssize_t n = posix::sendmsg_nosignal(socket, &msg, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_last_error("mp forkserver: send");
    }
    first = false;
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

bool receive_with_descriptors(Handle socket, void* data, std::size_t size,
                              std::vector<Handle>& fds) {
  char* p = static_cast<char*>(data);
  std::vector<char> control(CMSG_SPACE(sizeof(int) * kMaxDescriptors));
  bool first = true;
  while (size > 0) {
    iovec iov{p, size};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    const ssize_t n = posix::recvmsg_cloexec(socket, &msg, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_last_error("mp forkserver: receive");
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        fds.push_back(fd);
      }
    }
    if (msg.msg_flags & MSG_CTRUNC)
      throw ProcessError("mp forkserver: too many descriptors in a message");
    if (n == 0) {
      if (first) return false;
      throw EOFError("mp forkserver: the peer closed the connection in a message");
    }
    first = false;
    p += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

void move_descriptor(Handle fd, Handle target) {
  if (fd == target) return;
  if (posix::dup_to_cloexec(fd, target) < 0) throw_last_error("dup3");
  ::close(fd);
}

void move_descriptor_inheritable(Handle fd, Handle target) {
  if (fd == target) {
    set_inheritable(fd, true);
    return;
  }
  if (::dup2(fd, target) < 0) throw_last_error("dup2");
  ::close(fd);
}

Handle duplicate_above(Handle fd, Handle minimum) {
  const int r = ::fcntl(fd, F_DUPFD_CLOEXEC, minimum);
  if (r < 0) throw_last_error("fcntl(F_DUPFD_CLOEXEC)");
  return r;
}

// ---- handles carried in shared memory: Windows only (kHandlesTravelInMemory is false here)

std::uint64_t hand_off(Handle, int) {
  throw std::logic_error("mp: hand_off: POSIX descriptors travel only over Unix sockets");
}

Handle take_handed_off(std::uint64_t) {
  throw std::logic_error("mp: take_handed_off: POSIX descriptors travel only over Unix sockets");
}

void release_handed_off(std::uint64_t) noexcept {}

int handed_off_holder(std::uint64_t) noexcept { return 0; }

}  // namespace mp::platform
