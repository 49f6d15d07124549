// The forkserver (CPython: multiprocessing/forkserver.py): the server's loop, and the client's
// side that starts it and keeps an authenticated connection to it (mp/forkserver.hpp).
//
// The server is this executable started once by spawn (so it is single-threaded and holds no
// lock of the owner's threads). It listens on a Unix socket (mode 0600) in a private directory;
// each connection starts with the HMAC challenge of lib/support/auth.hpp, both ways, with the owner's
// authkey (once per connection, as CPython 3.14). A request is one message: a header, the
// descriptor numbers the child inherits, and the child's preparation data (spawn's), with
// descriptors attached (SCM_RIGHTS): on a connection's first request a pidfd of the requester (the
// children's parent_process()), then one end of the child's status socket, the handles of the
// target's arguments, and the requester's inheritable descriptors. The server forks; the child runs
// the target (lib/spawn.cpp, run_forkserver_child) and reports its bootstrap on the status socket;
// the server answers the request with the child's pid and a pidfd on it. The child writes its exit
// status on the status socket as it leaves, and the server writes it again once it has reaped the
// child (the only record of a child killed by a signal). So a start costs the requester one
// message each way, and a join one wake-up (on the pidfd) and one read. The server follows its owner's life through a pidfd and
// exits, removing its socket and directory, as soon as the owner has ended.
#include "mp/forkserver.hpp"

#include <cerrno>
#include <new>
#include <cstring>
#include <mutex>
#include <stdexcept>

#include "support/acceptor.hpp"
#include "support/auth.hpp"
#include "forkserver_impl.hpp"
#include "support/lifeline.hpp"
#include "support/load_time_global.hpp"
#include "support/unique_handle.hpp"
#include "mp/errors.hpp"
#include "platform/handle.hpp"
#include "platform/handle_passing.hpp"
#include "platform/io.hpp"
#include "platform/process.hpp"
#include "platform/shared_memory.hpp"
#include "platform/wait.hpp"
#include "process_impl.hpp"
#include "spawn_data.hpp"

namespace mp {
namespace detail {
namespace {

constexpr std::chrono::seconds kHandshakeTimeout{10};
constexpr char kRequest = 'F';

// A request: this header, `inherited` int32 descriptor numbers, then `data_size` bytes of
// preparation data. Attached to it: the requester's pidfd (when `with_parent`: a connection's first
// request), the status socket, the arguments' handles, then the requester's inheritable descriptors
// (stdio among them), which the child gets under those numbers, as a spawned child would.
struct RequestHeader {
  char tag = kRequest;
  std::uint8_t with_parent = 0;
  std::uint32_t inherited = 0;
  std::uint64_t data_size = 0;
};
// Preparation data beyond this is refused (it is the serialized arguments).
constexpr std::uint64_t kMaxRequestData = std::uint64_t{1} << 32;

struct ServerInit {
  std::string authkey;
  std::string path;
  std::string dir;
  int owner_pid = 0;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(authkey, path, dir, owner_pid);
  }
};

// ---------------------------------------------------------------- the server

struct RunningChild {
  platform::Handle pidfd;
  platform::Handle status;  // the child's status socket (its other end is the requester's)
};

struct Peer {
  platform::Handle conn;
  platform::Handle parent = platform::kInvalidHandle;  // the requester's pidfd, once sent
};

struct Server {
  platform::Handle listener;
  platform::Handle owner;
  ServerInit init;
  std::vector<Peer> connections;
  std::vector<RunningChild> children;

  // Every descriptor of the server: closed in a forked child.
  void close_all_in_child(const std::vector<platform::Handle>& keep) const noexcept {
    auto close_unless_kept = [&](platform::Handle h) {
      for (platform::Handle k : keep)
        if (k == h) return;
      platform::close_handle(h);
    };
    close_unless_kept(listener);
    close_unless_kept(owner);
    for (const Peer& p : connections) {
      close_unless_kept(p.conn);
      close_unless_kept(p.parent);
    }
    for (const RunningChild& c : children) {
      close_unless_kept(c.pidfd);
      close_unless_kept(c.status);
    }
  }

  [[noreturn]] void leave() noexcept {
    platform::unlink_path(init.path);
    platform::remove_directory(init.dir);
    platform::exit_now(0);
  }

  void accept_one() {
    const std::optional<platform::Handle> c = platform::try_accept(listener);
    if (!c) return;
    if (!platform::peer_is_same_user(*c)) {
      platform::close_handle(*c);
      return;
    }
    try {
      // Only the owner and its children can reach the 0600 socket; the deadline still bounds how
      // long a stuck one holds this single-threaded server.
      authenticate(*c, init.authkey, kHandshakeTimeout, /*server=*/true);
      connections.push_back({*c});
    } catch (const std::exception&) {
      platform::close_handle(*c);  // a wrong key or a silent peer runs nothing
    }
  }

