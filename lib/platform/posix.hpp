// POSIX-family internals of the *_posix.cpp files (never included by shared code): the calls
// whose close-on-exec / no-SIGPIPE forms differ between systems. posix_linux.cpp implements them
// atomically with Linux's flags (SOCK_CLOEXEC, pipe2, accept4, dup3, MSG_CMSG_CLOEXEC,
// MSG_NOSIGNAL). posix_portable.cpp (MP_PLATFORM_POSIX_FALLBACKS; what macOS needs) sets
// FD_CLOEXEC after creation (racing a concurrent fork+exec, as CPython on macOS) and SO_NOSIGPIPE
// where MSG_NOSIGNAL is missing.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <cstddef>
#include <utility>

#include "platform/handle.hpp"

namespace mp::platform::posix {

// socket()/socketpair()/pipe()/accept()/dup2() returning close-on-exec descriptors; -1 / errno
// as the call.
int socket_cloexec(int family, int type, int protocol) noexcept;
int socketpair_cloexec(int type, int fds[2]) noexcept;
int pipe_cloexec(int fds[2]) noexcept;
int accept_cloexec(int listener) noexcept;
int dup_to_cloexec(int fd, int target) noexcept;
// recvmsg() whose received descriptors are close-on-exec.
ssize_t recvmsg_cloexec(int socket, msghdr* msg, int flags) noexcept;
// send()/sendmsg() that never raise SIGPIPE (EPIPE instead); ENOTSOCK for a pipe.
ssize_t send_nosignal(int socket, const void* data, std::size_t size, int flags) noexcept;
ssize_t sendmsg_nosignal(int socket, const msghdr* msg, int flags) noexcept;
// Whether the peer of a stream socket has shut down its side (pending end of file), without
// consuming data.
bool peer_hung_up(int socket) noexcept;
// Closes every descriptor >= first in one system call (Linux 5.9+: close_range); false where the
// system has none, and the caller closes them one by one.
bool close_range_from(int first) noexcept;

}  // namespace mp::platform::posix
