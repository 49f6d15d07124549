// mp::Connection, Pipe, Listener, Client, wait (CPython: multiprocessing/connection.py).
#include "mp/connection.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "support/acceptor.hpp"
#include "support/deadline.hpp"
#include "support/framing.hpp"
#include "support/pipe_channel.hpp"
#include "support/unique_handle.hpp"
#include "support/spin.hpp"
#include "support/thread_object.hpp"
#include "platform/handle.hpp"
#include "platform/io.hpp"
#include "platform/system.hpp"
#include "platform/wait.hpp"

namespace mp {
namespace {

namespace framing = detail::framing;
constexpr std::size_t kDefaultMaxMessage = std::size_t{4} << 30;
// Receive buffers grow by at most this much beyond what already arrived.
constexpr std::size_t kFirstStep = std::size_t{1} << 20;
// A receive polls before it sleeps (lib/support/spin.hpp), adapted per thread.
constinit thread_local detail::Spinner t_recv_spin;

[[noreturn]] void throw_closed() { throw OSError(EBADF, "handle is closed"); }

void read_exact(platform::Handle fd, void* data, std::size_t size, bool at_start) {
  char* p = static_cast<char*>(data);
  std::size_t got = 0;
  while (got < size) {
    const std::size_t n = platform::read_some(fd, p + got, size - got);
    if (n == 0) {
      if (at_start && got == 0) throw EOFError();
      throw OSError(EPROTO, "got end of file during message");
    }
    got += n;
  }
}

}  // namespace

struct Connection::State {
  platform::Handle fd = platform::kInvalidHandle;
  bool readable = false;
  bool writable = false;
  std::size_t max_message = kDefaultMaxMessage;
  bool spin_unsupported = false;              // a pipe: receives block at once
  std::unique_ptr<detail::PipeChannel> pipe;  // Pipe() ends: messages travel in shared memory
  ~State() { close(); }
  void close() noexcept {
    if (pipe) pipe->close();
    const bool was_open = fd != platform::kInvalidHandle;
    platform::close_handle(fd);
    fd = platform::kInvalidHandle;
    if (pipe && was_open) pipe->wake_peer();  // a receiver asleep on the ring looks for EOF
  }
  platform::Handle check_readable() const {
    if (fd == platform::kInvalidHandle) throw_closed();
    if (!readable) throw OSError(EBADF, "connection is write-only");
    return fd;
  }
  platform::Handle check_writable() const {
    if (fd == platform::kInvalidHandle) throw_closed();
    if (!writable) throw OSError(EBADF, "connection is read-only");
    return fd;
  }
};

Connection::Connection(std::intptr_t fd, bool readable, bool writable)
    : state_(std::make_shared<State>()) {
  state_->fd = static_cast<platform::Handle>(fd);
  state_->readable = readable;
  state_->writable = writable;
}

std::string& Connection::scratch() {
  return detail::thread_object<std::string, struct ConnectionScratchTag>();
}

void Connection::send_framed(std::string& buf) {
  if (!state_) throw_closed();
  const platform::Handle fd = state_->check_writable();
  const std::size_t size = buf.size() - kHeaderReserve;
  if (state_->pipe) {
    state_->pipe->send(buf.data() + kHeaderReserve, size);
  } else if (size < framing::kLongMarker) {
    framing::put_header(buf.data(), size);            // fits the kHeaderReserve bytes
    platform::write_all(fd, buf.data(), buf.size());  // one write for header and payload
  } else {
    char header[framing::kLongHeader];
    platform::write_all(fd, header, framing::put_header(header, size));
    platform::write_all(fd, buf.data() + kHeaderReserve, size);
  }
  if (buf.capacity() > (std::size_t{64} << 20)) std::string().swap(buf);  // do not keep big buffers
}

std::string Connection::recv_message(std::size_t maxlength) {
  if (!state_) throw_closed();
  const platform::Handle fd = state_->check_readable();
  if (state_->pipe) {
    try {
      return state_->pipe->recv(maxlength);
    } catch (const OSError& e) {
      if (e.code().value() == EMSGSIZE) close();  // as CPython: a bad length closes the connection
      throw;
    }
  }
  std::uint32_t n32 = 0;
  // The header: poll briefly first, yielding between polls (lib/support/spin.hpp): a quick reply then
  // costs no sleep and wake-up.
  std::size_t first = 0;
  bool have = false;
  if (!state_->spin_unsupported && platform::several_cpus()) {
    platform::TryRead r = platform::TryRead::would_block;
    t_recv_spin.spin_yielding([&] {
      r = platform::try_read(fd, &n32, sizeof n32, first);
      return r != platform::TryRead::would_block;
    });
    if (r == platform::TryRead::unsupported) state_->spin_unsupported = true;
    have = r == platform::TryRead::ok;
  }
  if (!have) first = platform::read_some(fd, &n32, sizeof n32);
  if (first == 0) throw EOFError();
  if (first < sizeof n32)
    read_exact(fd, reinterpret_cast<char*>(&n32) + first, sizeof n32 - first, false);
  const std::uint64_t size =
      framing::body_length(n32, [&](void* data, std::size_t n) { read_exact(fd, data, n, false); });
  if (size > maxlength) {
    close();
    throw OSError(EMSGSIZE, "bad message length");
  }
  // The buffer grows with what has arrived (doubling from kFirstStep), so a bogus length makes the
  // receiver allocate at most kFirstStep or twice what the peer actually sent.
  std::string out;
  std::size_t got = 0;
  while (got < size) {
    const std::size_t want = std::min<std::uint64_t>(size, got + std::max(got, kFirstStep));
    out.resize(want);
    read_exact(fd, out.data() + got, want - got, false);
    got = want;
  }
  return out;
}

void Connection::send_bytes(std::string_view buffer, std::size_t offset,
                            std::optional<std::size_t> size) {
  if (offset > buffer.size()) throw std::invalid_argument("buffer length < offset");
  const std::size_t n = size.value_or(buffer.size() - offset);
  if (n > buffer.size() - offset) throw std::invalid_argument("buffer length < offset + size");
  std::string& buf = scratch();
  buf.assign(kHeaderReserve, '\0');
  buf.append(buffer.data() + offset, n);
  send_framed(buf);
}

std::string Connection::recv_bytes(std::optional<std::size_t> maxlength) {
  return recv_message(std::min(maxlength.value_or(max_message_size()), max_message_size()));
}

std::size_t Connection::recv_bytes_into(std::span<std::byte> buffer, std::size_t offset) {
  if (offset > buffer.size()) throw std::invalid_argument("offset too large");
  std::string message = recv_message(max_message_size());
  if (message.size() > buffer.size() - offset) throw BufferTooShort(std::move(message));
  if (!message.empty()) std::memcpy(buffer.data() + offset, message.data(), message.size());
  return message.size();
}

bool Connection::poll_for(std::chrono::nanoseconds timeout) {
  if (!state_) throw_closed();
  const platform::Handle fd = state_->check_readable();
  if (state_->pipe) return state_->pipe->poll(&timeout);
  return platform::wait_readable(fd, &timeout);
}

void Connection::close() noexcept {
  if (state_) state_->close();
}
bool Connection::closed() const noexcept {
  return !state_ || state_->fd == platform::kInvalidHandle;
}
bool Connection::readable() const noexcept { return state_ && state_->readable; }
bool Connection::writable() const noexcept { return state_ && state_->writable; }
std::intptr_t Connection::fileno() const {
  if (closed()) throw_closed();
  if (state_->pipe && state_->readable) return state_->pipe->fileno();
  return state_->fd;
}
std::size_t Connection::max_message_size() const noexcept {
  return state_ ? state_->max_message : kDefaultMaxMessage;
}
void Connection::set_max_message_size(std::size_t size) {
  if (!state_) throw_closed();
  state_->max_message = size;
}

std::uint64_t Connection::send_socket() const {
  if (closed()) throw_closed();
  return reduction::send_handle(state_->fd, "Connection");
}
const heap::SharedBlock* Connection::pipe_rings() const {
  return state_ && state_->pipe ? state_->pipe->block() : nullptr;
}
std::int32_t Connection::pipe_end() const {
  return state_ && state_->pipe ? state_->pipe->end() : -1;
}

void Connection::attach(std::uint64_t socket, bool readable, bool writable, bool pipe,
                        heap::SharedBlock rings, std::int32_t end) {
  platform::ignore_sigpipe();
  Connection c(reduction::receive_handle(socket), readable, writable);
  if (pipe) c.state_->pipe = detail::PipeChannel::attach(std::move(rings), end, c.state_->fd);
  *this = std::move(c);
}

std::pair<Connection, Connection> Pipe(bool duplex) {
  platform::ignore_sigpipe();  // as CPython at start-up; our own writes never raise it anyway
  const auto [s0, s1] = platform::socket_pair();
  Connection a(s0, true, duplex), b(s1, duplex, true);
  auto [c0, c1] = detail::PipeChannel::create(s0, s1, detail::PipeChannel::Storage::heap);
  detail::ConnectionAccess::set_pipe(a, std::move(c0));
  detail::ConnectionAccess::set_pipe(b, std::move(c1));
  return {std::move(a), std::move(b)};
}

namespace detail {
PipeChannel* ConnectionAccess::pipe(const Connection& c) noexcept {
  return c.closed() ? nullptr : c.state_->pipe.get();
}
void ConnectionAccess::set_pipe(Connection& c, std::unique_ptr<PipeChannel> pipe) noexcept {
  c.state_->pipe = std::move(pipe);
}
platform::Handle ConnectionAccess::socket(const Connection& c) noexcept {
  return c.state_ ? c.state_->fd : platform::kInvalidHandle;
}
}  // namespace detail

namespace connection {
namespace {

// A Listener's default address (CPython: arbitrary_address of the default family): an abstract
// Unix socket; on Windows a named pipe (AF_PIPE, as CPython there).
std::string arbitrary_unix_address() {
  unsigned char random[8];
  platform::random_bytes(random, sizeof random);
  static const char hex[] = "0123456789abcdef";
#ifdef _WIN32
  std::string name("\\\\.\\pipe\\mp-listener-");
#else
  std::string name("\0mp-listener-", 13);
#endif
  for (unsigned char c : random) {
    name += hex[c >> 4];
    name += hex[c & 15];
  }
  return name;
}

}  // namespace

struct Listener::State {
  platform::Handle fd = platform::kInvalidHandle;
  Address address;
  std::optional<Address> last_accepted;
  std::optional<std::string> authkey;
  std::chrono::nanoseconds handshake_timeout = std::chrono::seconds(10);
  // accept() calls take turns; the acceptor keeps the handshakes in progress between them.
  std::mutex accept_mutex;
  std::unique_ptr<detail::Acceptor> acceptor;
  ~State() { close(); }
  void close() noexcept {
    if (fd == platform::kInvalidHandle) return;
    if (std::unique_lock lk(accept_mutex, std::try_to_lock); lk) acceptor.reset();  // else: ~State
    platform::close_handle(fd);
    fd = platform::kInvalidHandle;
    if (const auto* path = std::get_if<std::string>(&address)) platform::unlink_path(*path);
  }
};

Listener::Listener(std::optional<Address> address, int backlog, std::optional<std::string> authkey)
    : state_(std::make_shared<State>()) {
  if (authkey && authkey->empty()) throw AuthenticationError("an empty authkey is not allowed");
  state_->authkey = std::move(authkey);
  state_->address = address.value_or(Address(arbitrary_unix_address()));
  if (auto* tcp = std::get_if<TcpAddress>(&state_->address)) {
    state_->fd = platform::listen_tcp(tcp->host, tcp->port, backlog);
    tcp->port = platform::local_port(state_->fd);
  } else {
    state_->fd = platform::listen_unix(std::get<std::string>(state_->address), backlog);
  }
}

Connection Listener::accept() {
  if (closed()) throw_closed();
  State& s = *state_;
  std::lock_guard lk(s.accept_mutex);
  if (s.fd == platform::kInvalidHandle) throw_closed();
  if (!s.acceptor)
    s.acceptor = std::make_unique<detail::Acceptor>(
        s.fd, detail::Acceptor::Options{s.authkey, s.handshake_timeout});
  detail::Acceptor::Outcome o = *s.acceptor->next({});
  // CPython: the peer's address from accept() — ("127.0.0.1", its port) for TCP. A Unix peer is
  // unnamed (CPython gives ""), so mp keeps the listener's path there.
  s.last_accepted = s.address;
  if (std::holds_alternative<TcpAddress>(s.address) && o.fd != platform::kInvalidHandle)
    if (auto peer = platform::peer_tcp_address(o.fd))
      s.last_accepted = TcpAddress{std::move(peer->first), peer->second};
  if (o.fd == platform::kInvalidHandle) throw AuthenticationError(o.error);
  return Connection(o.fd, true, true);
}

void Listener::close() noexcept {
  if (state_) state_->close();
}
bool Listener::closed() const noexcept { return !state_ || state_->fd == platform::kInvalidHandle; }
const Address& Listener::address() const { return state_->address; }
std::optional<Address> Listener::last_accepted() const { return state_->last_accepted; }
std::chrono::nanoseconds Listener::handshake_timeout() const noexcept {
  return state_->handshake_timeout;
}
void Listener::set_handshake_timeout(std::chrono::nanoseconds timeout) {
  if (timeout <= std::chrono::nanoseconds::zero())
    throw std::invalid_argument("handshake timeout must be positive");
  std::lock_guard lk(state_->accept_mutex);
  state_->handshake_timeout = timeout;
  if (state_->acceptor) state_->acceptor->set_handshake_timeout(timeout);
}
std::intptr_t Listener::fileno() const {
  if (closed()) throw_closed();
  return state_->fd;
}

Connection Client(const Address& address, std::optional<std::string> authkey) {
  if (authkey && authkey->empty()) throw AuthenticationError("an empty authkey is not allowed");
  detail::UniqueHandle fd{std::holds_alternative<TcpAddress>(address)
                              ? platform::connect_tcp(std::get<TcpAddress>(address).host,
                                                      std::get<TcpAddress>(address).port)
                              : platform::connect_unix(std::get<std::string>(address))};
  if (authkey) detail::authenticate_client(fd.get(), *authkey, std::chrono::seconds(10));
  return Connection(fd.release(), true, true);
}

// Pipe ends are ready when their ring holds a message (seen without a system call) or the peer
// closed; they are armed before the sleep so that a sender wakes their socket, and disarmed after.
// fileno() is not used: waiting never puts a connection in descriptor mode.
std::vector<Waitable> wait_for(const std::vector<Waitable>& objects,
                               const std::chrono::nanoseconds* timeout) {
  std::vector<Waitable> ready;
  for (const std::size_t i : wait_indexes(objects, timeout)) ready.push_back(objects[i]);
  return ready;
}

std::vector<std::size_t> wait_indexes(const std::vector<Waitable>& objects,
                                      const std::chrono::nanoseconds* timeout) {
  std::vector<platform::Handle> handles;
  std::vector<detail::PipeChannel*> pipes;
  handles.reserve(objects.size());
  pipes.reserve(objects.size());
  for (const Waitable& w : objects) {
    detail::PipeChannel* pipe = nullptr;
    if (const auto* c = std::get_if<Connection>(&w)) {
      if (c->closed()) throw_closed();
      pipe = c->readable() ? detail::ConnectionAccess::pipe(*c) : nullptr;
      handles.push_back(pipe ? pipe->socket() : detail::ConnectionAccess::socket(*c));
    } else if (const auto* p = std::get_if<Process>(&w)) {
      handles.push_back(static_cast<platform::Handle>(p->sentinel()));
    } else {
      handles.push_back(static_cast<platform::Handle>(std::get<std::intptr_t>(w)));
    }
    pipes.push_back(pipe);
  }
  const detail::Deadline deadline(timeout);
  const bool has_pipes = std::any_of(pipes.begin(), pipes.end(), [](auto* p) { return p; });
  platform::Nanos slice = detail::kSocketSliceMin;  // see kSocketSliceMax
  for (;;) {
    bool any = false;
    for (auto* pipe : pipes) any = any || (pipe && pipe->ready_now());
    bool armed = false;
    std::vector<bool> armed_here(objects.size(), false);
    if (!any) {
      for (std::size_t i = 0; i < pipes.size(); ++i)
        if (pipes[i]) armed_here[i] = pipes[i]->arm();
      armed = true;
      for (auto* pipe : pipes) any = any || (pipe && pipe->ready_now());
    }
    const platform::Nanos left =
        any ? platform::Nanos::zero() : deadline.left(has_pipes ? slice : platform::Nanos::max());
    slice = std::min(2 * slice, detail::kSocketSliceMax);
    const auto ready_idx =
        platform::wait_any(handles, any || has_pipes || !deadline.forever() ? &left : nullptr);
    std::vector<bool> socket_ready(objects.size(), false);
    for (const std::size_t i : ready_idx) socket_ready[i] = true;
    std::vector<std::size_t> ready;
    for (std::size_t i = 0; i < objects.size(); ++i) {
      if (pipes[i]) {
        if (armed) pipes[i]->finish_wait(socket_ready[i], armed_here[i]);
        if (pipes[i]->ready_now() || (socket_ready[i] && pipes[i]->ready())) ready.push_back(i);
      } else if (socket_ready[i]) {
        ready.push_back(i);
      }
    }
    if (!ready.empty() || deadline.passed()) return ready;
  }
}

}  // namespace connection
}  // namespace mp
