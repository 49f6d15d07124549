// multiprocessing.managers (CPython: multiprocessing/managers.py): the registry of hostable
// types, the wire protocol, the server (one thread per connection), the client side of proxies,
// BaseManager and mp::Manager().
//
// Wire protocol (after the HMAC handshake of lib/auth.hpp), one request then one response:
//   frame    = u32 length, then `length` bytes (length capped at kMaxFrame before allocation)
//   request  = u8 op, u64 object id, u32 name length, name (type id or method name), arguments
//   response = u8 0, result bytes | u8 1, u32 type length, type name, message
// Nothing received is ever used as an address: types and methods are looked up by name.
#include "mp/managers.hpp"
#include "support/forced_unwind.hpp"
#include "support/lifeline.hpp"
#include "managers_wire.hpp"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include <thread>
#include <tuple>
#include <unordered_map>

#include "support/acceptor.hpp"
#include "support/auth.hpp"
#include "support/load_time_global.hpp"
#include "mp/process.hpp"
#include "platform/handle.hpp"
#include "platform/io.hpp"
#include "platform/process.hpp"
#include "platform/system.hpp"
#include "platform/wait.hpp"

namespace mp::managers {
namespace detail {
namespace {

constexpr std::uint32_t kMaxFrame = 256u << 20;  // 256 MiB
constexpr std::uint32_t kMaxName = 4096;
constexpr auto kHandshakeDeadline = std::chrono::seconds(10);
constexpr int kBacklog = 128;
using mp::detail::Acceptor;
using mp::detail::authenticate_client;

// ---------------------------------------------------------------- registry

struct TypeInfo {
  Factory factory = nullptr;
  std::unordered_map<std::string, Invoker> methods;
};

void register_builtins(std::map<std::string, TypeInfo>& r);

struct Registry {
  std::mutex mutex;
  std::map<std::string, TypeInfo> types;
  Registry() {
    register_builtins(types);
    platform::hold_across_fork(mutex);
  }
};

MP_LOAD_TIME_GLOBAL(Registry, g_registry);  // never destroyed: used until the process ends

Registry& registry() { return g_registry.get(); }

const TypeInfo* find_type(const std::string& name) {
  Registry& r = registry();
  std::lock_guard lk(r.mutex);
  auto it = r.types.find(name);
  return it == r.types.end() ? nullptr : &it->second;
}

// ---------------------------------------------------------------- sockets

// The TCP port of an address, checked (the socket layer takes 16 bits).
std::uint16_t port_of(const Address& a) {
  if (a.port < 0 || a.port > 65535) throw std::invalid_argument("TCP port out of range: " + std::to_string(a.port));
  return static_cast<std::uint16_t>(a.port);
}

// A listening socket at `a`: a Unix socket (the server admits peers of the same user only), or TCP
// (port 0 is replaced by the port bound).
platform::Handle listen_at(Address& a) {
  if (!a.is_tcp()) return platform::listen_unix(a.path, kBacklog);
  const platform::Handle fd = platform::listen_tcp(a.host, port_of(a), kBacklog);
  a.port = platform::local_port(fd);
  return fd;
}

// ---------------------------------------------------------------- frames

// Throws std::length_error (before anything is sent) for a frame over the cap, which the peer
// would refuse: a request whose arguments are too large, or a response (then sent as an error).
void check_frame_size(std::size_t size) {
  if (size > kMaxFrame)
    throw std::length_error("manager message of " + std::to_string(size) + " bytes exceeds the limit of " +
                            std::to_string(kMaxFrame));
}

void send_frame(platform::Handle fd, std::string& buf) {
  // `buf` starts with 4 reserved bytes for the length.
  check_frame_size(buf.size() - 4);
  const auto n = static_cast<std::uint32_t>(buf.size() - 4);
  std::memcpy(buf.data(), &n, 4);
  platform::write_all(fd, buf.data(), buf.size());
}

// Requests and responses strictly alternate, so one recv usually brings the whole frame; bytes
// beyond the frame are a protocol violation (UnpicklingError; the connection is then closed).
std::string recv_frame(platform::Handle fd) {
  char head[4096];
  std::size_t got = 0;
  while (got < 4) got += platform::recv_some(fd, head + got, sizeof head - got);
  std::uint32_t n = 0;
  std::memcpy(&n, head, sizeof n);
  if (n > kMaxFrame)
    throw UnpicklingError("manager frame of " + std::to_string(n) + " bytes exceeds the limit of " +
                          std::to_string(kMaxFrame));
  if (got - 4 > n) throw UnpicklingError("unexpected bytes after a manager frame");
  // The buffer grows with what has arrived (doubling from 1 MiB): a bogus length below the cap
  // makes the reader allocate at most 1 MiB or twice what the peer sent.
  std::string s(head + 4, got - 4);
  std::size_t have = s.size();
  while (have < n) {
    const std::size_t want = std::min<std::size_t>(n, have + std::max<std::size_t>(have, std::size_t{1} << 20));
    s.resize(want);
    platform::recv_exact(fd, s.data() + have, want - have);
    have = want;
  }
  return s;
}

template <class T>
void put_raw(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}
template <class T>
T get_raw(std::string_view& in) {
  if (in.size() < sizeof(T)) throw UnpicklingError("truncated manager message");
  T v;
  std::memcpy(&v, in.data(), sizeof v);
  in.remove_prefix(sizeof v);
  return v;
}
std::string_view get_bytes(std::string_view& in, std::uint32_t max) {
  const auto n = get_raw<std::uint32_t>(in);
  if (n > max || n > in.size()) throw UnpicklingError("corrupt manager message: bad length");
  std::string_view s = in.substr(0, n);
  in.remove_prefix(n);
  return s;
}

std::uint64_t this_thread_token() {
  static std::atomic<std::uint64_t> next{1};
  thread_local const std::uint64_t token = next++;
  return token;
}

// ---------------------------------------------------------------- server

class ServerCore {
 public:
  explicit ServerCore(std::string authkey) : authkey_(std::move(authkey)) {
    auto [r, w] = platform::make_pipe();
    wake_read_ = r;
    wake_write_ = w;
  }
  ServerCore(const ServerCore&) = delete;
  ServerCore& operator=(const ServerCore&) = delete;
  ~ServerCore() {
    platform::close_handle(wake_read_);
    platform::close_handle(wake_write_);
  }

