// Internal: what the managers (lib/managers.cpp) need beyond the connection layer's sockets
// (platform/conn.hpp: listen/connect/accept over Unix sockets and TCP, writes without SIGPIPE).
#pragma once

#include <cstddef>
#include <optional>
#include <string>

#include "platform/os.hpp"

namespace mp::platform {

// A fresh address for a manager's own Unix socket that leaves nothing in the file system however
// its server ends (SIGKILL included), and `private_dir` (to remove afterwards) or empty.
// Linux (managers_linux.cpp): an abstract socket "\0mp-<random>", private_dir empty; who may
// connect is checked by peer_uid() (lib/acceptor.hpp). Fallback for systems without abstract
// sockets: path_socket_address().
std::string private_socket_address(std::string& private_dir);
// "<dir>/listener" in a new private directory (mode 0700: only its owner reaches the socket),
// returned in `private_dir`. A SIGKILLed server leaves both behind.
std::string path_socket_address(std::string& private_dir);
// A new private directory (mode 0700) under $TMPDIR or /tmp, named "<prefix>XXXXXX".
std::string make_private_directory(const std::string& prefix);
// Removes an empty directory; errors are ignored.
void remove_directory(const std::string& path) noexcept;
// The process at the other end of a Unix-socket connection (kernel-verified); nullopt for TCP.
std::optional<int> peer_pid(Handle connection);
// Whether the peer of a connection may use this process's private sockets: a Unix-socket peer of
// the same effective user or root (whom a 0600 socket file admits); any TCP peer (the authkey
// decides, as CPython).
bool peer_is_same_user(Handle connection);
// For a manager's server process: ignores SIGINT (as CPython's server, bpo-36368: Ctrl-C goes to
// the whole foreground process group, and the owner decides what to do), and on SIGTERM or SIGHUP
// removes the socket file `path` (none when empty or abstract) and the directory `dir` (none when
// empty), then ends by that signal. Async-signal-safe; the strings are copied.
void protect_server_from_group_signals(const std::string& path, const std::string& dir);
// Reads what is available, at least one byte. Throws EOFError at end of stream (or a reset
// connection), OSError otherwise (EAGAIN when a socket deadline passed).
std::size_t recv_some(Handle connection, void* data, std::size_t size);
// Reads exactly `size` bytes, with the errors of recv_some.
void recv_exact(Handle connection, void* data, std::size_t size);

}  // namespace mp::platform
