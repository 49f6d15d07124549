// mp/managers.hpp — multiprocessing.managers: a server process hosts objects, other processes use
// them through typed proxies (CPython: multiprocessing/managers.py).
//
//   struct UnsafeCounter { explicit UnsafeCounter(int c); int get(); void increment(); };
//   MP_EXPOSE(UnsafeCounter, (int), get, increment)          // at global scope, once per class
//   class CustomManager : public mp::BaseManager {
//    public:
//     MP_REGISTER(UnsafeCounter)                            // CustomManager.register('UnsafeCounter', ...)
//   };
//   CustomManager manager;  manager.start();                 // with CustomManager() as manager:
//   mp::Proxy<UnsafeCounter> counter = manager.UnsafeCounter(0);
//   counter.increment();  int v = counter.get();
//
// Guarantees:
// - Each client connection is served by its own thread in the server (as CPython): a hosted object
//   without its own lock races, one with a std::mutex/mp::Lock inside does not.
// - Arguments and results are checked at compile time against the exposed member function; an
//   exception thrown by it comes back as mp::RemoteError(type name, message). mp::Empty, mp::Full,
//   mp::TimeoutError, mp::BrokenBarrierError (blocking-call outcomes), mp::KeyError and
//   mp::IndexError (hosted dict/list lookups) come back as themselves.
// - Proxies are serializable (address, object id; the authkey only while spawning, as CPython) and
//   are passed to children as Process arguments under fork and spawn. Each process holding a proxy
//   holds one reference; the object is freed after the last one is dropped. References of a local
//   client process that dies are dropped when its connection closes.
// - The wire protocol names type ids and method names only; frames are capped (256 MiB) before
//   allocation, and a request over the cap is std::length_error before anything is sent; every
//   connection starts with the HMAC-SHA256 mutual challenge (a wrong key runs no handler), with a
//   10 s deadline for the whole exchange. The server runs the handshakes of all pending connections
//   side by side, so a slow or silent peer delays no one; out of descriptors it backs off (at most
//   100 ms) instead of spinning. Unix-socket peers of another user (but root) are refused.
// - The default address is an abstract Unix socket (Linux): nothing in the file system, so nothing
//   is left behind however the server ends. start() touches no process-wide state (no umask).
// - A server started by start() is a daemonic child: it ends with its owner (even if the owner is
//   SIGKILLed). It ignores SIGINT (as CPython: Ctrl-C reaches the whole process group; the owner
//   decides), and on SIGTERM/SIGHUP removes a socket file at a path address before dying.
//   A proxy whose server is gone throws mp::EOFError or mp::OSError instead of hanging. A thread's
//   cached connection to a server is closed when the server is shut down or gone.
// - Connections are the connection layer's (mp/connection.hpp): the server accepts as Listener
//   does, clients connect with Client(); messages are Connection frames.
// Python differences: MP_EXPOSE makes a class hostable by any manager of the program (its
// methods are type information); type ids registered with register_(typeid, callable) belong to
// one manager object; MP_REGISTER adds the creating method to a manager class. Methods of a
// hosted class must not be overloaded. A hosted method's result is copied, except a
// std::shared_ptr<U> of an exposed U, which stays in the server (CPython's method_to_typeid).
#pragma once

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "mp/context.hpp"
#include "mp/detail/managers_hosted.hpp"
#include "mp/detail/managers_registry.hpp"
#include "mp/errors.hpp"
#include "mp/export.hpp"
#include "mp/process.hpp"
#include "mp/reduction.hpp"
#include "mp/synchronize.hpp"

namespace mp {

// The proxy of a hosted T: specialized by MP_EXPOSE(T, ...) with T's exposed methods.
template <class T>
class Proxy;

namespace managers {

// A manager's address: a Unix socket path (local managers) or a TCP host and port (remote ones).
struct MP_API Address {
  std::string path;  // Unix socket; empty for TCP
  std::string host;
  int port = 0;

