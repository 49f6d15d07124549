// Internal OS API for mp::connection and the queues' out-of-band channel: sockets, pipes,
// readiness and descriptor passing. Implemented in conn_posix.cpp. Every descriptor returned is
// close-on-exec; no call raises SIGPIPE (a write to a closed peer is OSError EPIPE).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "platform/os.hpp"

namespace mp::platform::conn {

// A connected pair of stream sockets (duplex) or a pipe {read, write} (simplex).
std::pair<Handle, Handle> socket_pair();
std::pair<Handle, Handle> pipe_pair();  // also calls ignore_sigpipe()
// Sets SIGPIPE to ignored unless the program installed a handler (CPython does the same).
void ignore_sigpipe() noexcept;
// A connected pair of datagram sockets that keep message boundaries (for descriptor passing).
std::pair<Handle, Handle> datagram_pair();

// Writes all bytes; throws OSError (EPIPE/ECONNRESET when the peer is gone). EINTR is retried.
void write_all(Handle h, const void* data, std::size_t size);
// Reads up to `size` bytes; 0 at end of file. Throws OSError; EAGAIN (a receive deadline
// passed) is thrown as OSError too.
std::size_t read_some(Handle h, void* data, std::size_t size);
// Reads up to `size` bytes without blocking: `got` is the count (0 at end of file) when the result
// is `ok`. `would_block`: nothing has arrived yet. `unsupported`: `h` cannot be read without
// blocking this way (a pipe): use read_some. Throws OSError.
enum class TryRead { ok, would_block, unsupported };
TryRead try_read(Handle h, void* data, std::size_t size, std::size_t& got);
// Whether `h` is readable (data or EOF) within `timeout` (null: forever).
bool poll_readable(Handle h, const Nanos* timeout);

// Stream sockets for Listener/Client and the managers. `path` for Unix sockets ("\0name" =
// abstract namespace). Process-wide state (the umask) is never touched: a socket file gets the
// mode the umask gives; access is controlled by its directory or by peer_uid() (lib/acceptor.cpp).
Handle listen_unix(const std::string& path, int backlog);
Handle connect_unix(const std::string& path);
// TCP: host name or address and port (0 = any); the bound port is returned by local_port().
Handle listen_tcp(const std::string& host, std::uint16_t port, int backlog);
Handle connect_tcp(const std::string& host, std::uint16_t port);
std::uint16_t local_port(Handle listener);
// For a listener that polled readable: accepts one connection, or nullopt when the pending one
// was aborted meanwhile or a signal interrupted (the caller goes back to waiting).
std::optional<Handle> try_accept(Handle listener);
// The same without throwing: on failure, nullopt with `error` set to the errno (EMFILE...); `error`
// is 0 when nothing is pending.
std::optional<Handle> try_accept(Handle listener, int& error) noexcept;
// Makes accept_connection/try_accept on `listener` return at once when nothing is pending
// (O_NONBLOCK on the listening socket; accepted sockets are blocking).
void set_nonblocking(Handle listener);
// Reads up to `size` bytes, waiting at most until `deadline`: 0 at end of file; OSError ETIMEDOUT
// once the deadline has passed. Unlike a socket timeout, the deadline bounds a whole exchange.
std::size_t read_some_until(Handle h, void* data, std::size_t size, Clock::time_point deadline);
// Writes all bytes by `deadline` (OSError ETIMEDOUT after it; EPIPE when the peer is gone).
void write_all_until(Handle h, const void* data, std::size_t size, Clock::time_point deadline);
// Writes what fits without blocking; returns the count (0: the buffer is full). OSError (EPIPE...)
// when the peer is gone; never SIGPIPE.
std::size_t try_write(Handle h, const void* data, std::size_t size);
void unlink_path(const std::string& path) noexcept;

// Sends `fd` with an 8-byte tag as one datagram without blocking; false when the socket's
// buffer is full.
bool send_descriptor(Handle socket, std::uint64_t tag, Handle fd);
// Waits until `h` can be written or the timeout passes (null: forever); true if writable.
bool wait_writable(Handle h, const Nanos* timeout);
// Without blocking, receives the next datagram: its tag and descriptor (the caller owns it).
// `peek` leaves the datagram queued (the descriptor is still duplicated to the caller).
// Returns false when none is queued.
bool receive_descriptor(Handle socket, std::uint64_t& tag, Handle& fd, bool peek);

// ---- Pipe() over shared memory (lib/pipe_channel.cpp): the socket carries only wake tokens.
// Whether the peer's every copy of a stream socket is closed (its end of file is pending), without
// consuming anything. Never blocks.
bool peer_closed(Handle socket);
// Writes a one-byte wake token without blocking. False when the peer is gone (EPIPE/ECONNRESET)
// or the socket's buffer is full; never SIGPIPE.
bool write_token(Handle socket);
// Reads one token without blocking: 1 when one was read, 0 at end of file, -1 when none is queued.
int read_token(Handle socket);
// Descriptor mode of a Pipe end (conn_linux.cpp): an event descriptor that is readable while set,
// and a readiness set readable when `socket` is readable (data or EOF) or `event` is set.
Handle make_event();
void set_event(Handle event, bool on);
Handle make_ready_set(Handle socket, Handle event);

}  // namespace mp::platform::conn
