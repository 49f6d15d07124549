// The spawn start method on POSIX (CPython: multiprocessing/popen_spawn_posix.py).
// The child is this executable run again (posix_spawn, lib/platform/spawn.hpp; not Boost.Process:
// see there) with the marker argument. Of the descriptors the library opens (all close-on-exec) it
// inherits exactly the preparation data, the status pipe and the handles of the shared objects
// passed as arguments.
// start() returns once the child reports that it is bootstrapped, or throws its error.
#include <cstring>

#include "mp/errors.hpp"
#include "platform/conn.hpp"
#include "platform/spawn.hpp"
#include "process_impl.hpp"
#include "reduction_impl.hpp"
#include "spawn_data.hpp"
#include "util_impl.hpp"

namespace mp::detail {
namespace {

CodeRef code_ref(AnyFunction f) {
  platform::CodeLocation loc = platform::locate_code(reinterpret_cast<const void*>(f));
  return {std::move(loc.module), std::move(loc.build_id), loc.offset};
}

struct OwnedHandle {
  platform::Handle h = platform::kInvalidHandle;
  OwnedHandle() = default;
  explicit OwnedHandle(platform::Handle x) : h(x) {}
  OwnedHandle(const OwnedHandle&) = delete;
  OwnedHandle& operator=(const OwnedHandle&) = delete;
  ~OwnedHandle() { reset(); }
  void reset() noexcept {
    platform::close_handle(h);
    h = platform::kInvalidHandle;
  }
};

}  // namespace

// Reads the child's bootstrap report; throws ProcessError with the child's message.
void await_bootstrap(platform::Handle status, Popen& child) {
  char tag = 0;
  if (platform::read_some(status, &tag, 1) == 1 && tag == 0) return;
  std::string message;
  if (tag == 1) {
    std::uint32_t n = 0;
    std::size_t got = 0;
    while (got < sizeof n) {
      const std::size_t r = platform::read_some(status, reinterpret_cast<char*>(&n) + got, sizeof n - got);
      if (r == 0) break;
      got += r;
    }
    message.resize(std::min<std::uint32_t>(n, 1u << 16));
    got = 0;
    while (got < message.size()) {
      const std::size_t r = platform::read_some(status, message.data() + got, message.size() - got);
      if (r == 0) break;
      got += r;
    }
    message.resize(got);
  }
  const std::optional<int> code = child.wait(nullptr);
  if (message.empty())
    message = "the spawned child exited with code " + (code ? std::to_string(*code) : std::string("?")) +
              " before it was bootstrapped (does its main() call mp::freeze_support(argc, argv) first?)";
  throw ProcessError(message);
}

void set_inherited_start_method(const std::string& method);

PreparationData prepare_child(ProcessState& state, std::vector<platform::Handle>& handles) {
  PreparationData d;
  d.name = state.name;
  d.identity = state.identity;
  d.daemon = state.daemon;
  d.authkey = state.authkey;
  d.parent_pid = platform::current_pid();
  d.parent_name = current_process().name();
  d.start_method = get_start_method();
  const LogSettings log = log_settings();
  d.log_level = log.level;
  d.log_to_stderr = log.to_stderr;
  if (state.target) {
    reduction::detail::SendScope scope(handles);
    SpawnTarget t = state.target->spawn_target();
    d.has_target = true;
    d.trampoline = code_ref(t.trampoline);
    d.function = code_ref(t.function);
    d.args = std::move(t.args);
  }
  d.handles.assign(handles.begin(), handles.end());
  return d;
}

std::unique_ptr<Popen> launch_spawn(ProcessState& state) {
  std::vector<platform::Handle> handles;
  const std::string bytes = reduction::dumps(prepare_child(state, handles));

  OwnedHandle data(platform::create_shared_memory(bytes.size()));
  {
    void* p = platform::map_shared(data.h, bytes.size());
    std::memcpy(p, bytes.data(), bytes.size());
    platform::unmap(p, bytes.size());
  }
  // Duplex: the child reports its bootstrap on it and first waits there for the parent's gate byte.
  auto [status_r, status_w] = platform::conn::socket_pair();
  OwnedHandle status_read(status_r), status_write(status_w);
  auto popen = std::make_unique<Popen>();

  std::vector<platform::Handle> inherit(handles.begin(), handles.end());
  inherit.push_back(data.h);
  inherit.push_back(status_write.h);
  const std::string exe = platform::executable_path();
  const std::string status = std::to_string(status_write.h);
  // Executed through /proc/self/exe (the very file this process runs, even if the path was since
  // replaced); argv[0] is the program's path, for ps and error messages.
  const int pid = platform::spawn_process(exe, {platform::executable_display_path(), kSpawnMarker, std::to_string(data.h), status}, kSpawnEnv,
                                          status, inherit);
  popen->started(pid, open_child_then_open_gate(pid, status_read.h));
  status_write.reset();
  data.reset();
  await_bootstrap(status_read.h, *popen);
  return popen;
}

}  // namespace mp::detail