  Address() = default;
  Address(std::string unix_path) : path(std::move(unix_path)) {}  // NOLINT: like Python's str
  Address(const char* unix_path) : path(unix_path) {}             // NOLINT
  Address(std::string tcp_host, int tcp_port) : host(std::move(tcp_host)), port(tcp_port) {}
  bool is_tcp() const noexcept { return path.empty(); }
  std::string to_string() const;  // "/tmp/mp-x/listener" or "127.0.0.1:50000"
  friend bool operator==(const Address&, const Address&) = default;
  template <class A>
  void serialize(A& ar) {
    ar(path, host, port);
  }
};

// The part common to every proxy (CPython's BaseProxy): which object, on which server.
class MP_API BaseProxy {
 public:
  BaseProxy() = default;
  // The server's address, the object's id on it and its type id.
  const Address& address() const;
  std::uint64_t id() const;
  const std::string& type_id() const;
  explicit operator bool() const noexcept { return static_cast<bool>(state_); }

  template <class A>
  void save(A& ar) const {
    check();
    // CPython sends the authkey only to spawned children; others use their own authkey.
    const std::string key = reduction::spawning() ? detail::state_authkey(*state_) : std::string();
    ar(detail::state_address(*state_), key, detail::state_id(*state_),
       detail::state_type_id(*state_));
  }
  template <class A>
  void load(A& ar) {
    Address a;
    std::string key, type;
    std::uint64_t id = 0;
    ar(a, key, id, type);
    state_ = detail::load_proxy_state(std::move(a), std::move(key), id, std::move(type));
  }

 protected:
  // Calls exposed member M of the hosted object by name, with compile-time typed arguments.
  template <auto M, class... A>
  auto call(const char* method, A&&... a) const ->
      typename detail::CallResult<typename detail::MemberTraits<decltype(M)>::Result>::type {
    using T = detail::MemberTraits<decltype(M)>;
    using R = typename T::Result;
    check();
    std::string result = detail::state_call(
        *state_, method, detail::pack_args<typename T::Args>(std::forward<A>(a)...));
    if constexpr (std::is_void_v<R>) {
      if (!result.empty())
        throw UnpicklingError("corrupt data: a result from a method returning nothing");
    } else if constexpr (detail::IsSharedPtr<R>::value) {
      auto [id, type] = reduction::load_from<std::tuple<std::uint64_t, std::string>>(result.data(),
                                                                                     result.size());
      return Proxy<typename R::element_type>(
          BaseProxy(detail::adopt_returned(*state_, id, std::move(type))));
    } else {
      return reduction::load_from<R>(result.data(), result.size());
    }
  }

 private:
  friend struct detail::ProxyAccess;  // lib/managers_client.cpp: attaches a proxy to an object
  explicit BaseProxy(std::shared_ptr<detail::ProxyState> state) : state_(std::move(state)) {}
  void check() const;
  std::shared_ptr<detail::ProxyState> state_;
};

class Server;

// multiprocessing.managers.BaseManager. Not copyable; moving keeps the running server.
// Destroying a started manager shuts its server down (Python's `with` block).
class MP_API BaseManager {
 public:
  // address: default a new abstract Unix socket ("\0mp-<random>"); authkey: default
  // current_process().authkey(); ctx: the start method of the server process.
  explicit BaseManager(std::optional<Address> address = std::nullopt,
                       std::optional<std::string> authkey = std::nullopt,
                       std::optional<Context> ctx = std::nullopt);
  BaseManager(const BaseManager&) = delete;
  BaseManager& operator=(const BaseManager&) = delete;
  BaseManager(BaseManager&&) noexcept;
  BaseManager& operator=(BaseManager&&) noexcept;
  virtual ~BaseManager();

