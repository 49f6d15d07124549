// Internal: what the managers (lib/managers.cpp) need beyond the connection layer's sockets
// (platform/conn.hpp: listen/connect/accept over Unix sockets and TCP, writes without SIGPIPE).
#pragma once

#include <cstddef>
#include <optional>
#include <string>

#include "platform/os.hpp"

namespace mp::platform {

// A new private directory (mode 0700) under $TMPDIR or /tmp, named "<prefix>XXXXXX".
std::string make_private_directory(const std::string& prefix);
// Removes an empty directory; errors are ignored.
void remove_directory(const std::string& path) noexcept;
// The process at the other end of a Unix-socket connection (kernel-verified); nullopt for TCP.
std::optional<int> peer_pid(Handle connection);
// Reads what is available, at least one byte. Throws EOFError at end of stream (or a reset
// connection), OSError otherwise (EAGAIN when a socket deadline passed).
std::size_t recv_some(Handle connection, void* data, std::size_t size);
// Reads exactly `size` bytes, with the errors of recv_some.
void recv_exact(Handle connection, void* data, std::size_t size);

}  // namespace mp::platform