  // Serves until a client asks for shutdown, `owner` (a process handle, or invalid) ends, or
  // `control` (the read end of the owner's pipe, or invalid) becomes readable.
  // Handshakes run side by side in the accepting thread (lib/acceptor.hpp: a whole-handshake
  // deadline; a slow or silent peer delays no one; peers of other users are refused before any
  // byte); each authenticated connection is then served by its own thread. Out of descriptors,
  // accepting backs off (at most 100 ms) instead of spinning, and resumes by itself.
  void serve(platform::Handle listener, platform::Handle owner, platform::Handle control = platform::kInvalidHandle) {
    std::vector<platform::Handle> stop{wake_read_};
    if (owner != platform::kInvalidHandle) stop.push_back(owner);
    if (control != platform::kInvalidHandle) stop.push_back(control);
    Acceptor acceptor(listener, Acceptor::Options{authkey_, kHandshakeDeadline, true, true});
    for (;;) {
      std::optional<Acceptor::Outcome> o = acceptor.next(stop);
      if (!o) return;
      if (o->fd == platform::kInvalidHandle) continue;  // failed its handshake: already closed
      try {
        std::thread([this, c = o->fd] { handle_connection(c); }).detach();
      } catch (const std::exception&) {
        platform::close_handle(o->fd);
      }
    }
  }

  // One request frame (without its length) to one response frame (4 bytes reserved for the
  // length, then the response): every exception becomes an error response.
  MP_CATCHES_FORCED_UNWIND std::string respond(const std::string& frame, int client, bool& stop) {
    std::string out(4, '\0');
    try {
      out.push_back('\0');
      dispatch(frame, out, client, stop);
      check_frame_size(out.size() - 4);
    } catch (const mp::detail::ForcedUnwind&) {
      throw;  // a method ended its thread (pthread_exit): this connection ends with it
    } catch (const std::exception& e) {
      out.resize(4);
      out.push_back('\1');
      const std::string type = platform::demangle(typeid(e).name());
      put_raw(out, static_cast<std::uint32_t>(type.size()));
      out += type;
      out += e.what();
    } catch (...) {
      out.resize(4);
      out.push_back('\1');
      const std::string type = "unknown exception";
      put_raw(out, static_cast<std::uint32_t>(type.size()));
      out += type;
    }
    return out;
  }

 private:
  struct Entry {
    std::shared_ptr<void> object;
    const TypeInfo* type = nullptr;
    std::string type_id;
    std::int64_t refs = 0;
  };

  // Serves one authenticated connection.
  void handle_connection(platform::Handle fd) {
    const std::optional<int> pid = platform::peer_pid(fd);
    platform::Handle peer = platform::kInvalidHandle;
    if (pid) {
      try {
        peer = platform::open_process(*pid);
      } catch (const std::exception&) {
      }
    }
    const int ledger_key = pid.value_or(0);
    for (;;) {
      std::string frame;
      try {
        frame = recv_frame(fd);
      } catch (const std::exception&) {
        break;  // EOF, reset, or an oversized frame: the stream cannot be resynchronized
      }
      bool stop = false;
      std::string out = respond(frame, ledger_key, stop);
      try {
        send_frame(fd, out);
      } catch (const std::exception&) {
        break;
      }
      if (stop) {
        const char b = 1;
        try {
          platform::write_all(wake_write_, &b, 1);
        } catch (const std::exception&) {
        }
      }
    }
    platform::close_handle(fd);
    // A local client process that died: drop the references it held (CPython keeps them).
    if (peer != platform::kInvalidHandle) {
      const platform::Nanos grace = std::chrono::milliseconds(500);
      if (platform::wait_readable(peer, &grace)) drop_references(ledger_key);
      platform::close_handle(peer);
    }
  }