  // Starts the server process. Throws ProcessError "Already started server" when started,
  // OSError when the address cannot be bound.
  void start();
  // Connects to a server running elsewhere (checks the address and key: OSError,
  // AuthenticationError).
  void connect();
  // Stops the server started by start(): asks it to exit, waits shutdown_timeout, then
  // terminates/kills it. Idempotent.
  void shutdown();
  // Python's get_server(): a server in the calling process, for serve_forever().
  Server get_server();
  const Address& address() const;
  const std::string& authkey() const;
  // The number of objects the server hosts (CPython's _number_of_objects, a debug aid).
  std::size_t number_of_objects() const;
  // True between start() and shutdown() (Python's _state.value == State.STARTED).
  bool started() const noexcept;
  // The server process started by start() (CPython's manager._process); nullopt otherwise.
  std::optional<Process> process() const;

  // Creates a hosted T (exposed by the server with MP_EXPOSE; here MP_PROXY is enough) from
  // constructor arguments.
  template <class T, class... A>
  Proxy<T> create(A&&... a) {
    using P = detail::ProxyTraits<T>;
    std::string args = detail::pack_args<typename P::Args>(std::forward<A>(a)...);
    return Proxy<T>(make_object(P::type_id(), args));
  }
  // Python's manager.<typeid>() for a type id registered by register_() in the server: the
  // object the server's callable returns, as a proxy of T (its interface: MP_PROXY is enough).
  template <class T>
  Proxy<T> create_as(const std::string& type_id) {
    return Proxy<T>(make_object(type_id, {}));
  }

  // Python's register(typeid, callable): the manager's server creates an object under `type_id`
  // by calling `callable()`, which returns a std::shared_ptr<T> (T exposed with MP_EXPOSE); return
  // the same pointer to share one object (the documentation's `callable=lambda: queue`).
  // Registrations belong to this manager object (CPython: to the manager class) and are made
  // before start() or get_server(); a type id registered twice throws std::invalid_argument.
  // A server started under spawn or forkserver needs a function or a captureless lambda
  // (PicklingError at start() otherwise); fork and get_server() take any callable.
  template <class F>
  void register_(const std::string& type_id, F callable) {
    using R = std::invoke_result_t<F&>;
    static_assert(detail::IsSharedPtr<R>::value,
                  "mp: register_'s callable must return a std::shared_ptr<T>");
    using T = typename R::element_type;
    (void)detail::Hosted<T>::registered;  // the server needs T's methods: MP_EXPOSE(T, ...)
    detail::Callable c;
    c.type_id = type_id;
    c.hosted_type_id = detail::ProxyTraits<T>::type_id();
    c.make = [callable]() mutable { return std::static_pointer_cast<void>(callable()); };
    if constexpr (mp::detail::ToFunctionPointer<F>) {
      using Fn = decltype(+callable);
      c.function = reinterpret_cast<void (*)()>(+callable);
      c.thunk = &detail::call_factory<T, Fn>;
    }
    add_callable(std::move(c));
  }

 protected:
  // Creates an object of a registered type; returns the proxy base (reference already held).
  BaseProxy make_object(const std::string& type_id, const std::string& args) const;

