// Pipes, sockets and readiness (mp::connection, the queues' out-of-band channel, the managers,
// the start methods' status pipes). io_posix.cpp, io_linux.cpp (eventfd/epoll, abstract sockets,
// peer credentials, POLLRDHUP), posix_linux.cpp (close-on-exec creation, no-SIGPIPE sends),
// io_win32.cpp (overlapped named pipes, Winsock; the Unix-socket calls take \\.\pipe\NAME).
// No call raises SIGPIPE: a write to a closed peer is OSError EPIPE.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "platform/handle.hpp"

namespace mp::platform {

// ---- pipes and socket pairs
// A unidirectional pipe {read, write}.
std::pair<Handle, Handle> make_pipe();
// A connected pair of stream sockets (duplex).
std::pair<Handle, Handle> socket_pair();
// Sets SIGPIPE to ignored unless the program installed a handler (CPython does the same at
// start-up). Not needed for the library's own writes, which never raise it.
void ignore_sigpipe() noexcept;

// ---- blocking reads and writes (pipes and sockets)
// Writes all bytes; throws OSError (EPIPE/ECONNRESET when the peer is gone), never SIGPIPE,
// whatever the program's SIGPIPE disposition. EINTR is retried.
void write_all(Handle h, const void* data, std::size_t size);
// Reads up to `size` bytes; 0 at end of file (a reset connection is end of file too). Throws
// OSError; EAGAIN (a socket receive deadline passed) is thrown as OSError too. EINTR is retried.
std::size_t read_some(Handle h, void* data, std::size_t size);
// Reads until end of file.
std::string read_to_end(Handle h);
// Reads up to `size` bytes without blocking: `got` is the count (0 at end of file) when the result
// is `ok`. `would_block`: nothing has arrived yet. `unsupported`: `h` cannot be read without
// blocking this way (a pipe): use read_some. Throws OSError.
enum class TryRead { ok, would_block, unsupported };
TryRead try_read(Handle h, void* data, std::size_t size, std::size_t& got);
// Writes what fits without blocking; returns the count (0: the buffer is full). OSError (EPIPE...)
// when the peer is gone; never SIGPIPE.
std::size_t try_write(Handle h, const void* data, std::size_t size);
// Reads up to `size` bytes, waiting at most until `deadline`: 0 at end of file; OSError ETIMEDOUT
// once the deadline has passed. Unlike a socket timeout, the deadline bounds a whole exchange.
std::size_t read_some_until(Handle h, void* data, std::size_t size, Clock::time_point deadline);
// Writes all bytes by `deadline` (OSError ETIMEDOUT after it; EPIPE when the peer is gone).
void write_all_until(Handle h, const void* data, std::size_t size, Clock::time_point deadline);

// ---- readiness
// Whether `h` is readable (data or end of file; a process handle: the process ended) within
// `timeout` (null: forever). EINTR is retried.
bool wait_readable(Handle h, const Nanos* timeout);
// Several handles; returns the indexes of the ready ones (empty on timeout).
std::vector<std::size_t> wait_any(const std::vector<Handle>& handles, const Nanos* timeout);
// Waits until `h` can be written or the timeout passes (null: forever); true if writable.
bool wait_writable(Handle h, const Nanos* timeout);

// ---- listening and connecting: Listener/Client and the managers
// `path` for Unix sockets ("\0name" = abstract namespace). Process-wide state (the umask) is never
// touched: a socket file gets the mode the umask gives; access is controlled by its directory or
// by peer_is_same_user() (lib/acceptor.cpp).
Handle listen_unix(const std::string& path, int backlog);
// Whether a listener's Handle can be handed to another process (reduction::send_handle). Not on
// Windows: a named-pipe listener is this process's pending pipe instance behind an event, so a
// server process makes its own listener there (as CPython's manager server always does).
#ifdef _WIN32
inline constexpr bool kListenersTravel = false;
#else
inline constexpr bool kListenersTravel = true;
#endif
Handle connect_unix(const std::string& path);
// TCP: host name or address and port (0 = any); the bound port is returned by local_port().
Handle listen_tcp(const std::string& host, std::uint16_t port, int backlog);
Handle connect_tcp(const std::string& host, std::uint16_t port);
std::uint16_t local_port(Handle listener);
// The numeric address and port of a connected TCP socket's peer ("127.0.0.1", 51234); nullopt
// for a Unix socket or when the peer is gone.
std::optional<std::pair<std::string, std::uint16_t>> peer_tcp_address(Handle conn);
// For a listener that polled readable: accepts one connection, or nullopt when the pending one
// was aborted meanwhile or a signal interrupted (the caller goes back to waiting).
std::optional<Handle> try_accept(Handle listener);
// The same without throwing: on failure, nullopt with `error` set to the errno (EMFILE...); `error`
// is 0 when nothing is pending.
std::optional<Handle> try_accept(Handle listener, int& error) noexcept;
// Makes try_accept on `listener` return at once when nothing is pending (O_NONBLOCK on the
// listening socket; accepted sockets are blocking).
void set_nonblocking(Handle listener);
void unlink_path(const std::string& path) noexcept;
// A fresh address for a private Unix socket (a manager's) that leaves nothing in the file system
// however its server ends (SIGKILL included), and `private_dir` (to remove afterwards) or empty.
// Linux (io_linux.cpp): an abstract socket "\0mp-<random>", private_dir empty; who may connect is
// checked by peer_is_same_user(). Fallback for systems without abstract sockets:
// path_socket_address().
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
// Reads what is available, at least one byte. Throws EOFError at end of stream (or a reset
// connection), OSError otherwise (EAGAIN when a socket deadline passed).
std::size_t recv_some(Handle connection, void* data, std::size_t size);
// Reads exactly `size` bytes, with the errors of recv_some.
void recv_exact(Handle connection, void* data, std::size_t size);

// ---- Pipe() over shared memory (lib/pipe_channel.cpp): the socket carries only wake tokens.
// Whether the peer's every copy of a stream socket is closed (its end of file is pending), without
// consuming anything. Never blocks.
bool peer_closed(Handle socket);
// Writes a one-byte wake token without blocking. False when the peer is gone (EPIPE/ECONNRESET)
// or the socket's buffer is full; never SIGPIPE.
bool write_token(Handle socket);
// Reads one token without blocking: 1 when one was read, 0 at end of file, -1 when none is queued.
int read_token(Handle socket);
// Descriptor mode of a Pipe end (io_linux.cpp): an event descriptor that is readable while set,
// and a readiness set readable when `socket` is readable (data or EOF) or `event` is set.
Handle make_event();
void set_event(Handle event, bool on);
Handle make_ready_set(Handle socket, Handle event);

}  // namespace mp::platform