  void dispatch(const std::string& frame, std::string& out, int client, bool& stop) {
    std::string_view in(frame);
    const auto op = static_cast<Op>(get_raw<std::uint8_t>(in));
    const auto id = get_raw<std::uint64_t>(in);
    const std::string name(get_bytes(in, kMaxName));
    switch (op) {
      case Op::call: {
        std::shared_ptr<void> object;
        const TypeInfo* type = nullptr;
        std::string type_id;
        {
          std::lock_guard lk(mutex_);
          auto it = objects_.find(id);
          if (it == objects_.end()) throw std::out_of_range("KeyError: no object with id " + std::to_string(id));
          object = it->second.object;
          type = it->second.type;
          type_id = it->second.type_id;
        }
        auto m = type->methods.find(name);
        if (m == type->methods.end())
          throw std::invalid_argument("method '" + name + "' of '" + type_id + "' is not exposed");
        out += m->second(object.get(), in.data(), in.size());
        return;
      }
      case Op::create: {
        const TypeInfo* type = find_type(name);
        if (!type) throw std::out_of_range("KeyError: unknown type id '" + name + "'");
        Entry e;
        e.object = type->factory(in.data(), in.size());
        e.type = type;
        e.type_id = name;
        e.refs = 1;
        std::lock_guard lk(mutex_);
        const std::uint64_t new_id = next_id_++;
        objects_.emplace(new_id, std::move(e));
        ++ledger_[client][new_id];
        put_raw(out, new_id);
        return;
      }
      case Op::incref: {
        std::lock_guard lk(mutex_);
        auto it = objects_.find(id);
        if (it == objects_.end()) throw std::out_of_range("KeyError: no object with id " + std::to_string(id));
        ++it->second.refs;
        ++ledger_[client][id];
        return;
      }
      case Op::decref: {
        std::shared_ptr<void> doomed;  // destroyed outside the lock
        std::lock_guard lk(mutex_);
        auto it = objects_.find(id);
        if (it == objects_.end()) return;
        auto l = ledger_.find(client);
        if (l != ledger_.end()) {
          auto r = l->second.find(id);
          if (r != l->second.end() && --r->second == 0) l->second.erase(r);
        }
        if (--it->second.refs <= 0) {
          doomed = std::move(it->second.object);
          objects_.erase(it);
        }
        return;
      }
      case Op::shutdown:
        stop = true;
        return;
      case Op::number_of_objects: {
        std::lock_guard lk(mutex_);
        put_raw(out, static_cast<std::uint64_t>(objects_.size()));
        return;
      }
      case Op::ping:
        return;
    }
    throw std::invalid_argument("unknown manager request " + std::to_string(static_cast<int>(op)));
  }

  void drop_references(int client) {
    std::vector<std::shared_ptr<void>> doomed;
    std::lock_guard lk(mutex_);
    auto l = ledger_.find(client);
    if (l == ledger_.end()) return;
    for (auto [id, n] : l->second) {
      auto it = objects_.find(id);
      if (it == objects_.end()) continue;
      it->second.refs -= n;
      if (it->second.refs <= 0) {
        doomed.push_back(std::move(it->second.object));
        objects_.erase(it);
      }
    }
    ledger_.erase(l);
  }

