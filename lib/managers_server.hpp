// Internal: the server side of the managers (CPython: managers.py Server) — the registry of
// hostable types and the server core serving authenticated connections, one thread each.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "mp/managers.hpp"
#include "platform/handle.hpp"
#include "platform/handle_passing.hpp"
#include "platform/io.hpp"
#include "platform/process.hpp"
#include "platform/system.hpp"
#include "platform/wait.hpp"

namespace mp::managers::detail {

struct TypeInfo {
  Factory factory = nullptr;
  std::unordered_map<std::string, Invoker> methods;
};

// The registered type `name`, or nullptr. Entries are never removed: the pointer stays valid.
const TypeInfo* find_type(const std::string& name);
// SyncManager's built-in types (lib/managers_sync.cpp), put into the registry when it is made.
void register_builtins(std::map<std::string, TypeInfo>& types);

class ServerCore {
 public:
  // `callables`: the manager's register_() type ids, looked up before the program-wide types.
  explicit ServerCore(std::string authkey, std::vector<Callable> callables = {});
  ServerCore(const ServerCore&) = delete;
  ServerCore& operator=(const ServerCore&) = delete;
  ~ServerCore();

  // Serves until a client asks for shutdown, `owner` (a process handle, or invalid) ends, or
  // `control` (the read end of the owner's pipe, or invalid) becomes readable.
  // Handshakes run side by side in the accepting thread (lib/acceptor.hpp, the engine of
  // Listener::accept: a whole-handshake deadline; a slow or silent peer delays no one; Unix-socket
  // peers of other users are refused before any byte); each authenticated connection is then
  // served by its own thread as an mp::Connection. Out of descriptors, accepting backs off (at
  // most 100 ms) instead of spinning, and resumes by itself.
  void serve(platform::Handle listener, platform::Handle owner,
             platform::Handle control = platform::kInvalidHandle);

  // One request body to one response body: every exception becomes an error response, and a
  // response over the frame cap becomes a std::length_error response. `client` keys the
  // references taken (a peer pid); `stop` is set by a shutdown request.
  std::string respond(std::string_view request, int client, bool& stop);

 private:
  struct Entry {
    std::shared_ptr<void> object;
    const TypeInfo* type = nullptr;
    std::string type_id;
    std::int64_t refs = 0;
  };
  struct Host;
  std::uint64_t add_object(std::shared_ptr<void> object, const TypeInfo* type, std::string type_id,
                           int client);
  void handle_connection(platform::Handle fd);
  void dispatch(std::string_view request, std::string& out, int client, bool& stop);
  void drop_references(int client);

  std::string authkey_;
  std::map<std::string, Callable> callables_;
  platform::Handle wake_read_, wake_write_;
  std::mutex mutex_;
  std::unordered_map<std::uint64_t, Entry> objects_;
  std::uint64_t next_id_ = 1;
  std::map<int, std::map<std::uint64_t, std::int64_t>> ledger_;  // refs taken per client pid
};

}  // namespace mp::managers::detail