 private:
  void add_callable(detail::Callable c);
  struct State;
  std::unique_ptr<State> state_;
};

// Python's Server: serves a manager's address (and its register_() type ids) in the calling
// process. Binds at construction, as CPython: address() has the port bound for TCP port 0.
// Throws OSError when the address cannot be bound.
class MP_API Server {
 public:
  Server(Address address, std::string authkey, std::vector<detail::Callable> callables = {});
  // Accepts and serves connections until a client calls shutdown(); then ends the calling
  // process with exit status 0 (as CPython's sys.exit(0)), since serving threads may still run.
  [[noreturn]] void serve_forever();
  const Address& address() const noexcept;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

// ---------------------------------------------------------------- SyncManager's proxies

namespace detail {

// CPython's AcquirerProxy: acquire(block[, timeout]) on the hosted Impl, and the C++ Lockable and
// TimedLockable names over it (Derived provides release()).
template <class Derived, class Impl>
class AcquirerProxy : public BaseProxy {
 public:
  AcquirerProxy() = default;
  explicit AcquirerProxy(BaseProxy b) : BaseProxy(std::move(b)) {}
  bool acquire(bool block = true) { return call<&Impl::acquire>("acquire", block, Timeout(-1)); }
  template <class Rep, class Period>
  bool acquire(bool block, std::chrono::duration<Rep, Period> timeout) {
    return call<&Impl::acquire>("acquire", block, to_timeout(timeout));
  }
  void lock() { acquire(); }
  void unlock() { static_cast<Derived&>(*this).release(); }
  bool try_lock() { return acquire(false); }
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> d) {
    return acquire(true, d);
  }
};

}  // namespace detail

// Lock and RLock proxies.
class MP_API LockProxy : public detail::AcquirerProxy<LockProxy, detail::LockImpl> {
 public:
  using AcquirerProxy::AcquirerProxy;
  // Throws RemoteError (RuntimeError) when the lock is not held (RLock: not held by this thread).
  void release() { call<&detail::LockImpl::release>("release"); }
  bool locked() { return call<&detail::LockImpl::locked>("locked"); }
};

class MP_API SemaphoreProxy : public detail::AcquirerProxy<SemaphoreProxy, detail::SemaphoreImpl> {
 public:
  using AcquirerProxy::AcquirerProxy;
  // BoundedSemaphore: RemoteError (ValueError "Semaphore released too many times").
  void release(int n = 1) { call<&detail::SemaphoreImpl::release>("release", n); }
  int get_value() { return call<&detail::SemaphoreImpl::get_value>("get_value"); }
};

// threading.Condition over a server-side RLock. wait() must be called holding it (RuntimeError).
class MP_API ConditionProxy : public detail::AcquirerProxy<ConditionProxy, detail::ConditionImpl> {
 public:
  using AcquirerProxy::AcquirerProxy;
  void release() { call<&detail::ConditionImpl::release>("release"); }
  bool wait() { return call<&detail::ConditionImpl::wait>("wait", detail::Timeout(-1)); }
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) {
    return call<&detail::ConditionImpl::wait>("wait", detail::to_timeout(timeout));
  }
  // As CPython's ConditionProxy.wait_for (evaluated here, in the caller, between remote waits):
  // waits until predicate() is true or the timeout has passed; returns predicate()'s last value.
  template <class Predicate>
  auto wait_for(Predicate predicate) {
    return mp::detail::wait_for_predicate(*this, predicate, nullptr);
  }
  template <class Predicate, class Rep, class Period>
  auto wait_for(Predicate predicate, std::chrono::duration<Rep, Period> timeout) {
    const auto t = mp::detail::to_nanos(timeout);
    return mp::detail::wait_for_predicate(*this, predicate, &t);
  }
  void notify(int n = 1) { call<&detail::ConditionImpl::notify>("notify", n); }
  void notify_all() { call<&detail::ConditionImpl::notify_all>("notify_all"); }
};

class MP_API EventProxy : public BaseProxy {
 public:
  EventProxy() = default;
  explicit EventProxy(BaseProxy b) : BaseProxy(std::move(b)) {}
  bool is_set() { return call<&detail::EventImpl::is_set>("is_set"); }
  void set() { call<&detail::EventImpl::set>("set"); }
  void clear() { call<&detail::EventImpl::clear>("clear"); }
  bool wait() { return call<&detail::EventImpl::wait>("wait", detail::Timeout(-1)); }
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) {
    return call<&detail::EventImpl::wait>("wait", detail::to_timeout(timeout));
  }
};

class MP_API BarrierProxy : public BaseProxy {
 public:
  BarrierProxy() = default;
  explicit BarrierProxy(BaseProxy b) : BaseProxy(std::move(b)) {}
  // Throws BrokenBarrierError when the barrier is broken, reset or the wait times out.
  int wait() { return call<&detail::BarrierImpl::wait>("wait", detail::Timeout(-1)); }
  template <class Rep, class Period>
  int wait(std::chrono::duration<Rep, Period> timeout) {
    return call<&detail::BarrierImpl::wait>("wait", detail::to_timeout(timeout));
  }
  void reset() { call<&detail::BarrierImpl::reset>("reset"); }
  void abort() { call<&detail::BarrierImpl::abort>("abort"); }
  int parties() { return call<&detail::BarrierImpl::parties>("parties"); }
  int n_waiting() { return call<&detail::BarrierImpl::n_waiting>("n_waiting"); }
  bool broken() { return call<&detail::BarrierImpl::broken>("broken"); }
};

