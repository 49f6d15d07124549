// multiprocessing.managers (CPython: multiprocessing/managers.py): BaseManager, its server
// process, Server and mp::Manager(). The parts: lib/managers_wire.* (the wire format),
// lib/managers_server.* (registry and server core), lib/managers_client.* (connections and
// proxies), lib/managers_sync.cpp (SyncManager's hosted types). Connections are the connection
// layer's (Listener's accept engine on the server, Client() on the client side).
#include "mp/managers.hpp"

#include <chrono>
#include <stdexcept>
#include <string>
#include <system_error>
#include <tuple>
#include <utility>

#include "support/lifeline.hpp"
#include "managers_client.hpp"
#include "managers_server.hpp"
#include "managers_wire.hpp"
#include "mp/process.hpp"
#include "platform/handle.hpp"
#include "platform/handle_passing.hpp"
#include "platform/io.hpp"
#include "platform/process.hpp"
#include "platform/system.hpp"
#include "platform/wait.hpp"

namespace mp::managers {
namespace detail {
namespace {

constexpr int kBacklog = 128;

// A listening socket at `a`, as Listener makes it: a Unix socket (the server admits peers of the
// same user only), or TCP (port 0 is replaced by the port bound).
platform::Handle listen_at(Address& a) {
  const connection::Address c = connection_address(a);
  if (const auto* path = std::get_if<std::string>(&c))
    return platform::listen_unix(*path, kBacklog);
  const platform::Handle fd =
      platform::listen_tcp(a.host, std::get<connection::TcpAddress>(c).port, kBacklog);
  a.port = platform::local_port(fd);
  return fd;
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

// A manager's register_() entries for its server process: as they are under fork; under spawn
// (and forkserver) their functions travel as code locations, as a Process target's do.
struct Callables {
  std::vector<Callable> list;
  template <class A>
  void save(A& ar) const {
    std::vector<std::tuple<std::string, std::string, std::string, std::string>> out;
    for (const Callable& c : list) {
      if (!c.function)
        throw PicklingError(
            "register_('" + c.type_id +
            "'): a server started by spawn or forkserver needs a function or a captureless lambda");
      out.emplace_back(c.type_id, c.hosted_type_id, code_of(c.function),
                       code_of(reinterpret_cast<void (*)()>(c.thunk)));
    }
    ar(out);
  }
  template <class A>
  void load(A& ar) {
    std::vector<std::tuple<std::string, std::string, std::string, std::string>> in;
    ar(in);
    list.clear();
    for (auto& [type_id, hosted, function, thunk] : in) {
      Callable c;
      c.type_id = std::move(type_id);
      c.hosted_type_id = std::move(hosted);
      c.function = resolve(function);
      c.thunk = reinterpret_cast<std::shared_ptr<void> (*)(void (*)())>(resolve(thunk));
      c.make = [f = c.function, t = c.thunk] { return t(f); };
      list.push_back(std::move(c));
    }
  }
  static std::string code_of(void (*f)()) {
    const platform::CodeLocation loc = platform::locate_code(reinterpret_cast<const void*>(f));
    return reduction::dumps(std::make_tuple(loc.module, loc.build_id, loc.offset));
  }
  static void (*resolve(const std::string& code))() {
    auto [module, build_id, offset] =
        reduction::loads<std::tuple<std::string, std::string, std::uint64_t>>(code);
    return reinterpret_cast<void (*)()>(
        platform::resolve_code(platform::CodeLocation{module, build_id, offset}));
  }
};

// Where a server that makes its own listener (!platform::kListenersTravel) reports to its owner:
// {0, 0, "", port} once listening, else the error that listen_at threw ({1: OSError of the
// system category, 2: of the generic one, 3: std::invalid_argument (a bad address), 4: another
// exception; its value; its text}).
using ListenReport = std::tuple<int, int, std::string, std::uint16_t>;

ListenReport listen_and_report(Address& address, platform::Handle& listener) {
  try {
    listener = listen_at(address);
    return {0, 0, std::string(), address.port};
  } catch (const OSError& e) {
    return {e.code().category() == std::generic_category() ? 2 : 1, e.code().value(), e.what(), 0};
  } catch (const std::invalid_argument& e) {
    return {3, 0, e.what(), 0};
  } catch (const std::exception& e) {
    return {4, 0, e.what(), 0};
  }
}

// The owner's side: waits for the report (bounded) and throws the server's error as it was
// thrown there, or sets the port bound.
void await_listening(platform::Handle report, Address& address) {
  const auto deadline = platform::Clock::now() + std::chrono::seconds(60);
  std::string bytes;
  char buf[512];
  while (const std::size_t n = platform::read_some_until(report, buf, sizeof buf, deadline))
    bytes.append(buf, n);
  if (bytes.empty()) throw ProcessError("the manager's server process ended before listening");
  const auto [kind, value, what, port] = reduction::loads<ListenReport>(bytes);
  if (kind == 1) throw OSError(value, what);
  if (kind == 2) throw OSError(std::error_code(value, std::generic_category()), what);
  if (kind == 3) throw std::invalid_argument(what);
  if (kind != 0) throw ProcessError(what);
  address.port = port;
}

// The target of the server process: serves until shutdown() or until the owner ends. `listener`
// is the listening socket, or where !platform::kListenersTravel the pipe to report on once this
// process listens at `address` itself.
void server_main(InheritedHandle listener, InheritedHandle owner, InheritedHandle control,
                 std::string authkey, Address address, std::string private_dir,
                 Callables callables) {
  if (!platform::kListenersTravel) {
    platform::Handle own = platform::kInvalidHandle;
    const ListenReport report = listen_and_report(address, own);
    const std::string bytes = reduction::dumps(report);
    try {
      platform::write_all(listener.fd, bytes.data(), bytes.size());
    } catch (const OSError&) {  // the owner is gone
    }
    platform::close_handle(listener.fd);
    if (std::get<0>(report) != 0) platform::exit_now(1);
    listener.fd = own;
  }
  g_server_address = address;
  g_server_private_dir = private_dir;
  mp::detail::set_parent_death_hook(+[] { remove_socket(g_server_address, g_server_private_dir); });
  platform::protect_server_from_group_signals(address.is_tcp() ? std::string() : address.path,
                                              private_dir);
  drop_inherited_connections();
  {
    // Never destroyed: serving threads may still run.
    auto* core = new ServerCore(std::move(authkey), std::move(callables.list));
    core->serve(listener.fd, owner.fd, control.fd);
  }
  platform::close_handle(listener.fd);
  remove_socket(address, private_dir);
  platform::flush_stdio();
  platform::exit_now(0);
}

}  // namespace
}  // namespace detail

// ---------------------------------------------------------------- Address

std::string Address::to_string() const {
  if (!is_tcp())
    return path[0] == '\0' ? "@" + path.substr(1) : path;  // abstract: as ss(8) shows it
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
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
  std::vector<detail::Callable> callables;  // register_()
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
  platform::Handle report = platform::kInvalidHandle;  // !kListenersTravel: the server reports
  try {
    if (platform::kListenersTravel)
      listener = detail::listen_at(s.address);
    else
      std::tie(report, listener) = platform::make_pipe();  // the write end goes to the server
    owner = platform::open_process(platform::current_pid());
    std::tie(control_read, s.control) = platform::make_pipe();
    Process p(s.ctx, &detail::server_main, detail::InheritedHandle{listener},
              detail::InheritedHandle{owner}, detail::InheritedHandle{control_read}, s.authkey,
              s.address, s.private_dir, detail::Callables{s.callables});
    p.set_daemon(true);  // never outlives the owner's exit, even if never shut down
    p.start();
    s.process = std::move(p);
    if (!platform::kListenersTravel) {
      platform::close_handle(std::exchange(listener, platform::kInvalidHandle));
      detail::await_listening(report, s.address);
      platform::close_handle(std::exchange(report, platform::kInvalidHandle));
    }
  } catch (...) {
    platform::close_handle(report);
    if (s.process) {  // started but not listening: it ends at once or at its first read
      s.process->kill();
      s.process->join();
      s.process.reset();
    }
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
  detail::request(state_->address, state_->authkey, detail::Op::ping, 0);
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
  detail::forget_server(s.address);
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
  Server server(s.address, s.authkey, s.callables);
  s.address = server.address();  // the port bound for TCP port 0
  return server;
}

void BaseManager::add_callable(detail::Callable c) {
  if (!state_) throw std::logic_error("mp: the manager was moved from");
  for (const detail::Callable& e : state_->callables)
    if (e.type_id == c.type_id)
      throw std::invalid_argument("type id '" + c.type_id + "' is already registered");
  state_->callables.push_back(std::move(c));
}

const Address& BaseManager::address() const { return state_->address; }
const std::string& BaseManager::authkey() const { return state_->authkey; }
bool BaseManager::started() const noexcept { return state_ && state_->started; }
std::optional<Process> BaseManager::process() const {
  return state_ ? state_->process : std::nullopt;
}

std::size_t BaseManager::number_of_objects() const {
  return static_cast<std::size_t>(detail::wire::get_u64(
      detail::request(state_->address, state_->authkey, detail::Op::number_of_objects, 0)));
}

BaseProxy BaseManager::make_object(const std::string& type_id, const std::string& args) const {
  if (!state_ || (!state_->started && !state_->connected))
    throw std::logic_error("server not yet started");
  const std::uint64_t id = detail::wire::get_u64(
      detail::request(state_->address, state_->authkey, detail::Op::create, 0, type_id, args));
  return detail::ProxyAccess::adopt(state_->address, state_->authkey, id, type_id);
}

struct Server::State {
  Address address;
  std::string authkey;
  std::vector<detail::Callable> callables;
  platform::Handle listener = platform::kInvalidHandle;
  ~State() { platform::close_handle(listener); }
};

Server::Server(Address address, std::string authkey, std::vector<detail::Callable> callables)
    : state_(std::make_shared<State>()) {
  state_->address = std::move(address);
  state_->authkey = std::move(authkey);
  state_->callables = std::move(callables);
  state_->listener = detail::listen_at(state_->address);
}

const Address& Server::address() const noexcept { return state_->address; }

void Server::serve_forever() {
  State& s = *state_;
  auto* core = new detail::ServerCore(
      s.authkey, s.callables);  // never destroyed: serving threads may still run
  core->serve(s.listener, platform::kInvalidHandle);
  platform::close_handle(s.listener);
  s.listener = platform::kInvalidHandle;
  if (!s.address.is_tcp()) platform::unlink_path(s.address.path);
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
