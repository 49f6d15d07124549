// mp/connection.hpp — Pipe, Connection, Listener, Client and wait()
// (CPython: multiprocessing/connection.py).
//
//   auto [a, b] = mp::Pipe();          // duplex: both ends send and receive
//   a.send(std::vector<int>{1, 2});    // any serializable value (mp/reduction.hpp)
//   auto v = b.recv<std::vector<int>>();
//
// A Connection is a handle: copies share the descriptor (like Python references); close() closes
// it for every copy in this process. Passed as a Process argument it is inherited under fork and
// sent as descriptors under spawn. send() puts a type tag before the value, so recv<U>() of a value
// sent as T (U ≠ T) throws UnpicklingError instead of reading garbage.
//
// Transport. The ends of a Pipe() share a socket pair and one block of the shared heap
// (mp/heap.hpp) holding a byte ring per direction (256 KiB each; only the pages touched cost
// memory): a Pipe costs two descriptors, and its block is reused once no process holds it. Messages
// travel through the rings; larger ones are streamed through in chunks. The socket is kept for
// what only the kernel can do: a receiver that found its ring empty (after spinning briefly, when
// the process may run on several CPUs) sleeps on it and a sender wakes it with a one-byte token;
// it reports EOF when the peer's last copy is closed or its process dies; it backs fileno(). A
// ping-pong between two busy processes makes no system call at all. Listener/Client connections
// are plain sockets: messages framed [u32 size] (or [0xffffffff][u64 size] for 4 GiB and more)
// then the bytes.
//
// Guarantees (Pipe ends)
// - A message is whole or absent: it is committed by one atomic store after its bytes are in
//   place, so a sender killed mid-send leaves no torn message (an unfinished chunked message is
//   dropped), and the pipe stays usable for the other processes. Several processes or threads
//   may send on one end, and receive on one end: each direction's senders and receivers are
//   serialized by robust locks (a dead holder's lock is taken over).
// - Messages sent before the peer's last copy was closed are received first; then EOFError.
// - The ring is checked as it is read: a corrupt ring is OSError, never a crash.
// - fileno() is exact for select/poll: readable when a message or EOF is there, not readable once
//   it was received. Its first call in a process puts that end's receive side in a descriptor mode
//   (an epoll set of the socket and an event, private to the process; a forked child starts over)
//   where every message sent while it idles costs the sender a token write; recv/poll/wait never
//   need fileno().
// Limits: exactness of fileno() holds for one receiving process; when several processes receive
// on one end, another's receive may take the message a select() reported (as with a socket), and
// a receive that had to sleep in another process may leave this process's descriptor unreadable
// for later messages until this process next calls recv() or poll(). A ring holding only the
// remains of a message whose sender died reads as ready to poll() until a receive skips them.
// Python: CPython's send() to a peer whose every copy is closed fails at once (EPIPE); here a
// small message may go into the ring, and the send fails (OSError EPIPE) at the latest once the
// ring is full. One send() of more than the ring blocks until the receiver takes it, as a socket
// send larger than its buffer does. fileno() of a readable Pipe end is not its socket.
//
// Guarantees (all): a write to a closed peer throws OSError (EPIPE), never SIGPIPE — SIGPIPE is
// set to ignored when a Pipe is created or a connection received (as CPython does at start-up)
// and sockets use MSG_NOSIGNAL. Received sizes are checked against the maximum (max_message_size(), default
// 4 GiB, or recv_bytes' maxlength) before anything is allocated, and buffers grow only as bytes
// actually arrive, so a peer announcing a bogus length cannot make the receiver allocate more
// than 1 MiB or twice what it sent.
// Latency: a receive that finds nothing polls briefly before it sleeps when its peer may answer
// from another CPU (lib/support/spin.hpp: a time budget adapted per thread between 1 and 50 µs,
// shrinking while polls find nothing and growing while they succeed), so a quick reply costs no
// cross-CPU wake-up. Confined to one CPU, or when the peer last ran on this CPU, it sleeps at once
// (a spin would only keep the peer from running): a ping-pong then costs per message a sleep and
// a wake-up, i.e. two system calls for the receiver (poll, reading the token) and one for the
// sender.
// Python: a Listener's handshake has a deadline for the whole exchange (handshake_timeout, default
// 10 s; Client(): 10 s): a peer that connects and stays silent or trickles makes an accept() throw
// AuthenticationError instead of hanging. accept() runs the handshakes of all pending connections
// side by side and returns the first that authenticates, so a slow peer delays no one (CPython
// authenticates them one at a time); handshakes still in progress go on at the next accept().
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <iterator>
#include <utility>
#include <variant>
#include <vector>