// Namespace: named attributes of any serializable type. ns.set("x", 10); ns.get<int>("x").
// get<T> of a missing name throws RemoteError (AttributeError); of another type, UnpicklingError.
class MP_API NamespaceProxy : public BaseProxy {
 public:
  NamespaceProxy() = default;
  explicit NamespaceProxy(BaseProxy b) : BaseProxy(std::move(b)) {}
  template <class T>
  T get(const std::string& name) {
    return reduction::loads<T>(call<&detail::NamespaceImpl::getattr>("getattr", name));
  }
  template <class T>
  void set(const std::string& name, const T& value) {
    call<&detail::NamespaceImpl::setattr>("setattr", name, reduction::dumps(value));
  }
  void del(const std::string& name) { call<&detail::NamespaceImpl::delattr>("delattr", name); }
  bool has(const std::string& name) {
    return call<&detail::NamespaceImpl::hasattr>("hasattr", name);
  }
  std::vector<std::string> names() { return call<&detail::NamespaceImpl::names>("names"); }
};

template <class T>
class QueueProxy : public BaseProxy {
  using Impl = detail::QueueImpl<T>;

 public:
  QueueProxy() { (void)detail::AutoRegister<Impl>::done; }
  explicit QueueProxy(BaseProxy b) : BaseProxy(std::move(b)) {
    (void)detail::AutoRegister<Impl>::done;
  }
  // Throws Full when bounded and full (no block, or the timeout passed).
  void put(const T& item, bool block = true) {
    call<&Impl::put>("put", item, block, detail::Timeout(-1));
  }
  template <class Rep, class Period>
  void put(const T& item, bool block, std::chrono::duration<Rep, Period> timeout) {
    call<&Impl::put>("put", item, block, detail::to_timeout(timeout));
  }
  void put_nowait(const T& item) { put(item, false); }
  // Throws Empty when nothing arrives (no block, or the timeout passed).
  T get(bool block = true) { return call<&Impl::get>("get", block, detail::Timeout(-1)); }
  template <class Rep, class Period>
  T get(bool block, std::chrono::duration<Rep, Period> timeout) {
    return call<&Impl::get>("get", block, detail::to_timeout(timeout));
  }
  T get_nowait() { return get(false); }
  int qsize() { return call<&Impl::qsize>("qsize"); }
  bool empty() { return call<&Impl::empty>("empty"); }
  bool full() { return call<&Impl::full>("full"); }
};

template <class T>
class JoinableQueueProxy : public QueueProxy<T> {
  using Impl = detail::QueueImpl<T>;

 public:
  using QueueProxy<T>::QueueProxy;
  // Throws RemoteError (ValueError "task_done() called too many times").
  void task_done() { this->template call<&Impl::task_done>("task_done"); }
  void join() { this->template call<&Impl::join>("join", detail::Timeout(-1)); }
  // mp extension: join with a timeout; false if unfinished tasks remain.
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) {
    return this->template call<&Impl::join>("join", detail::to_timeout(timeout));
  }
};

template <class T>
class ValueProxy : public BaseProxy {
  using Impl = detail::ValueImpl<T>;

 public:
  ValueProxy() { (void)detail::AutoRegister<Impl>::done; }
  explicit ValueProxy(BaseProxy b) : BaseProxy(std::move(b)) {
    (void)detail::AutoRegister<Impl>::done;
  }
  T value() { return call<&Impl::get>("get"); }
  void set_value(const T& v) { call<&Impl::set>("set", v); }
  T get() { return value(); }
  void set(const T& v) { set_value(v); }
};