  std::string authkey_;
  platform::Handle wake_read_, wake_write_;
  std::mutex mutex_;
  std::unordered_map<std::uint64_t, Entry> objects_;
  std::uint64_t next_id_ = 1;
  std::map<int, std::map<std::uint64_t, std::int64_t>> ledger_;  // refs taken per client pid
};

// ---------------------------------------------------------------- client connections

// Bumped by every shutdown in this process, so cached connections to a server that was shut
// down (and perhaps restarted on the same address) are not reused.
std::atomic<std::uint64_t> g_epoch{0};

// Each thread keeps one connection per (address, authkey), as CPython's BaseProxy._tls. A
// connection is closed when it fails, when its thread ends, when the thread's manager shuts its
// server down (forget()), and otherwise when the thread next opens a connection after its server
// went away (sweep()): every manager has a new address, so a cache that only replaced entries on
// reuse kept one descriptor per manager lifecycle.
struct CachedConnection {
  platform::Handle fd;
  std::uint64_t epoch;
};
std::string cache_key(const Address& address) {
  return address.is_tcp() ? address.host + '\n' + std::to_string(address.port) : address.path;
}
struct ConnectionCache {
  int pid = 0;
  std::map<std::pair<std::string, std::string>, CachedConnection> connections;  // (address, key)
  ~ConnectionCache() {
    if (pid == platform::current_pid())
      for (auto& [k, c] : connections) platform::close_handle(c.fd);
  }
  // Closes the connections to servers shut down or gone.
  void sweep() {
    const std::uint64_t epoch = g_epoch.load();
    std::erase_if(connections, [epoch](const auto& entry) {
      const CachedConnection& c = entry.second;
      bool stale = c.epoch != epoch;
      try {
        stale = stale || platform::peer_closed(c.fd);
      } catch (const std::exception&) {
        stale = true;
      }
      if (stale) platform::close_handle(c.fd);
      return stale;
    });
  }
  void forget(const Address& address) {
    std::erase_if(connections, [k = cache_key(address)](const auto& entry) {
      if (entry.first.first != k) return false;
      platform::close_handle(entry.second.fd);
      return true;
    });
  }
};
thread_local ConnectionCache t_cache;

platform::Handle open_connection(const Address& address, const std::string& authkey) {
  const platform::Handle fd =
      address.is_tcp() ? platform::connect_tcp(address.host, port_of(address)) : platform::connect_unix(address.path);
  try {
    authenticate_client(fd, authkey, kHandshakeDeadline);
  } catch (const AuthenticationError& e) {
    platform::close_handle(fd);
    throw AuthenticationError(std::string(e.what()) + " (the manager at " + address.to_string() + ")");
  } catch (...) {
    platform::close_handle(fd);
    throw;
  }
  return fd;
}

// In a forked server: close the owner's client connections (to other managers) copied by fork,
// so those servers see EOF when the owner's copies close.
void drop_inherited_connections() {
  ConnectionCache& cache = t_cache;
  if (cache.pid == platform::current_pid()) return;
  for (auto& [k, c] : cache.connections) platform::close_handle(c.fd);
  cache.connections.clear();
  cache.pid = platform::current_pid();
}

[[noreturn]] void throw_remote(const std::string& type, const std::string& message) {
  if (type == "mp::Empty") throw Empty();
  if (type == "mp::Full") throw Full();
  if (type == "mp::BrokenBarrierError") throw BrokenBarrierError(message);
  if (type == "mp::TimeoutError") throw TimeoutError(message);
  throw RemoteError(type, message);
}

std::string exchange(platform::Handle fd, Op op, std::uint64_t id, const std::string& name, const std::string& args) {
  std::string buf(4, '\0');
  buf.reserve(4 + 1 + 8 + 4 + name.size() + args.size());
  put_raw(buf, static_cast<std::uint8_t>(op));
  put_raw(buf, id);
  put_raw(buf, static_cast<std::uint32_t>(name.size()));
  buf += name;
  buf += args;
  send_frame(fd, buf);
  return recv_frame(fd);
}

std::string decode_response(std::string response) {
  std::string_view in(response);
  const auto status = get_raw<std::uint8_t>(in);
  if (status == 0) return response.substr(1);
  const std::string type(get_bytes(in, kMaxName));
  throw_remote(type, std::string(in));
}

}  // namespace

bool register_type(const std::string& type_id, Factory factory, std::vector<MethodEntry> methods) {
  Registry& r = registry();
  std::lock_guard lk(r.mutex);
  auto [it, inserted] = r.types.try_emplace(type_id);
  if (!inserted) return true;  // the same registration seen from another translation unit
  it->second.factory = factory;
  for (const MethodEntry& m : methods) it->second.methods.emplace(m.name, m.invoke);
  return true;
}

std::string request(const Address& address, const std::string& authkey, Op op, std::uint64_t id,
                    const std::string& name, const std::string& args) {
  ConnectionCache& cache = t_cache;
  if (cache.pid != platform::current_pid()) {
    // A forked child: the inherited connections belong to the parent.
    for (auto& [k, c] : cache.connections) platform::close_handle(c.fd);
    cache.connections.clear();
    cache.pid = platform::current_pid();
  }
  check_frame_size(1 + 8 + 4 + name.size() + args.size());  // before anything is sent
  auto key = std::make_pair(cache_key(address), authkey);
  const std::uint64_t epoch = g_epoch.load();
  auto it = cache.connections.find(key);
  if (it != cache.connections.end() && it->second.epoch != epoch) {
    platform::close_handle(it->second.fd);
    cache.connections.erase(it);
    it = cache.connections.end();
  }
  if (it == cache.connections.end()) {
    cache.sweep();  // rare: a new connection (one syscall per cached connection)
    it = cache.connections.emplace(std::move(key), CachedConnection{open_connection(address, authkey), epoch}).first;
  }
  std::string response;
  try {
    response = exchange(it->second.fd, op, id, name, args);
  } catch (const std::exception& e) {
    platform::close_handle(it->second.fd);
    cache.connections.erase(it);
    throw EOFError("the manager's server at " + address.to_string() + " is gone (" + e.what() + ")");
  }
  return decode_response(std::move(response));
}

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
      request(address, authkey, Op::decref, id, {}, {});
    } catch (...) {
      // The server is gone: nothing left to release.
    }
  }
};

std::shared_ptr<ProxyState> make_proxy_state(Address address, std::string authkey, std::uint64_t id,
                                             std::string type_id, bool incref) {
  auto s = std::make_shared<ProxyState>();
  s->address = std::move(address);
  s->authkey = authkey.empty() ? current_process().authkey() : std::move(authkey);
  s->id = id;
  s->type_id = std::move(type_id);
  if (incref) request(s->address, s->authkey, Op::incref, id, {}, {});
  s->owner_pid = platform::current_pid();
  return s;
}

const Address& state_address(const ProxyState& s) noexcept { return s.address; }
const std::string& state_authkey(const ProxyState& s) noexcept { return s.authkey; }
std::uint64_t state_id(const ProxyState& s) noexcept { return s.id; }
const std::string& state_type_id(const ProxyState& s) noexcept { return s.type_id; }
std::string state_call(const ProxyState& s, const char* method, const std::string& args) {
  return request(s.address, s.authkey, Op::call, s.id, method, args);
}