#include "mp/errors.hpp"
#include "mp/export.hpp"
#include "mp/heap.hpp"
#include "mp/process.hpp"
#include "mp/reduction.hpp"

namespace mp {
namespace detail {
struct ConnectionAccess;
}

class MP_API Connection {
 public:
  // A closed connection.
  Connection() = default;

  // Connection.send(obj): serializes and sends one message. Throws OSError (closed handle,
  // read-only end, peer gone).
  template <class T>
  void send(const T& obj) {
    std::string& buf = scratch();
    buf.assign(kHeaderReserve, '\0');
    const std::uint64_t tag = reduction::detail::type_tag<T>();
    buf.append(reinterpret_cast<const char*>(&tag), sizeof tag);
    reduction::dump_into(buf, obj);
    send_framed(buf);
  }
  // Connection.recv(): the next message as a T. Throws EOFError when the peer closed and nothing
  // is left, UnpicklingError when the message is not a T.
  template <class T>
  T recv() {
    return reduction::loads<T>(recv_message(max_message_size()));
  }

  // send_bytes(buffer, offset, size): the bytes [offset, offset + size) of `buffer` as one
  // message. Throws std::invalid_argument as CPython for a bad offset/size.
  void send_bytes(std::string_view buffer, std::size_t offset = 0,
                  std::optional<std::size_t> size = std::nullopt);
  void send_bytes(std::span<const std::byte> buffer, std::size_t offset = 0,
                  std::optional<std::size_t> size = std::nullopt) {
    send_bytes(std::string_view(reinterpret_cast<const char*>(buffer.data()), buffer.size()),
               offset, size);
  }
  // recv_bytes(maxlength): one message. A message longer than `maxlength` throws OSError
  // "bad message length" and closes the connection (as CPython).
  std::string recv_bytes(std::optional<std::size_t> maxlength = std::nullopt);
  // recv_bytes_into(buffer, offset): writes the message at `buffer[offset]` (bytes) and returns
  // its size. Throws BufferTooShort (holding the whole message) if it does not fit.
  std::size_t recv_bytes_into(std::span<std::byte> buffer, std::size_t offset = 0);
  template <class R>
  requires requires(R&& r) { std::span(r); }
  std::size_t recv_bytes_into(R&& range, std::size_t offset = 0) {
    const auto bytes = std::as_writable_bytes(std::span(range));
    return recv_bytes_into(std::span<std::byte>(bytes.data(), bytes.size()), offset);
  }

  // poll(): whether data (or EOF) is available now; poll(timeout) waits up to `timeout`.
  bool poll() { return poll_for(std::chrono::nanoseconds::zero()); }
  template <class Rep, class Period>
  bool poll(std::chrono::duration<Rep, Period> timeout) {
    return poll_for(detail::to_nanos(timeout));
  }
  bool poll(double timeout_seconds) { return poll_for(detail::seconds_to_nanos(timeout_seconds)); }

  void close() noexcept;
  bool closed() const noexcept;
  bool readable() const noexcept;
  bool writable() const noexcept;
  // The descriptor to select/poll on for readability (a readable Pipe end: a descriptor of this
  // process, see the top of this file). Throws OSError "handle is closed".
  std::intptr_t fileno() const;

  // The largest message recv()/recv_bytes() accept (default 4 GiB), shared by the copies.
  std::size_t max_message_size() const noexcept;
  void set_max_message_size(std::size_t size);