// list<T> proxy; Array<T> is a list of fixed length. Indices may be negative (Python's).
template <class T>
class ListProxy : public BaseProxy {
  using Impl = detail::ListImpl<T>;

 public:
  // `l[i]` reads and assigns through the proxy: T x = l[0]; l[0] = x;
  class Item {
   public:
    Item(ListProxy& l, std::int64_t i) : l_(l), i_(i) {}
    operator T() const { return l_.get(i_); }  // NOLINT
    Item& operator=(const T& v) {
      l_.set(i_, v);
      return *this;
    }

   private:
    ListProxy& l_;
    std::int64_t i_;
  };

  ListProxy() { (void)detail::AutoRegister<Impl>::done; }
  explicit ListProxy(BaseProxy b) : BaseProxy(std::move(b)) {
    (void)detail::AutoRegister<Impl>::done;
  }
  std::size_t size() { return static_cast<std::size_t>(call<&Impl::len>("len")); }
  // Throws mp::IndexError for a bad index (as Python).
  T get(std::int64_t i) { return call<&Impl::getitem>("getitem", i); }
  void set(std::int64_t i, const T& v) { call<&Impl::setitem>("setitem", i, v); }
  Item operator[](std::int64_t i) { return Item(*this, i); }
  void append(const T& v) { call<&Impl::append>("append", v); }
  void extend(const std::vector<T>& v) { call<&Impl::extend>("extend", v); }
  void insert(std::int64_t i, const T& v) { call<&Impl::insert>("insert", i, v); }
  T pop(std::int64_t i = -1) { return call<&Impl::pop>("pop", i); }
  // Throws RemoteError (std::invalid_argument "list.index(x): x not in list").
  std::int64_t index(const T& v) { return call<&Impl::index>("index", v); }
  std::int64_t count(const T& v) { return call<&Impl::count>("count", v); }
  bool contains(const T& v) { return call<&Impl::contains>("contains", v); }
  void remove(const T& v) { call<&Impl::remove>("remove", v); }
  void reverse() { call<&Impl::reverse>("reverse"); }
  void clear() { call<&Impl::clear>("clear"); }
  // Copy-out: list(proxy) in Python.
  std::vector<T> copy() { return call<&Impl::copy>("copy"); }
  std::vector<T> tolist() { return copy(); }
};

template <class T>
class ArrayProxy : public ListProxy<T> {
 public:
  using ListProxy<T>::ListProxy;
};

// dict<K, V> proxy. Keys keep their insertion order, as Python's dict.
template <class K, class V>
class DictProxy : public BaseProxy {
  using Impl = detail::DictImpl<K, V>;

 public:
  class Item {
   public:
    Item(DictProxy& d, K k) : d_(d), k_(std::move(k)) {}
    operator V() const { return d_.getitem(k_); }  // NOLINT
    Item& operator=(const V& v) {
      d_.setitem(k_, v);
      return *this;
    }

   private:
    DictProxy& d_;
    K k_;
  };