  // One request; false when the connection is finished (EOF or a bad request).
  bool serve(Peer& peer) {
    RequestHeader header;
    std::vector<platform::Handle> fds;
    std::string body;
    bool got = false;
    try {
      got = platform::receive_with_descriptors(peer.conn, &header, sizeof header, fds);
      const std::size_t fixed = (header.with_parent ? 1 : 0) + 1;
      got = got && header.tag == kRequest && header.inherited <= platform::kMaxDescriptors &&
            header.data_size > 0 && header.data_size <= kMaxRequestData &&
            (header.with_parent != 0) == (peer.parent == platform::kInvalidHandle) &&
            header.inherited + fixed <= fds.size();
      if (got) {
        body.resize(header.inherited * sizeof(std::int32_t) + header.data_size);
        got = platform::receive_with_descriptors(peer.conn, body.data(), body.size(), fds);
      }
    } catch (const std::exception&) {
      got = false;
    }
    const std::size_t fixed = (header.with_parent ? 1 : 0) + 1;
    if (!got || header.inherited + fixed > fds.size()) {
      for (platform::Handle h : fds) platform::close_handle(h);
      return false;
    }
    if (header.with_parent) peer.parent = fds[0];
    const platform::Handle status = fds[fixed - 1];
    const std::vector<platform::Handle> handles(fds.begin() + static_cast<std::ptrdiff_t>(fixed),
                                                fds.end() - header.inherited);
    const std::vector<platform::Handle> inherited(fds.end() - header.inherited, fds.end());
    std::vector<std::int32_t> targets(header.inherited);
    std::memcpy(targets.data(), body.data(), targets.size() * sizeof(std::int32_t));
    const std::string_view data(body.data() + targets.size() * sizeof(std::int32_t),
                                header.data_size);
    std::int64_t reply = 0;
    platform::Handle pidfd = platform::kInvalidHandle;
    try {
      const int pid = platform::fork_process();
      if (pid == 0) {
        std::vector<platform::Handle> keep(fds.begin() + static_cast<std::ptrdiff_t>(fixed - 1),
                                           fds.end());
        keep.push_back(peer.parent);
        close_all_in_child(keep);
        platform::ignore_interrupts(false);
        run_forkserver_child(data, status, peer.parent, handles, inherited, targets);
      }
      pidfd = platform::open_process(pid);
      reply = pid;
    } catch (const std::system_error& e) {
      reply = -static_cast<std::int64_t>(e.code().value() ? e.code().value() : EAGAIN);
    }
    // The server keeps the status socket of a running child (for its exit status) and the
    // requester's pidfd; the rest was for the child.
    for (std::size_t i = fixed - 1; i < fds.size(); ++i)
      if (fds[i] != status || pidfd == platform::kInvalidHandle) platform::close_handle(fds[i]);
    try {
      std::vector<platform::Handle> answer;
      if (pidfd != platform::kInvalidHandle) answer.push_back(pidfd);
      platform::send_with_descriptors(peer.conn, &reply, sizeof reply, answer);
    } catch (const std::exception&) {
      // The requester is gone; the child runs anyway and is reaped below.
    }
    if (pidfd != platform::kInvalidHandle) children.push_back({pidfd, status});
    return true;
  }

  void reap(std::size_t i) {
    const RunningChild c = children[i];
    children.erase(children.begin() + static_cast<std::ptrdiff_t>(i));
    std::int32_t code = 255;
    try {
      if (const std::optional<int> r = platform::reap(c.pidfd, false)) code = *r;
    } catch (const std::exception&) {
    }
    char record[kExitRecordBytes] = {kExitTag};
    std::memcpy(record + 1, &code, sizeof code);
    try {
      platform::write_all(c.status, record, sizeof record);
    } catch (const std::exception&) {
      // Nobody waits for it any more.
    }
    platform::close_handle(c.status);
    platform::close_handle(c.pidfd);
  }