// ---------------------------------------------------------------- SyncManager's types

bool LockImpl::acquire(bool block, Timeout timeout) {
  const std::uint64_t me = this_thread_token();
  std::unique_lock lk(m_);
  if (recursive_ && count_ > 0 && owner_ == me) {
    ++count_;
    return true;
  }
  auto free = [&] { return count_ == 0; };
  if (!free() && (!block || !wait_until_cv(cv_, lk, timeout, free))) return false;
  count_ = 1;
  owner_ = me;
  return true;
}

void LockImpl::release() {
  std::lock_guard lk(m_);
  if (recursive_) {
    if (count_ == 0 || owner_ != this_thread_token()) throw std::runtime_error("cannot release un-acquired lock");
  } else if (count_ == 0) {
    throw std::runtime_error("release unlocked lock");
  }
  if (--count_ == 0) {
    owner_ = 0;
    cv_.notify_one();
  }
}

bool LockImpl::locked() {
  std::lock_guard lk(m_);
  return count_ > 0;
}

SemaphoreImpl::SemaphoreImpl(int value, bool bounded) : value_(value), initial_(value), bounded_(bounded) {
  if (value < 0) throw std::invalid_argument("semaphore initial value must be >= 0");
}

bool SemaphoreImpl::acquire(bool block, Timeout timeout) {
  std::unique_lock lk(m_);
  auto ready = [&] { return value_ > 0; };
  if (!ready() && (!block || !wait_until_cv(cv_, lk, timeout, ready))) return false;
  --value_;
  return true;
}

void SemaphoreImpl::release(int n) {
  if (n < 1) throw std::invalid_argument("n must be one or more");
  std::lock_guard lk(m_);
  // Compared without forming value_ + n: n comes from a client and may be as large as INT_MAX.
  if (bounded_ && n > initial_ - value_) throw std::invalid_argument("Semaphore released too many times");
  if (n > INT_MAX - value_) throw std::overflow_error("semaphore value overflow");
  value_ += n;
  if (n == 1)
    cv_.notify_one();
  else
    cv_.notify_all();
}

int SemaphoreImpl::get_value() {
  std::lock_guard lk(m_);
  return value_;
}

bool ConditionImpl::acquire_locked(std::unique_lock<std::mutex>& lk, bool block, Timeout timeout) {
  const std::uint64_t me = this_thread_token();
  if (count_ > 0 && owner_ == me) {
    ++count_;
    return true;
  }
  auto free = [&] { return count_ == 0; };
  if (!free() && (!block || !wait_until_cv(lock_cv_, lk, timeout, free))) return false;
  count_ = 1;
  owner_ = me;
  return true;
}

bool ConditionImpl::acquire(bool block, Timeout timeout) {
  std::unique_lock lk(m_);
  return acquire_locked(lk, block, timeout);
}

void ConditionImpl::release() {
  std::lock_guard lk(m_);
  if (count_ == 0 || owner_ != this_thread_token()) throw std::runtime_error("cannot release un-acquired lock");
  if (--count_ == 0) {
    owner_ = 0;
    lock_cv_.notify_one();
  }
}

bool ConditionImpl::wait(Timeout timeout) {
  std::unique_lock lk(m_);
  const std::uint64_t me = this_thread_token();
  if (count_ == 0 || owner_ != me) throw std::runtime_error("cannot wait on un-acquired lock");
  const std::uint64_t ticket = next_ticket_++;
  waiters_.push_back(ticket);
  const std::size_t saved = count_;
  count_ = 0;
  owner_ = 0;
  lock_cv_.notify_one();
  auto notified = [&] { return std::find(waiters_.begin(), waiters_.end(), ticket) == waiters_.end(); };
  const bool ok = wait_until_cv(cond_cv_, lk, timeout, notified);
  if (!ok) waiters_.erase(std::find(waiters_.begin(), waiters_.end(), ticket));
  lock_cv_.wait(lk, [&] { return count_ == 0; });
  count_ = saved;
  owner_ = me;
  return ok;
}

void ConditionImpl::notify(int n) {
  std::lock_guard lk(m_);
  if (count_ == 0 || owner_ != this_thread_token()) throw std::runtime_error("cannot notify on un-acquired lock");
  for (int i = 0; i < n && !waiters_.empty(); ++i) waiters_.pop_front();
  cond_cv_.notify_all();
}

void ConditionImpl::notify_all() { notify(std::numeric_limits<int>::max()); }

bool EventImpl::is_set() {
  std::lock_guard lk(m_);
  return flag_;
}
void EventImpl::set() {
  std::lock_guard lk(m_);
  flag_ = true;
  cv_.notify_all();
}
void EventImpl::clear() {
  std::lock_guard lk(m_);
  flag_ = false;
}
bool EventImpl::wait(Timeout timeout) {
  std::unique_lock lk(m_);
  return wait_until_cv(cv_, lk, timeout, [&] { return flag_; });
}