  DictProxy() { (void)detail::AutoRegister<Impl>::done; }
  explicit DictProxy(BaseProxy b) : BaseProxy(std::move(b)) {
    (void)detail::AutoRegister<Impl>::done;
  }
  std::size_t size() { return static_cast<std::size_t>(call<&Impl::len>("len")); }
  // d[k] read (getitem, delitem) throws mp::KeyError for a missing key (as Python).
  Item operator[](const K& k) { return Item(*this, k); }
  V getitem(const K& k) { return call<&Impl::getitem>("getitem", k); }
  void setitem(const K& k, const V& v) { call<&Impl::setitem>("setitem", k, v); }
  void delitem(const K& k) { call<&Impl::delitem>("delitem", k); }
  std::optional<V> get(const K& k) { return call<&Impl::get>("get", k); }
  V get(const K& k, const V& default_value) { return get(k).value_or(default_value); }
  std::optional<V> pop(const K& k) { return call<&Impl::pop>("pop", k); }
  V pop(const K& k, const V& default_value) { return pop(k).value_or(default_value); }
  V setdefault(const K& k, const V& v) { return call<&Impl::setdefault>("setdefault", k, v); }
  bool contains(const K& k) { return call<&Impl::contains>("contains", k); }
  // Python's d.update(other): pairs of `other` in its order (a std::map: sorted).
  void update(const std::map<K, V>& other) {
    update(std::vector<std::pair<K, V>>(other.begin(), other.end()));
  }
  void update(const std::vector<std::pair<K, V>>& other) { call<&Impl::update>("update", other); }
  void update(std::initializer_list<std::pair<K, V>> other) {
    update(std::vector<std::pair<K, V>>(other));
  }
  void clear() { call<&Impl::clear>("clear"); }
  // keys(), values() and items() are in insertion order, as Python's dict; copy() is sorted.
  std::vector<std::pair<K, V>> items() { return call<&Impl::items>("items"); }
  std::map<K, V> copy() {
    auto pairs = items();
    return {std::make_move_iterator(pairs.begin()), std::make_move_iterator(pairs.end())};
  }
  std::vector<K> keys() {
    std::vector<K> out;
    for (auto& kv : items()) out.push_back(std::move(kv.first));
    return out;
  }
  std::vector<V> values() {
    std::vector<V> out;
    for (auto& kv : items()) out.push_back(std::move(kv.second));
    return out;
  }
};

// multiprocessing.managers.SyncManager: the manager behind mp::Manager().
class MP_API SyncManager : public BaseManager {
 public:
  using BaseManager::BaseManager;

  LockProxy Lock() { return LockProxy(make_object("Lock", {})); }
  LockProxy RLock() { return LockProxy(make_object("RLock", {})); }
  SemaphoreProxy Semaphore(int value = 1) {
    return SemaphoreProxy(make_object("Semaphore", args(value)));
  }
  SemaphoreProxy BoundedSemaphore(int value = 1) {
    return SemaphoreProxy(make_object("BoundedSemaphore", args(value)));
  }
  ConditionProxy Condition() { return ConditionProxy(make_object("Condition", {})); }
  EventProxy Event() { return EventProxy(make_object("Event", {})); }
  BarrierProxy Barrier(int parties) { return BarrierProxy(make_object("Barrier", args(parties))); }
  NamespaceProxy Namespace() { return NamespaceProxy(make_object("Namespace", {})); }
  template <class T>
  QueueProxy<T> Queue(int maxsize = 0) {
    return QueueProxy<T>(
        make_object(detail::AutoRegister<detail::QueueImpl<T>>::type_id(), args(maxsize)));
  }
  template <class T>
  JoinableQueueProxy<T> JoinableQueue(int maxsize = 0) {
    return JoinableQueueProxy<T>(
        make_object(detail::AutoRegister<detail::QueueImpl<T>>::type_id(), args(maxsize)));
  }
  template <class T>
  ValueProxy<T> Value(const T& value) {
    return ValueProxy<T>(
        make_object(detail::AutoRegister<detail::ValueImpl<T>>::type_id(), args(value)));
  }
  // Python: Array(typecode, sequence or size); here the element type and the initial items or size.
  template <class T>
  ArrayProxy<T> Array(std::vector<T> items) {
    return ArrayProxy<T>(
        make_object(detail::AutoRegister<detail::ListImpl<T>>::type_id(), args(items)));
  }
  template <class T>
  ArrayProxy<T> Array(std::size_t size) {
    return Array<T>(std::vector<T>(size));
  }
  template <class T>
  ListProxy<T> list(std::vector<T> items = {}) {
    return ListProxy<T>(
        make_object(detail::AutoRegister<detail::ListImpl<T>>::type_id(), args(items)));
  }
  template <class K, class V>
  DictProxy<K, V> dict(const std::map<K, V>& items = {}) {
    DictProxy<K, V> d(make_object(detail::AutoRegister<detail::DictImpl<K, V>>::type_id(), {}));
    if (!items.empty()) d.update(items);
    return d;
  }

