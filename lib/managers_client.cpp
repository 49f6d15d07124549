// The client side of the managers (lib/managers_client.hpp; CPython: managers.py BaseProxy).
#include "managers_client.hpp"

#include <atomic>
#include <chrono>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>

#include "mp/process.hpp"
#include "support/pipe_channel.hpp"
#include "support/thread_object.hpp"
#include "platform/handle.hpp"
#include "platform/handle_passing.hpp"
#include "platform/io.hpp"
#include "platform/process.hpp"
#include "platform/system.hpp"
#include "platform/wait.hpp"

namespace mp::managers::detail {
namespace {

// How long a proxy's disposal waits for the server to acknowledge its decref (the connection is
// then dropped, and the reference given up as CPython gives it up when its decref fails).
constexpr std::chrono::seconds kDecrefTimeout{10};

// Bumped by every shutdown in this process, so cached connections to a server that was shut
// down (and perhaps restarted on the same address) are not reused.
constinit std::atomic<std::uint64_t> g_epoch{0};

// Each thread keeps one connection per (address, authkey), as CPython's BaseProxy._tls. A
// connection is closed when it fails, when its thread ends, when the thread's manager shuts its
// server down (forget()), and otherwise when the thread next opens a connection after its server
// went away (sweep()): every manager has a new address, so a cache that only replaced entries on
// reuse kept one descriptor per manager lifecycle.
struct CachedConnection {
  Connection conn;
  std::uint64_t epoch;
};
std::string cache_key(const Address& address) {
  return address.is_tcp() ? address.host + '\n' + std::to_string(address.port) : address.path;
}
struct ConnectionCache {
  int pid = 0;
  std::map<std::pair<std::string, std::string>, CachedConnection> connections;  // (address, key)
  // A forked child: the inherited connections are the parent's (closing our copies is harmless).
  void adopt_after_fork() {
    if (pid == platform::current_pid()) return;
    connections.clear();
    pid = platform::current_pid();
  }
  // Closes the connections to servers shut down or gone.
  void sweep() {
    const std::uint64_t epoch = g_epoch.load();
    std::erase_if(connections, [epoch](const auto& entry) {
      const CachedConnection& c = entry.second;
      if (c.epoch != epoch || c.conn.closed()) return true;
      try {  // the socket itself: fileno() would put a Pipe end in descriptor mode
        return platform::peer_closed(mp::detail::ConnectionAccess::socket(c.conn));
      } catch (const std::exception&) {
        return true;
      }
    });
  }
  void forget(const Address& address) {
    std::erase_if(connections,
                  [k = cache_key(address)](const auto& entry) { return entry.first.first == k; });
  }
};
ConnectionCache& connection_cache() {
  return mp::detail::thread_object<ConnectionCache, ConnectionCache>();
}

Connection open_connection(const Address& address, const std::string& authkey) {
  Connection c;
  try {
    c = connection::Client(connection_address(address), authkey);
  } catch (const AuthenticationError& e) {
    throw AuthenticationError(std::string(e.what()) + " (the manager at " + address.to_string() +
                              ")");
  }
  if (!address.is_tcp()) {
    // A local server: the preamble byte carries the shared memory both sides then use as a Pipe
    // does (lib/pipe_channel.hpp), the socket keeping wake-ups and end of file.
    const platform::Handle sock = mp::detail::ConnectionAccess::socket(c);
    auto [mine, theirs] =
        mp::detail::PipeChannel::create(sock, sock, mp::detail::PipeChannel::Storage::memfd);
    theirs.reset();
    const char preamble = wire::kPreambleShared;
    platform::send_with_descriptors(sock, &preamble, 1, {mine->memfd()});
    mp::detail::ConnectionAccess::set_pipe(c, std::move(mine));
  }
  return c;
}

}  // namespace

connection::Address connection_address(const Address& address) {
  if (!address.is_tcp()) return address.path;
  if (address.port < 0 || address.port > 65535)
    throw std::invalid_argument("TCP port out of range: " + std::to_string(address.port));
  return connection::TcpAddress{address.host, static_cast<std::uint16_t>(address.port)};
}

std::string request(const Address& address, const std::string& authkey, Op op, std::uint64_t id,
                    std::string_view name, std::string_view args) {
  ConnectionCache& cache = connection_cache();
  cache.adopt_after_fork();
  wire::check_frame_size(1 + 8 + 4 + name.size() + args.size());  // before anything is sent
  auto key = std::make_pair(cache_key(address), authkey);
  const std::uint64_t epoch = g_epoch.load();
  auto it = cache.connections.find(key);
  if (it != cache.connections.end() && it->second.epoch != epoch) {
    cache.connections.erase(it);
    it = cache.connections.end();
  }
  if (it == cache.connections.end()) {
    cache.sweep();  // rare: a new connection (one syscall per cached connection)
    it = cache.connections
             .emplace(std::move(key), CachedConnection{open_connection(address, authkey), epoch})
             .first;
  }
  std::string response;
  try {
    Connection& conn = it->second.conn;
    conn.send_bytes(wire::encode_request(op, id, name, args));
    // A decref runs no method of the user's: a live server answers at once. Bounded, so that
    // disposing of a proxy never waits forever on a server that died without its connection
    // being reset (Wine after TerminateProcess); a call may block as long as its method does.
    if (op == Op::decref && !conn.poll(kDecrefTimeout))
      throw TimeoutError("no answer to a decref within " + std::to_string(kDecrefTimeout.count()) +
                         " s");
    response = conn.recv_bytes(wire::kMaxFrame);
  } catch (const std::exception& e) {
    cache.connections.erase(it);
    throw EOFError("the manager's server at " + address.to_string() + " is gone (" + e.what() +
                   ")");
  }
  return wire::decode_response(std::move(response));
}

void forget_server(const Address& address) {
  g_epoch++;
  connection_cache().forget(address);
}

void drop_inherited_connections() { connection_cache().adopt_after_fork(); }

// ---------------------------------------------------------------- proxies

struct ProxyState {
  Address address;
  std::string authkey;
  std::uint64_t id = 0;
  std::string type_id;
  int owner_pid = 0;  // the process whose reference this is (0: none held)
  ~ProxyState() {
    if (owner_pid != platform::current_pid()) return;  // a forked child uses its parent's reference
    try {
      request(address, authkey, Op::decref, id);
    } catch (...) {
      // The server is gone: nothing left to release.
    }
  }
};

namespace {
std::shared_ptr<ProxyState> make_state(Address address, std::string authkey, std::uint64_t id,
                                       std::string type_id, bool incref) {
  auto s = std::make_shared<ProxyState>();
  s->address = std::move(address);
  s->authkey = authkey.empty() ? current_process().authkey() : std::move(authkey);
  s->id = id;
  s->type_id = std::move(type_id);
  if (incref) request(s->address, s->authkey, Op::incref, id);
  s->owner_pid = platform::current_pid();
  return s;
}
}  // namespace

std::shared_ptr<ProxyState> load_proxy_state(Address address, std::string authkey, std::uint64_t id,
                                             std::string type_id) {
  return make_state(std::move(address), std::move(authkey), id, std::move(type_id), true);
}

std::shared_ptr<ProxyState> adopt_returned(const ProxyState& parent, std::uint64_t id,
                                           std::string type_id) {
  return make_state(parent.address, parent.authkey, id, std::move(type_id), false);
}

BaseProxy ProxyAccess::adopt(Address address, std::string authkey, std::uint64_t id,
                             std::string type_id) {
  return BaseProxy(
      make_state(std::move(address), std::move(authkey), id, std::move(type_id), false));
}

const Address& state_address(const ProxyState& s) noexcept { return s.address; }
const std::string& state_authkey(const ProxyState& s) noexcept { return s.authkey; }
std::uint64_t state_id(const ProxyState& s) noexcept { return s.id; }
const std::string& state_type_id(const ProxyState& s) noexcept { return s.type_id; }
std::string state_call(const ProxyState& s, const char* method, const std::string& args) {
  return request(s.address, s.authkey, Op::call, s.id, method, args);
}

}  // namespace mp::managers::detail

namespace mp::managers {

void BaseProxy::check() const {
  if (!state_)
    throw std::logic_error("mp: the proxy refers to no object (default-constructed or moved from)");
}
const Address& BaseProxy::address() const {
  check();
  return state_->address;
}
std::uint64_t BaseProxy::id() const {
  check();
  return state_->id;
}
const std::string& BaseProxy::type_id() const {
  check();
  return state_->type_id;
}

}  // namespace mp::managers