BarrierImpl::BarrierImpl(int parties) : parties_(parties) {
  if (parties < 1) throw std::invalid_argument("parties must be >= 1");
}

int BarrierImpl::wait(Timeout timeout) {
  std::unique_lock lk(m_);
  if (broken_) throw BrokenBarrierError();
  const std::uint64_t gen = generation_;
  const int index = count_++;
  if (count_ == parties_) {
    count_ = 0;
    completed_ = gen;
    ++generation_;
    cv_.notify_all();
    return index;
  }
  const bool ok = wait_until_cv(cv_, lk, timeout, [&] { return generation_ != gen || broken_; });
  if (generation_ != gen) {
    if (completed_ == gen) return index;
    throw BrokenBarrierError();  // reset() while waiting
  }
  --count_;
  if (!ok) {
    broken_ = true;  // a timeout breaks the barrier for everyone (as threading.Barrier)
    cv_.notify_all();
  }
  throw BrokenBarrierError();
}

void BarrierImpl::reset() {
  std::lock_guard lk(m_);
  ++generation_;
  count_ = 0;
  broken_ = false;
  cv_.notify_all();
}
void BarrierImpl::abort() {
  std::lock_guard lk(m_);
  broken_ = true;
  cv_.notify_all();
}
int BarrierImpl::parties() { return parties_; }
int BarrierImpl::n_waiting() {
  std::lock_guard lk(m_);
  return count_;
}
bool BarrierImpl::broken() {
  std::lock_guard lk(m_);
  return broken_;
}

std::string NamespaceImpl::getattr(std::string name) {
  std::lock_guard lk(m_);
  auto it = attrs_.find(name);
  if (it == attrs_.end()) throw std::out_of_range("AttributeError: 'Namespace' object has no attribute '" + name + "'");
  return it->second;
}
void NamespaceImpl::setattr(std::string name, std::string value) {
  std::lock_guard lk(m_);
  attrs_[std::move(name)] = std::move(value);
}
void NamespaceImpl::delattr(std::string name) {
  std::lock_guard lk(m_);
  if (attrs_.erase(name) == 0)
    throw std::out_of_range("AttributeError: 'Namespace' object has no attribute '" + name + "'");
}
bool NamespaceImpl::hasattr(std::string name) {
  std::lock_guard lk(m_);
  return attrs_.count(name) != 0;
}
std::vector<std::string> NamespaceImpl::names() {
  std::lock_guard lk(m_);
  std::vector<std::string> out;
  for (auto& [k, v] : attrs_) out.push_back(k);
  return out;
}