 private:
  template <class... A>
  static std::string args(const A&... a) {
    return detail::pack_args<std::tuple<A...>>(a...);
  }
};

}  // namespace managers

// multiprocessing.Manager(): a started SyncManager (default address, key and context).
MP_API managers::SyncManager Manager();
MP_API managers::SyncManager Manager(const Context& ctx);

using managers::BaseManager;
using managers::BaseProxy;
using managers::SyncManager;

}  // namespace mp

// ---------------------------------------------------------------- registration macros

// MP_PROXY(Class, (ctor parameter types), method, method, ...) — at global scope, once per class:
// defines mp::Proxy<Class> with a member per listed method (same name, same parameters, same
// result, checked at compile time; a method returning std::shared_ptr<U> returns mp::Proxy<U>,
// U kept in the server, as CPython's method_to_typeid). Class must be named from the global
// namespace (e.g. app::Counter, not ::app::Counter); its type id is the spelled name. A client needs only this and
// Class's declarations (CPython's client-side register('Class')). Up to 24 methods.
#define MP_PROXY(Class, CtorParams, ...)                                                     \
  template <>                                                                                \
  struct mp::managers::detail::ProxyTraits<::Class> {                                        \
    using Args = typename ::mp::managers::detail::CtorTraits<void(*) CtorParams>::Args;      \
    static std::string type_id() { return #Class; }                                          \
  };                                                                                         \
  template <>                                                                                \
  class mp::Proxy<::Class> : public ::mp::managers::BaseProxy {                              \
   public:                                                                                   \
    Proxy() = default;                                                                       \
    explicit Proxy(::mp::managers::BaseProxy b) : ::mp::managers::BaseProxy(std::move(b)) {} \
    MP_DETAIL_FOR_EACH(MP_DETAIL_PROXY_METHOD, ::Class, __VA_ARGS__)                         \
  };

// MP_EXPOSE(Class, (ctor parameter types), method, method, ...) — MP_PROXY, and makes Class
// hostable by a server of this program (Python's register(typeid, callable, exposed=...)): it is
// registered before main, so a spawned server finds it. Needs Class's definitions.
#define MP_EXPOSE(Class, CtorParams, ...)                                                       \
  MP_PROXY(Class, CtorParams, __VA_ARGS__)                                                      \
  template <>                                                                                   \
  struct mp::managers::detail::Hosted<::Class> {                                                \
    static inline const bool registered = ::mp::managers::detail::register_type(                \
        #Class,                                                                                 \
        &::mp::managers::detail::construct<::Class,                                             \
                                           ::mp::managers::detail::ProxyTraits<::Class>::Args>, \
        {MP_DETAIL_FOR_EACH(MP_DETAIL_ENTRY, ::Class, __VA_ARGS__)});                           \
  };

// MP_REGISTER(Class) inside a BaseManager subclass: adds `manager.Class(args...)`, which creates
// a hosted Class and returns its mp::Proxy<Class> (Python's CustomManager.register('Class', Class)).
// MP_REGISTER_AS(name, Class) names the method differently (e.g. for a class in a namespace).
#define MP_REGISTER_AS(name, Class)                                        \
  template <class... MpArgs>                                               \
  ::mp::Proxy<Class> name(MpArgs&&... mp_args) {                           \
    return this->template create<Class>(std::forward<MpArgs>(mp_args)...); \
  }
#define MP_REGISTER(Class) MP_REGISTER_AS(Class, ::Class)
// MP_REGISTER_TYPEID(name, Class) inside a BaseManager subclass: adds `manager.name()`, the object
// the server's register_("name", callable) returns, as mp::Proxy<Class> (CPython's client-side
// QueueManager.register('get_queue')). Class needs only MP_PROXY here.
#define MP_REGISTER_TYPEID(name, Class) \
  ::mp::Proxy<::Class> name() { return this->template create_as<::Class>(#name); }
