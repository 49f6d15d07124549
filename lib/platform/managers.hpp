// Internal: the sockets behind the managers (lib/managers.cpp). Unix-domain sockets for local
// managers, TCP for remote ones. Every descriptor returned is close-on-exec; sends never raise
// SIGPIPE (a vanished peer is an OSError/EOFError instead).
#pragma once

#include <cstddef>
#include <optional>
#include <string>

#include "platform/os.hpp"

namespace mp::platform {

// A new private directory (mode 0700) under $TMPDIR or /tmp, named "<prefix>XXXXXX".
std::string make_private_directory(const std::string& prefix);
// Removes a file / an empty directory; errors are ignored.
void remove_file(const std::string& path) noexcept;
void remove_directory(const std::string& path) noexcept;

// A listening Unix socket at `path`, mode 0600. Throws OSError (e.g. EADDRINUSE).
Handle listen_unix(const std::string& path, int backlog);
// A listening TCP socket (SO_REUSEADDR). `port` 0 picks a free port; bound_port receives it.
Handle listen_tcp(const std::string& host, int port, int backlog, int* bound_port);
// Accepts one connection; nullopt when interrupted by a signal or the peer gave up first.
std::optional<Handle> accept_connection(Handle listener);
Handle connect_unix(const std::string& path);
Handle connect_tcp(const std::string& host, int port);
// The process at the other end of a Unix-socket connection (kernel-verified); nullopt for TCP.
std::optional<int> peer_pid(Handle connection);
// Send/receive timeouts on a socket (zero: none).
void set_socket_timeout(Handle connection, Nanos timeout);
// Writes all bytes (MSG_NOSIGNAL). Throws OSError (EPIPE/ECONNRESET when the peer is gone).
void send_all(Handle connection, const void* data, std::size_t size);
// Reads what is available, at least one byte. Throws EOFError at end of stream, OSError otherwise.
std::size_t recv_some(Handle connection, void* data, std::size_t size);
// Reads exactly `size` bytes. Throws EOFError at end of stream, OSError otherwise (EAGAIN when a
// socket timeout expired).
void recv_exact(Handle connection, void* data, std::size_t size);

}  // namespace mp::platform