  [[noreturn]] void run() {
    for (;;) {
      std::vector<platform::Handle> waited{owner, listener};
      for (const Peer& p : connections) waited.push_back(p.conn);
      for (const RunningChild& c : children) waited.push_back(c.pidfd);
      const std::vector<std::size_t> ready = platform::wait_any(waited, nullptr);
      if (!ready.empty() && ready.front() == 0) leave();
      // From the back, so erasing keeps the earlier indexes valid.
      for (auto it = ready.rbegin(); it != ready.rend(); ++it) {
        const std::size_t i = *it;
        const std::size_t first_child = 2 + connections.size();
        if (i >= first_child) {
          reap(i - first_child);
        } else if (i >= 2) {
          Peer& peer = connections[i - 2];
          if (!serve(peer)) {
            platform::close_handle(peer.conn);
            platform::close_handle(peer.parent);
            connections.erase(connections.begin() + static_cast<std::ptrdiff_t>(i - 2));
          }
        } else if (i == 1) {
          accept_one();
        }
      }
    }
  }
};

// ---------------------------------------------------------------- the client

// This process's server (the one it started) and its connection to it. A forked child inherits
// the parent's record: it connects to the same server (with its own connection) while that
// runs, and starts its own otherwise.
struct ClientState {
  ClientState();
  std::mutex mutex;
  int owner_pid = 0;  // the process that started the server
  int server_pid = 0;
  platform::Handle server = platform::kInvalidHandle;  // a pidfd, in the owner only
  std::string path, dir, authkey;
  int connection_pid = 0;  // the process the connection belongs to
  platform::Handle connection = platform::kInvalidHandle;
  bool parent_sent = false;  // the server has this process's pidfd (sent with the first request)
};

// Never destroyed: used at exit by children's joins. Made while the library loads (no
// initialization guard a fork could copy half-taken).
MP_LOAD_TIME_GLOBAL(ClientState, g_client);

ClientState& client() { return g_client.get(); }

// A forked child gets a usable mutex even if another thread held it during the fork.
ClientState::ClientState() {
  platform::at_fork_in_child([] { new (&client().mutex) std::mutex; });
}

void drop_connection(ClientState& s) {
  platform::close_handle(s.connection);  // in a forked child: its copy of the parent's
  s.connection = platform::kInvalidHandle;
  s.connection_pid = 0;
  s.parent_sent = false;
}

// Reaps a server of ours that has ended, and forgets it.
bool server_alive(ClientState& s) {
  if (s.server_pid == 0) return false;
  if (s.owner_pid != platform::current_pid()) return true;  // a forked child: try to connect
  const platform::Nanos zero{0};
  if (!platform::wait_readable(s.server, &zero)) return true;
  try {
    platform::reap(s.server, true);
  } catch (const std::exception&) {
  }
  platform::close_handle(s.server);
  s.server = platform::kInvalidHandle;
  s.server_pid = 0;
  platform::unlink_path(s.path);
  platform::remove_directory(s.dir);
  return false;
}

void start_server(ClientState& s) {
  s.authkey = current_process().authkey();
  if (s.authkey.empty()) throw AuthenticationError("an empty authkey is not allowed");
  // On Linux an abstract socket: nothing in the file system, so a server ended by any signal
  // (SIGKILL to the program's group included) leaves nothing behind; peers of another user are
  // refused at accept. Elsewhere a socket in a private directory.
  s.path = platform::private_socket_address(s.dir);
  struct Owned {
    platform::Handle h = platform::kInvalidHandle;
    ~Owned() { platform::close_handle(h); }
  } listener, init, status_read, status_write;
  try {
    listener.h = platform::listen_unix(s.path, 128);
    const std::string bytes =
        reduction::dumps(ServerInit{s.authkey, s.path, s.dir, platform::current_pid()});
    init.h = platform::create_shared_memory(bytes.size());
    void* p = platform::map_shared(init.h, bytes.size());
    std::memcpy(p, bytes.data(), bytes.size());
    platform::unmap(p, bytes.size());
    std::tie(status_read.h, status_write.h) = platform::make_pipe();
    const std::string status = std::to_string(status_write.h);
    const int pid =
        platform::spawn_process(platform::executable_path(),
                                {platform::executable_display_path(), kForkserverMarker,
                                 std::to_string(listener.h), std::to_string(init.h), status},
                                kSpawnEnv, status, {listener.h, init.h, status_write.h});
    Popen server(pid, platform::open_process(pid));
    platform::close_handle(status_write.h);
    status_write.h = platform::kInvalidHandle;
    await_bootstrap(status_read.h, server);  // the server reports once it listens and watches us
    s.server = platform::duplicate_handle(server.sentinel());
    s.server_pid = pid;
    s.owner_pid = platform::current_pid();
  } catch (...) {
    platform::unlink_path(s.path);
    platform::remove_directory(s.dir);
    throw;
  }
}

platform::Handle connect(ClientState& s) {
  const platform::Handle c = platform::connect_unix(s.path);
  try {
    authenticate_client(c, s.authkey, kHandshakeTimeout);
  } catch (...) {
    platform::close_handle(c);
    throw;
  }
  return c;
}

}  // namespace

[[noreturn]] void forkserver_main(platform::Handle listener, platform::Handle init_fd,
                                  platform::Handle status) {
  platform::ignore_interrupts(true);
  platform::name_process_after_executable();
  try {
    platform::close_descriptors_except({listener, init_fd, status});
  } catch (const std::exception&) {
  }
  platform::set_inheritable(status, false);
  Server server{listener, platform::kInvalidHandle, {}, {}, {}};
  try {
    const std::size_t size = platform::shared_memory_size(init_fd);
    void* p = platform::map_shared(init_fd, size);
    server.init = reduction::loads<ServerInit>(std::string_view(static_cast<const char*>(p), size));
    platform::unmap(p, size);
    platform::close_handle(init_fd);
    server.owner = open_parent(server.init.owner_pid);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mp forkserver: %s\n", e.what());
    platform::exit_now(1);
  }
  if (server.owner == platform::kInvalidHandle) server.leave();  // the owner is gone already
  const char ready = 0;
  try {
    platform::write_all(status, &ready, 1);
  } catch (const std::exception&) {
  }
  platform::close_handle(status);
  server.run();
}

// A connection to this process's server, started if needed; `fresh`: a new one (the previous
// failed). Called with the client lock held.
platform::Handle forkserver_connection(bool fresh) {
  ClientState& s = client();
  if (fresh || s.connection_pid != platform::current_pid()) drop_connection(s);
  if (s.connection != platform::kInvalidHandle) return s.connection;
  if (!server_alive(s)) start_server(s);
  try {
    s.connection = connect(s);
  } catch (const std::exception&) {
    if (s.owner_pid == platform::current_pid()) throw;
    // A forked child whose parent's server is gone (or refuses it): one of its own.
    s.server_pid = 0;
    start_server(s);
    s.connection = connect(s);
  }
  s.connection_pid = platform::current_pid();
  return s.connection;
}

std::mutex& forkserver_mutex() { return client().mutex; }

// Sends a request; returns the child's pid and pidfd. Throws OSError (the fork failed in the
// server) or EOFError/OSError when the server is gone.
std::pair<int, platform::Handle> forkserver_request(bool fresh, const std::string& data,
                                                    std::vector<platform::Handle> fds,
                                                    const std::vector<platform::Handle>& inherited,
                                                    const std::function<void()>& sent) {
  ClientState& s = client();
  const platform::Handle conn = forkserver_connection(fresh);
  if (fds.size() + inherited.size() + 1 > platform::kMaxDescriptors)
    throw ProcessError("mp forkserver: too many descriptors to pass to the child (" +
                       std::to_string(fds.size() + inherited.size()) + ")");
  if (data.empty() || data.size() > kMaxRequestData)
    throw ProcessError("mp forkserver: the child's arguments are too large to pass (" +
                       std::to_string(data.size()) + " bytes)");
  fds.insert(fds.end(), inherited.begin(), inherited.end());
  RequestHeader header;
  header.inherited = static_cast<std::uint32_t>(inherited.size());
  header.data_size = data.size();
  UniqueHandle self;
  if (!s.parent_sent) {
    self.reset(platform::open_process(platform::current_pid()));
    fds.insert(fds.begin(), self.get());
    header.with_parent = 1;
  }
  std::string request;
  request.reserve(sizeof header + inherited.size() * sizeof(std::int32_t) + data.size());
  request.append(reinterpret_cast<const char*>(&header), sizeof header);
  for (platform::Handle h : inherited) {
    const auto n = static_cast<std::int32_t>(h);
    request.append(reinterpret_cast<const char*>(&n), sizeof n);
  }
  request.append(data);
  platform::send_with_descriptors(conn, request.data(), request.size(), fds);
  s.parent_sent = true;
  sent();
  std::int64_t reply = 0;
  std::vector<platform::Handle> got;
  if (!platform::receive_with_descriptors(conn, &reply, sizeof reply, got))
    throw EOFError("mp forkserver: the server closed the connection");
  if (reply <= 0 || got.size() != 1) {
    for (platform::Handle h : got) platform::close_handle(h);
    platform::throw_error(reply < 0 ? static_cast<int>(-reply) : EPROTO,
                          "mp forkserver: cannot start the child");
  }
  return {static_cast<int>(reply), got[0]};
}

std::string forkserver_address() {
  ClientState& s = client();
  std::lock_guard lk(s.mutex);
  return s.server_pid ? s.path : std::string();
}

}  // namespace detail

namespace forkserver {

void ensure_running() {
  detail::ClientState& s = detail::client();
  std::lock_guard lk(s.mutex);
  detail::forkserver_connection(false);
}

std::optional<int> server_pid() {
  detail::ClientState& s = detail::client();
  std::lock_guard lk(s.mutex);
  if (s.owner_pid != platform::current_pid() || s.server_pid == 0) return std::nullopt;
  return s.server_pid;
}

}  // namespace forkserver
}  // namespace mp
