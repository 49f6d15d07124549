// The server side of the managers (lib/managers_server.hpp; CPython: managers.py Server).
#include "managers_server.hpp"

#include <optional>
#include <thread>
#include <vector>

#include "support/acceptor.hpp"
#include "support/forced_unwind.hpp"
#include "support/load_time_global.hpp"
#include "managers_wire.hpp"
#include "mp/connection.hpp"
#include "support/pipe_channel.hpp"
#include "platform/handle.hpp"
#include "platform/handle_passing.hpp"
#include "platform/io.hpp"
#include "platform/process.hpp"
#include "platform/system.hpp"
#include "platform/wait.hpp"

namespace mp::managers::detail {
namespace {

constexpr auto kHandshakeDeadline = std::chrono::seconds(10);

// ---------------------------------------------------------------- registry

// Filled at static-initialization time, so a spawned server finds the same types under the same
// names.
struct Registry {
  std::mutex mutex;
  std::map<std::string, TypeInfo> types;
  Registry() {
    register_builtins(types);
    platform::hold_across_fork(mutex);
  }
};

MP_LOAD_TIME_GLOBAL(Registry, g_registry);  // never destroyed: used until the process ends

}  // namespace

const TypeInfo* find_type(const std::string& name) {
  Registry& r = g_registry.get();
  std::lock_guard lk(r.mutex);
  auto it = r.types.find(name);
  return it == r.types.end() ? nullptr : &it->second;
}

bool register_type(const std::string& type_id, Factory factory, std::vector<MethodEntry> methods) {
  Registry& r = g_registry.get();
  std::lock_guard lk(r.mutex);
  auto [it, inserted] = r.types.try_emplace(type_id);
  if (!inserted) return true;  // the same registration seen from another translation unit
  it->second.factory = factory;
  for (const MethodEntry& m : methods) it->second.methods.emplace(m.name, m.invoke);
  return true;
}

// ---------------------------------------------------------------- server

ServerCore::ServerCore(std::string authkey, std::vector<Callable> callables)
    : authkey_(std::move(authkey)) {
  for (Callable& c : callables) {
    const std::string id = c.type_id;
    callables_.emplace(id, std::move(c));
  }
  auto [r, w] = platform::make_pipe();
  wake_read_ = r;
  wake_write_ = w;
}

ServerCore::~ServerCore() {
  platform::close_handle(wake_read_);
  platform::close_handle(wake_write_);
}

void ServerCore::serve(platform::Handle listener, platform::Handle owner,
                       platform::Handle control) {
  std::vector<platform::Handle> stop{wake_read_};
  if (owner != platform::kInvalidHandle) stop.push_back(owner);
  if (control != platform::kInvalidHandle) stop.push_back(control);
  mp::detail::Acceptor acceptor(
      listener, mp::detail::Acceptor::Options{authkey_, kHandshakeDeadline, true, true});
  for (;;) {
    std::optional<mp::detail::Acceptor::Outcome> o = acceptor.next(stop);
    if (!o) return;
    if (o->fd == platform::kInvalidHandle) continue;  // failed its handshake: already closed
    try {
      std::thread([this, c = o->fd] { handle_connection(c); }).detach();
    } catch (const std::exception&) {
      platform::close_handle(o->fd);
    }
  }
}

MP_CATCHES_FORCED_UNWIND std::string ServerCore::respond(std::string_view request, int client,
                                                         bool& stop) {
  std::string out(1, wire::kOk);
  try {
    dispatch(request, out, client, stop);
    wire::check_frame_size(out.size());
  } catch (const mp::detail::ForcedUnwind&) {
    throw;  // a method ended its thread (pthread_exit): this connection ends with it
  } catch (const std::exception& e) {
    out = wire::encode_error(platform::demangle(typeid(e).name()), e.what());
  } catch (...) {
    out = wire::encode_error("unknown exception", "");
  }
  return out;
}

void ServerCore::handle_connection(platform::Handle fd) {
  const std::optional<int> pid = platform::peer_pid(fd);
  platform::Handle peer = platform::kInvalidHandle;
  if (pid) {
    try {
      peer = platform::open_process(*pid);
    } catch (const std::exception&) {
    }
  }
  const int ledger_key = pid.value_or(0);
  {
    Connection conn(fd, true, true);
    if (pid) {
      // A local peer: its preamble (lib/managers_wire.hpp) may bring shared memory to talk through.
      char preamble = 0;
      std::vector<platform::Handle> fds;
      bool ok = false;
      try {
        ok = platform::receive_with_descriptors(fd, &preamble, 1, fds);
        if (ok && fds.size() == 1) {
          const platform::Handle memfd = fds[0];
          fds.clear();  // attach() owns it from here, failing or not
          mp::detail::ConnectionAccess::set_pipe(conn,
                                                 mp::detail::PipeChannel::attach(memfd, 1, fd));
        }
      } catch (const std::exception&) {
        ok = false;
      }
      for (platform::Handle h : fds) platform::close_handle(h);
      if (!ok) conn.close();
    }
    for (;;) {
      std::string request;
      try {
        request = conn.recv_bytes(wire::kMaxFrame);
      } catch (const std::exception&) {
        break;  // EOF, reset, or an oversized frame (the connection closed it): no resync
      }
      bool stop = false;
      const std::string response = respond(request, ledger_key, stop);
      try {
        conn.send_bytes(response);
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
  }
  // A local client process that died: drop the references it held (CPython keeps them).
  if (peer != platform::kInvalidHandle) {
    const platform::Nanos grace = std::chrono::milliseconds(500);
    if (platform::wait_readable(peer, &grace)) drop_references(ledger_key);
    platform::close_handle(peer);
  }
}

// Hosts what a method returns (a std::shared_ptr of an exposed type), for the calling client.
struct ServerCore::Host final : ObjectHost {
  ServerCore& core;
  int client;
  Host(ServerCore& c, int k) : core(c), client(k) {}
  std::uint64_t host(std::shared_ptr<void> object, const std::string& type_id) override {
    const TypeInfo* type = find_type(type_id);
    if (!type)
      throw std::invalid_argument("a method returned a '" + type_id +
                                  "', which is not exposed (MP_EXPOSE)");
    return core.add_object(std::move(object), type, type_id, client);
  }
};

std::uint64_t ServerCore::add_object(std::shared_ptr<void> object, const TypeInfo* type,
                                     std::string type_id, int client) {
  Entry e;
  e.object = std::move(object);
  e.type = type;
  e.type_id = std::move(type_id);
  e.refs = 1;
  std::lock_guard lk(mutex_);
  const std::uint64_t new_id = next_id_++;
  objects_.emplace(new_id, std::move(e));
  ++ledger_[client][new_id];
  return new_id;
}

void ServerCore::dispatch(std::string_view body, std::string& out, int client, bool& stop) {
  const wire::Request rq = wire::decode_request(body);
  const std::uint64_t id = rq.id;
  switch (rq.op) {
    case Op::call: {
      std::shared_ptr<void> object;
      const TypeInfo* type = nullptr;
      std::string type_id;
      {
        std::lock_guard lk(mutex_);
        auto it = objects_.find(id);
        if (it == objects_.end()) throw KeyError("no object with id " + std::to_string(id));
        object = it->second.object;
        type = it->second.type;
        type_id = it->second.type_id;
      }
      auto m = type->methods.find(std::string(rq.name));
      if (m == type->methods.end())
        throw std::invalid_argument("method '" + std::string(rq.name) + "' of '" + type_id +
                                    "' is not exposed");
      Host host(*this, client);
      out += m->second(object.get(), rq.args.data(), rq.args.size(), host);
      return;
    }
    case Op::create: {
      const std::string name(rq.name);
      if (auto c = callables_.find(name); c != callables_.end()) {
        const TypeInfo* type = find_type(c->second.hosted_type_id);
        if (!type) throw KeyError("unknown type id '" + c->second.hosted_type_id + "'");
        if (!rq.args.empty()) throw std::invalid_argument("'" + name + "' takes no arguments");
        std::shared_ptr<void> object = c->second.make();
        if (!object)
          throw std::invalid_argument("the callable of '" + name +
                                      "' returned a null std::shared_ptr");
        wire::put_raw(out, add_object(std::move(object), type, c->second.hosted_type_id, client));
        return;
      }
      const TypeInfo* type = find_type(name);
      if (!type) throw KeyError("unknown type id '" + name + "'");
      wire::put_raw(out,
                    add_object(type->factory(rq.args.data(), rq.args.size()), type, name, client));
      return;
    }
    case Op::incref: {
      std::lock_guard lk(mutex_);
      auto it = objects_.find(id);
      if (it == objects_.end()) throw KeyError("no object with id " + std::to_string(id));
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
      wire::put_raw(out, static_cast<std::uint64_t>(objects_.size()));
      return;
    }
    case Op::ping:
      return;
  }
  throw std::invalid_argument("unknown manager request " + std::to_string(static_cast<int>(rq.op)));
}

void ServerCore::drop_references(int client) {
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

}  // namespace mp::managers::detail
