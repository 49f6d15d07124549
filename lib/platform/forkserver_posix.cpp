// POSIX part of lib/platform/forkserver.hpp: SCM_RIGHTS over a stream socket.
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "mp/errors.hpp"
#include "platform/forkserver.hpp"

namespace mp::platform::forkserver {

void send_with_descriptors(Handle socket, const void* data, std::size_t size, const std::vector<Handle>& fds) {
  if (size == 0 || fds.size() > kMaxDescriptors) throw std::invalid_argument("mp forkserver: bad message");
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
    const ssize_t n = ::sendmsg(socket, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_last_error("mp forkserver: send");
    }
    first = false;
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

bool receive_with_descriptors(Handle socket, void* data, std::size_t size, std::vector<Handle>& fds) {
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
    const ssize_t n = ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC);
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
    if (msg.msg_flags & MSG_CTRUNC) throw ProcessError("mp forkserver: too many descriptors in a message");
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

void ignore_interrupts(bool ignore) noexcept {
  struct sigaction sa {};
  sa.sa_handler = ignore ? SIG_IGN : SIG_DFL;
  ::sigaction(SIGINT, &sa, nullptr);
}

void move_descriptor(Handle fd, Handle target) {
  if (fd == target) return;
  if (::dup3(fd, target, O_CLOEXEC) < 0) throw_last_error("dup3");
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

}  // namespace mp::platform::forkserver
