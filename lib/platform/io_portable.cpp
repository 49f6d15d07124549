// Portable POSIX implementation of what io_linux.cpp does (MP_PLATFORM_POSIX_FALLBACKS): private
// sockets in a 0700 directory instead of abstract ones, and the peer's user and pid from the
// credential call each system has. POSIX itself names none: getpeereid() is the BSD/macOS one
// (glibc lacks it), LOCAL_PEERPID macOS's, LOCAL_PEERCRED/xucred FreeBSD's, SO_PEERCRED Linux's
// and OpenBSD's. On Linux this file therefore reads SO_PEERCRED as io_linux.cpp does; what it
// changes there is the socket address (files, not the abstract namespace).
#include <sys/param.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>
#if defined(__FreeBSD__) || defined(__APPLE__)
#  include <sys/ucred.h>
#endif

#include <cerrno>
#include <optional>
#include <string>

#include "platform/io.hpp"

namespace mp::platform {

std::string private_socket_address(std::string& private_dir) {
  // A SIGKILLed server leaves the directory and the socket file behind (io.hpp); the abstract
  // namespace that avoids this is Linux's.
  return path_socket_address(private_dir);
}

namespace {

bool is_unix_socket(Handle connection) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  return ::getsockname(connection, reinterpret_cast<sockaddr*>(&ss), &len) == 0 &&
         ss.ss_family == AF_UNIX;
}

std::optional<uid_t> peer_uid(Handle connection) {
#if defined(__APPLE__) || defined(__FreeBSD__) || defined(__NetBSD__) || defined(__OpenBSD__) || \
    defined(__DragonFly__)
  uid_t uid = 0;
  gid_t gid = 0;
  if (::getpeereid(connection, &uid, &gid) != 0) return std::nullopt;
  return uid;
#elif defined(SO_PEERCRED)
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(connection, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return std::nullopt;
  return cred.uid;
#else
#  error "mp: no way to read a Unix-socket peer's user on this system"
#endif
}

}  // namespace

std::optional<int> peer_pid(Handle connection) {
  if (!is_unix_socket(connection)) return std::nullopt;
#if defined(LOCAL_PEERPID)  // macOS
  pid_t pid = 0;
  socklen_t len = sizeof pid;
  if (::getsockopt(connection, SOL_LOCAL, LOCAL_PEERPID, &pid, &len) != 0 || pid <= 0)
    return std::nullopt;
  return static_cast<int>(pid);
#elif defined(LOCAL_PEERCRED) && defined(__FreeBSD__)  // cr_pid: FreeBSD 13
  xucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(connection, SOL_LOCAL, LOCAL_PEERCRED, &cred, &len) != 0 || cred.cr_pid <= 0)
    return std::nullopt;
  return static_cast<int>(cred.cr_pid);
#elif defined(SO_PEERCRED)
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(connection, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.pid <= 0)
    return std::nullopt;
  return static_cast<int>(cred.pid);
#else
#  error "mp: no way to read a Unix-socket peer's pid on this system"
#endif
}

bool peer_is_same_user(Handle connection) {
  if (!is_unix_socket(connection)) return true;
  const std::optional<uid_t> uid = peer_uid(connection);
  return uid && (*uid == ::geteuid() || *uid == 0);
}

}  // namespace mp::platform