  // Sent as a descriptor (the socket) and, for a Pipe end, its rings (a shared-heap block); only
  // while a spawned Process is being started.
  template <class Archive>
  void save(Archive& ar) const {
    const heap::SharedBlock* rings = pipe_rings();
    ar(send_socket(), readable(), writable(), rings != nullptr);
    if (rings) ar(*rings, pipe_end());
  }
  template <class Archive>
  void load(Archive& ar) {
    std::uint64_t socket = 0;
    bool r = false, w = false, pipe = false;
    ar(socket, r, w, pipe);
    heap::SharedBlock rings;
    std::int32_t end = -1;
    if (pipe) ar(rings, end);
    attach(socket, r, w, pipe, std::move(rings), end);
  }

  // Identity, as Python compares connections: copies of one handle are equal (so Python's
  // `readers.remove(r)` is `std::erase(readers, r)`); two closed default-made ones are equal.
  friend bool operator==(const Connection& a, const Connection& b) noexcept {
    return a.state_ == b.state_;
  }

  // For the library: a connection owning `fd`.
  Connection(std::intptr_t fd, bool readable, bool writable);

 private:
  struct State;
  static constexpr std::size_t kHeaderReserve = 4;
  static std::string& scratch();
  void send_framed(std::string& buf);  // buf: kHeaderReserve bytes then the payload
  std::string recv_message(std::size_t maxlength);
  bool poll_for(std::chrono::nanoseconds timeout);
  std::uint64_t send_socket() const;
  const heap::SharedBlock* pipe_rings() const;  // null: not a Pipe end
  std::int32_t pipe_end() const;
  void attach(std::uint64_t socket, bool readable, bool writable, bool pipe,
              heap::SharedBlock rings, std::int32_t end);
  friend struct detail::ConnectionAccess;  // lib/connection.cpp: wait(); tests and fuzz: the ring
  std::shared_ptr<State> state_;
};

// Pipe(duplex): two connected ends over shared memory (see the top of this file). Duplex: both
// ends send and receive. Simplex (duplex = false): the first end only receives and the second only
// sends (the other direction throws OSError).
MP_API std::pair<Connection, Connection> Pipe(bool duplex = true);

namespace connection {

// An address: a Unix socket path (a leading '\0' = Linux abstract namespace), or a TCP host and
// port (port 0: the OS picks; Listener::address() tells which).
struct TcpAddress {
  std::string host;
  std::uint16_t port = 0;
  bool operator==(const TcpAddress&) const = default;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(host, port);
  }
};
using Address = std::variant<std::string, TcpAddress>;

// Listener's keyword arguments (CPython: Listener(address, family, backlog=1, authkey=None)):
//   mp::Listener l(address, {.authkey = key});
struct ListenerOptions {
  int backlog = 1;
  std::optional<std::string> authkey = std::nullopt;
};

// Listener(address, backlog, authkey). No address: a fresh Unix socket in the abstract
// namespace. With an authkey, accept() runs the HMAC-SHA256 challenge–response both ways.
class MP_API Listener {
 public:
  explicit Listener(std::optional<Address> address = std::nullopt, int backlog = 1,
                    std::optional<std::string> authkey = std::nullopt);
  Listener(std::optional<Address> address, ListenerOptions options)
      : Listener(std::move(address), options.backlog, std::move(options.authkey)) {}
  // Waits for a client. Throws AuthenticationError for a wrong key or a handshake that misses
  // handshake_timeout() (the client's connection is closed either way; the listener stays open),
  // OSError when accepting fails (EMFILE). Outcomes come in the order handshakes finish; calls
  // from several threads take turns. Limit: handshakes progress only inside accept(), so fileno()
  // turns readable for new connections, not for a pending handshake that completed meanwhile.
  Connection accept();
  void close() noexcept;
  bool closed() const noexcept;
  const Address& address() const;
  std::optional<Address> last_accepted() const;
  std::chrono::nanoseconds handshake_timeout() const noexcept;
  void set_handshake_timeout(std::chrono::nanoseconds timeout);
  std::intptr_t fileno() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

// Client(address, authkey): connects to a Listener. Throws OSError when nothing listens there,
// AuthenticationError for a wrong key.
MP_API Connection Client(const Address& address, std::optional<std::string> authkey = std::nullopt);

// wait(objects, timeout): the objects that are ready — a Connection with data or EOF, a
// Process that ended (its sentinel), or a raw handle that is readable — in their order in
// `objects`. Empty on timeout. `objects` is any range of Connection, Process (or a subclass),
// std::intptr_t or Waitable, and the result holds elements of that type, ready to use:
//   std::vector<mp::Connection> readers = ...;
//   for (mp::Connection& r : mp::connection::wait(readers)) { r.recv<int>(); ... }
// A braced list ({conn, process}) gives Waitables; Waitables compare equal to their contents'
// handles (Connection and Process compare by identity).
using Waitable = std::variant<Connection, Process, std::intptr_t>;
// The indexes of the ready objects, ascending (timeout null: none).
MP_API std::vector<std::size_t> wait_indexes(const std::vector<Waitable>& objects,
                                             const std::chrono::nanoseconds* timeout);
MP_API std::vector<Waitable> wait_for(const std::vector<Waitable>& objects,
                                      const std::chrono::nanoseconds* timeout);

namespace wait_detail {
template <class T>
concept WaitableElement = std::is_same_v<T, Waitable> || std::is_same_v<T, Connection> ||
    std::is_base_of_v<Process, T> || std::is_same_v<T, std::intptr_t>;
template <class R>
concept WaitableRange = requires(const R& r) {
  std::begin(r);
  std::end(r);
}
&&WaitableElement<std::remove_cvref_t<decltype(*std::begin(std::declval<const R&>()))>>;

template <class R>
auto wait_range(const R& objects, const std::chrono::nanoseconds* timeout) {
  using T = std::remove_cvref_t<decltype(*std::begin(objects))>;
  std::vector<Waitable> all;
  for (const auto& o : objects) {
    if constexpr (std::is_base_of_v<Process, T>) {
      all.emplace_back(std::in_place_type<Process>, o);
    } else {
      all.emplace_back(o);
    }
  }
  const std::vector<std::size_t> ready = wait_indexes(all, timeout);
  std::vector<T> out;
  out.reserve(ready.size());
  std::size_t i = 0;
  auto it = std::begin(objects);
  for (const std::size_t r : ready) {
    for (; i < r; ++i) ++it;
    out.push_back(*it);
  }
  return out;
}
}  // namespace wait_detail

inline std::vector<Waitable> wait(const std::vector<Waitable>& objects) {
  return wait_for(objects, nullptr);
}
template <class Rep, class Period>
std::vector<Waitable> wait(const std::vector<Waitable>& objects,
                           std::chrono::duration<Rep, Period> timeout) {
  const auto t = mp::detail::to_nanos(timeout);
  return wait_for(objects, &t);
}
template <wait_detail::WaitableRange R>
auto wait(const R& objects) {
  return wait_detail::wait_range(objects, nullptr);
}
template <wait_detail::WaitableRange R, class Rep, class Period>
auto wait(const R& objects, std::chrono::duration<Rep, Period> timeout) {
  const auto t = mp::detail::to_nanos(timeout);
  return wait_detail::wait_range(objects, &t);
}
// Seconds as a number, as Python's wait(objects, timeout=0.5).
template <class R>
requires wait_detail::WaitableRange<R> || std::is_same_v<R, std::vector<Waitable>>
auto wait(const R& objects, double timeout_seconds) {
  return wait(objects, mp::detail::seconds_to_nanos(timeout_seconds));
}
inline std::vector<Waitable> wait(const std::vector<Waitable>& objects, double timeout_seconds) {
  return wait(objects, mp::detail::seconds_to_nanos(timeout_seconds));
}

}  // namespace connection

using connection::Client;
using connection::Listener;
using connection::ListenerOptions;

}  // namespace mp
