// Linux part of platform/io.hpp: abstract sockets and peer credentials (SO_PEERCRED).
// io_portable.cpp replaces it under MP_PLATFORM_POSIX_FALLBACKS.
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>

#include "platform/io.hpp"
#include "platform/system.hpp"

namespace mp::platform {

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