namespace {

template <class T, class... A>
std::shared_ptr<void> make_with(const char* data, std::size_t size, A... fixed) {
  if constexpr (std::is_same_v<T, SemaphoreImpl> || std::is_same_v<T, BarrierImpl>) {
    auto [n] = load_args<std::tuple<int>>(data, size);
    return std::make_shared<T>(n, fixed...);
  } else {
    load_args<std::tuple<>>(data, size);
    return std::make_shared<T>(fixed...);
  }
}

void register_builtins(std::map<std::string, TypeInfo>& r) {
  auto add = [&r](const char* name, Factory f, std::vector<MethodEntry> methods) {
    TypeInfo& t = r[name];
    t.factory = f;
    for (const MethodEntry& m : methods) t.methods.emplace(m.name, m.invoke);
  };
  const std::vector<MethodEntry> lock{MP_DETAIL_METHOD(LockImpl, acquire), MP_DETAIL_METHOD(LockImpl, release),
                                      MP_DETAIL_METHOD(LockImpl, locked)};
  add("Lock", [](const char* d, std::size_t n) { return make_with<LockImpl>(d, n, false); }, lock);
  add("RLock", [](const char* d, std::size_t n) { return make_with<LockImpl>(d, n, true); }, lock);
  const std::vector<MethodEntry> sem{MP_DETAIL_METHOD(SemaphoreImpl, acquire),
                                     MP_DETAIL_METHOD(SemaphoreImpl, release),
                                     MP_DETAIL_METHOD(SemaphoreImpl, get_value)};
  add("Semaphore", [](const char* d, std::size_t n) { return make_with<SemaphoreImpl>(d, n, false); }, sem);
  add("BoundedSemaphore", [](const char* d, std::size_t n) { return make_with<SemaphoreImpl>(d, n, true); }, sem);
  add("Condition", [](const char* d, std::size_t n) { return make_with<ConditionImpl>(d, n); },
      {MP_DETAIL_METHOD(ConditionImpl, acquire), MP_DETAIL_METHOD(ConditionImpl, release),
       MP_DETAIL_METHOD(ConditionImpl, wait), MP_DETAIL_METHOD(ConditionImpl, notify),
       MP_DETAIL_METHOD(ConditionImpl, notify_all)});
  add("Event", [](const char* d, std::size_t n) { return make_with<EventImpl>(d, n); },
      {MP_DETAIL_METHOD(EventImpl, is_set), MP_DETAIL_METHOD(EventImpl, set), MP_DETAIL_METHOD(EventImpl, clear),
       MP_DETAIL_METHOD(EventImpl, wait)});
  add("Barrier", [](const char* d, std::size_t n) { return make_with<BarrierImpl>(d, n); },
      {MP_DETAIL_METHOD(BarrierImpl, wait), MP_DETAIL_METHOD(BarrierImpl, reset), MP_DETAIL_METHOD(BarrierImpl, abort),
       MP_DETAIL_METHOD(BarrierImpl, parties), MP_DETAIL_METHOD(BarrierImpl, n_waiting),
       MP_DETAIL_METHOD(BarrierImpl, broken)});
  add("Namespace", [](const char* d, std::size_t n) { return make_with<NamespaceImpl>(d, n); },
      {MP_DETAIL_METHOD(NamespaceImpl, getattr), MP_DETAIL_METHOD(NamespaceImpl, setattr),
       MP_DETAIL_METHOD(NamespaceImpl, delattr), MP_DETAIL_METHOD(NamespaceImpl, hasattr),
       MP_DETAIL_METHOD(NamespaceImpl, names)});
}

// ---------------------------------------------------------------- the server process

// A descriptor handed to the server process: inherited under fork, sent under spawn.
struct InheritedHandle {
  platform::Handle fd = platform::kInvalidHandle;
  template <class A>
  void save(A& ar) const {
    ar(reduction::send_handle(fd, "Manager listener"));
  }
  template <class A>
  void load(A& ar) {
    std::uint64_t token = 0;
    ar(token);
    fd = static_cast<platform::Handle>(reduction::receive_handle(token));
  }
};

void remove_socket(const Address& address, const std::string& private_dir) {
  if (!address.is_tcp()) platform::unlink_path(address.path);
  if (!private_dir.empty()) platform::remove_directory(private_dir);
}

// What the server removes when its owner dies (the daemon lifeline then ends it at once).
Address g_server_address;
std::string g_server_private_dir;

// The target of the server process: serves until shutdown() or until the owner ends.
void server_main(InheritedHandle listener, InheritedHandle owner, InheritedHandle control, std::string authkey,
                 Address address, std::string private_dir) {
  g_server_address = address;
  g_server_private_dir = private_dir;
  mp::detail::set_parent_death_hook(+[] { remove_socket(g_server_address, g_server_private_dir); });
  platform::protect_server_from_group_signals(address.is_tcp() ? std::string() : address.path, private_dir);
  drop_inherited_connections();
  {
    auto* core = new ServerCore(std::move(authkey));  // never destroyed: serving threads may still run
    core->serve(listener.fd, owner.fd, control.fd);
  }
  platform::close_handle(listener.fd);
  remove_socket(address, private_dir);
  platform::flush_stdio();
  platform::exit_now(0);
}

}  // namespace

// ---------------------------------------------------------------- for the fuzz targets

namespace wire {
std::string recv_frame(std::intptr_t fd) { return detail::recv_frame(static_cast<platform::Handle>(fd)); }
std::string decode_response(std::string response) { return detail::decode_response(std::move(response)); }
std::vector<std::string> serve_requests(const std::vector<std::string>& frames) {
  ServerCore core("");
  std::vector<std::string> responses;
  for (const std::string& f : frames) {
    bool stop = false;
    responses.push_back(core.respond(f, 0, stop).substr(4));
  }
  return responses;
}
}  // namespace wire
}  // namespace detail

// ---------------------------------------------------------------- Address, BaseProxy

