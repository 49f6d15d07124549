// Linux implementation of platform/posix.hpp: close-on-exec at creation (no window in which a
// concurrent fork+exec could inherit the descriptor) and sends that never raise SIGPIPE.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "platform/posix.hpp"

namespace mp::platform::posix {

int socket_cloexec(int family, int type, int protocol) noexcept {
  return ::socket(family, type | SOCK_CLOEXEC, protocol);
}

int socketpair_cloexec(int type, int fds[2]) noexcept {
  return ::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, fds);
}

int pipe_cloexec(int fds[2]) noexcept { return ::pipe2(fds, O_CLOEXEC); }

int accept_cloexec(int listener) noexcept {
  return ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
}

int dup_to_cloexec(int fd, int target) noexcept { return ::dup3(fd, target, O_CLOEXEC); }

ssize_t recvmsg_cloexec(int socket, msghdr* msg, int flags) noexcept {
  return ::recvmsg(socket, msg, flags | MSG_CMSG_CLOEXEC);
}

ssize_t send_nosignal(int socket, const void* data, std::size_t size, int flags) noexcept {
  return ::send(socket, data, size, flags | MSG_NOSIGNAL);
}

ssize_t sendmsg_nosignal(int socket, const msghdr* msg, int flags) noexcept {
  return ::sendmsg(socket, msg, flags | MSG_NOSIGNAL);
}

bool peer_hung_up(int socket) noexcept {
  pollfd p{socket, POLLRDHUP, 0};
  int r;
  do r = ::poll(&p, 1, 0);
  while (r < 0 && errno == EINTR);
  return r > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

bool close_range_from(int first) noexcept {
  return ::syscall(SYS_close_range, static_cast<unsigned>(first), ~0u, 0u) == 0;
}

}  // namespace mp::platform::posix
