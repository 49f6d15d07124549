// Linux part of platform/handle_passing.hpp: a datagram socket connected to itself.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "mp/errors.hpp"
#include "platform/handle_passing.hpp"
#include "platform/posix.hpp"

namespace mp::platform {

// Bound to an address the kernel picks in the abstract namespace (nothing in the file system),
// then connected to that same address: what is sent on it queues on it, and since its peer is
// itself the kernel refuses every other sender (EPERM).
Handle datagram_loop() {
  const int fd = posix::socket_cloexec(AF_UNIX, SOCK_DGRAM, 0);
  if (fd < 0) throw_last_error("socket");
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  socklen_t length = sizeof(sa_family_t);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
      (length = sizeof address,
       ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) ||
      ::connect(fd, reinterpret_cast<sockaddr*>(&address), length) != 0) {
    const int e = errno;
    ::close(fd);
    throw_error(e, "cannot make a datagram socket");
  }
  return fd;
}

}  // namespace mp::platform