std::string Address::to_string() const {
  if (!is_tcp()) return path[0] == '\0' ? "@" + path.substr(1) : path;  // abstract: as ss(8) shows it
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

void BaseProxy::check() const {
  if (!state_) throw std::logic_error("mp: the proxy refers to no object (default-constructed or moved from)");
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

// ---------------------------------------------------------------- BaseManager

struct BaseManager::State {
  Address address;
  bool default_address = false;
  std::string authkey;
  Context ctx;
  std::optional<Process> process;
  std::string private_dir;
  bool started = false;
  bool connected = false;
  int starter_pid = 0;  // only the process that started the server shuts it down
  // The write end of a pipe to the server: shutdown() writes one byte (no connection, handshake
  // or request needed: only the owner and its forked children have this descriptor).
  platform::Handle control = platform::kInvalidHandle;
  explicit State(Context c) : ctx(std::move(c)) {}
  ~State() { platform::close_handle(control); }
};

BaseManager::BaseManager(std::optional<Address> address, std::optional<std::string> authkey,
                         std::optional<Context> ctx)
    : state_(std::make_unique<State>(ctx ? *ctx : get_context())) {
  state_->default_address = !address;
  if (address) state_->address = *address;
  state_->authkey = authkey ? *authkey : current_process().authkey();
  if (state_->authkey.empty()) throw AuthenticationError("an empty authkey is not allowed");
}

BaseManager::BaseManager(BaseManager&&) noexcept = default;
BaseManager& BaseManager::operator=(BaseManager&& other) noexcept {
  if (this != &other) {
    try {
      shutdown();
    } catch (...) {
    }
    state_ = std::move(other.state_);
  }
  return *this;
}

BaseManager::~BaseManager() {
  try {
    shutdown();
  } catch (...) {
  }
}

void BaseManager::start() {
  State& s = *state_;
  if (s.started) throw ProcessError("Already started server");
  if (s.default_address) s.address = Address(platform::private_socket_address(s.private_dir));
  platform::Handle listener = platform::kInvalidHandle;
  platform::Handle owner = platform::kInvalidHandle;
  platform::Handle control_read = platform::kInvalidHandle;
  try {
    listener = detail::listen_at(s.address);
    owner = platform::open_process(platform::current_pid());
    platform::ignore_sigpipe();  // as CPython at start-up
    std::tie(control_read, s.control) = platform::make_pipe();
    // OpenSSL sets itself up lazily (milliseconds); doing it once here means a forked server
    // inherits it instead of paying it on its first handshake.
    (void)auth::hmac_sha256("mp", "warm-up");
    Process p(s.ctx, &detail::server_main, detail::InheritedHandle{listener}, detail::InheritedHandle{owner},
              detail::InheritedHandle{control_read}, s.authkey, s.address, s.private_dir);
    p.set_daemon(true);  // never outlives the owner's exit, even if never shut down
    p.start();
    s.process = std::move(p);
  } catch (...) {
    platform::close_handle(listener);
    platform::close_handle(owner);
    platform::close_handle(control_read);
    platform::close_handle(s.control);
    s.control = platform::kInvalidHandle;
    detail::remove_socket(s.address, s.private_dir);
    if (!s.private_dir.empty()) s.private_dir.clear();
    throw;
  }
  platform::close_handle(listener);
  platform::close_handle(owner);
  platform::close_handle(control_read);
  s.started = true;
  s.starter_pid = platform::current_pid();
}

void BaseManager::connect() {
  detail::request(state_->address, state_->authkey, detail::Op::ping, 0, {}, {});
  state_->connected = true;
}

void BaseManager::shutdown() {
  if (!state_ || !state_->started) return;
  State& s = *state_;
  if (s.starter_pid != platform::current_pid()) return;  // a forked copy of the manager object
  s.started = false;
  try {
    const char stop = 1;
    platform::write_all(s.control, &stop, 1);
  } catch (...) {
    // The server is gone already (EPIPE).
  }
  platform::close_handle(s.control);
  s.control = platform::kInvalidHandle;
  detail::g_epoch++;
  detail::t_cache.forget(s.address);
  if (s.process) {
    s.process->join(std::chrono::seconds(1));
    if (!s.process->exitcode()) {
      s.process->terminate();
      s.process->join(std::chrono::seconds(1));
    }
    if (!s.process->exitcode()) {
      s.process->kill();
      s.process->join();
    }
    s.process.reset();
  }
  detail::remove_socket(s.address, s.private_dir);
  s.private_dir.clear();
}

Server BaseManager::get_server() {
  State& s = *state_;
  if (s.default_address && s.address.path.empty() && s.address.host.empty())
    s.address = Address(platform::private_socket_address(s.private_dir));
  return Server(s.address, s.authkey);
}

const Address& BaseManager::address() const { return state_->address; }
const std::string& BaseManager::authkey() const { return state_->authkey; }
bool BaseManager::started() const noexcept { return state_ && state_->started; }
std::optional<Process> BaseManager::process() const { return state_ ? state_->process : std::nullopt; }

std::size_t BaseManager::number_of_objects() const {
  const std::string r = detail::request(state_->address, state_->authkey, detail::Op::number_of_objects, 0, {}, {});
  std::uint64_t n = 0;
  if (r.size() != sizeof n) throw UnpicklingError("corrupt manager response");
  std::memcpy(&n, r.data(), sizeof n);
  return static_cast<std::size_t>(n);
}

BaseProxy BaseManager::make_object(const std::string& type_id, const std::string& args) const {
  if (!state_ || (!state_->started && !state_->connected)) throw std::logic_error("server not yet started");
  const std::string r = detail::request(state_->address, state_->authkey, detail::Op::create, 0, type_id, args);
  std::uint64_t id = 0;
  if (r.size() != sizeof id) throw UnpicklingError("corrupt manager response");
  std::memcpy(&id, r.data(), sizeof id);
  return BaseProxy(state_->address, state_->authkey, id, type_id, false);
}

Server::Server(Address address, std::string authkey) : address_(std::move(address)), authkey_(std::move(authkey)) {}

void Server::serve_forever() {
  const platform::Handle listener = detail::listen_at(address_);
  auto* core = new detail::ServerCore(authkey_);  // never destroyed: serving threads may still run
  core->serve(listener, platform::kInvalidHandle);
  platform::close_handle(listener);
  if (!address_.is_tcp()) platform::unlink_path(address_.path);
  platform::flush_stdio();
  platform::exit_now(0);
}

}  // namespace mp::managers

namespace mp {

managers::SyncManager Manager() {
  managers::SyncManager m;
  m.start();
  return m;
}

managers::SyncManager Manager(const Context& ctx) {
  managers::SyncManager m(std::nullopt, std::nullopt, ctx);
  m.start();
  return m;
}

}  // namespace mp
