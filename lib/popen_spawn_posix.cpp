// The spawn start method on POSIX (CPython: multiprocessing/popen_spawn_posix.py).
// The child is this executable run again (posix_spawn, lib/platform/process.hpp; not Boost.Process:
// see there) with the marker argument. Of the descriptors the library opens (all close-on-exec) it
// inherits exactly the preparation data, the status pipe and the handles of the shared objects
// passed as arguments.
// start() returns once the child reports that it is bootstrapped, or throws its error.
#include <cstring>

#include "support/framing.hpp"
#include "mp/errors.hpp"
#include "platform/handle.hpp"
#include "platform/io.hpp"
#include "platform/process.hpp"
#include "platform/shared_memory.hpp"
#include "platform/system.hpp"
#include "platform/wait.hpp"
#include "process_impl.hpp"
#include "reduction_impl.hpp"
#include "spawn_data.hpp"
#include "support/unique_handle.hpp"
#include "util_impl.hpp"

namespace mp::detail {

// Reads the child's bootstrap report; throws ProcessError with the child's message.
void await_bootstrap(platform::Handle status, Popen& child, char* other_tag) {
  char tag = 0;
  const bool got = platform::read_some(status, &tag, 1) == 1;
  if (got && tag == 0) return;
  if (got && tag > 1 && other_tag) *other_tag = tag;
  std::string message;
  // Reads `size` bytes, fewer only at EOF (a child that died mid-report).
  auto read_up_to = [status](char* data, std::size_t size) {
    std::size_t got = 0;
    for (std::size_t r = 1; got < size && r != 0; got += r)
      r = platform::read_some(status, data + got, size - got);
    return got;
  };
  char header[framing::kShortHeader];
  if (tag == 1 && read_up_to(header, sizeof header) == sizeof header) {
    message.resize(std::min<std::uint32_t>(framing::short_length(header),
                                           1u << 16));  // the long form is never sent
    message.resize(read_up_to(message.data(), message.size()));
  }
  const std::optional<int> code = child.wait(nullptr);
  if (message.empty())
    message = "the " + std::string(other_tag ? "forkserver's" : "spawned") +
              " child exited with code " + (code ? std::to_string(*code) : std::string("?")) +
              " before it was bootstrapped" +
              (other_tag ? "" : " (does its main() call mp::freeze_support(argc, argv) first?)");
  throw ProcessError(message);
}

void set_inherited_start_method(const std::string& method);

PreparationData prepare_child(ProcessState& state, std::vector<platform::Handle>& handles,
                              heap::detail::Lease& lease) {
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
    heap::detail::LeaseScope lease_scope(lease);
    SpawnTarget t = state.target->spawn_target();
    d.has_target = true;
    d.trampoline = CodeRef::of(t.trampoline);
    d.function = CodeRef::of(t.function);
    d.args = std::move(t.args);
  }
  d.handles.assign(handles.begin(), handles.end());
  return d;
}

platform::Handle write_preparation_data(ProcessState& state, std::vector<platform::Handle>& handles,
                                        heap::detail::Lease& lease) {
  const std::string bytes = reduction::dumps(prepare_child(state, handles, lease));
  UniqueHandle data(platform::create_shared_memory(bytes.size()));
  void* p = platform::map_shared(data.get(), bytes.size());
  std::memcpy(p, bytes.data(), bytes.size());
  platform::unmap(p, bytes.size());
  return data.release();
}

std::unique_ptr<Popen> launch_spawn(ProcessState& state) {
  std::vector<platform::Handle> handles;
  heap::detail::Lease lease;
  UniqueHandle data(write_preparation_data(state, handles, lease));
  // Duplex: the child reports its bootstrap on it and first waits there for the parent's gate byte.
  auto [status_r, status_w] = platform::socket_pair();
  UniqueHandle status_read(status_r), status_write(status_w);
  auto popen = std::make_unique<Popen>();
  popen->lease = std::move(lease);

  std::vector<platform::Handle> inherit(handles.begin(), handles.end());
  inherit.push_back(data.get());
  inherit.push_back(status_write.get());
  const std::string exe = platform::executable_path();
  const std::string status = std::to_string(status_write.get());
  // Executed through /proc/self/exe (the very file this process runs, even if the path was since
  // replaced); argv[0] is the program's path, for ps and error messages.
  const int pid = platform::spawn_process(
      exe, {platform::executable_display_path(), kSpawnMarker, std::to_string(data.get()), status},
      kSpawnEnv, status, inherit);
  popen->started(pid, open_child_then_open_gate(pid, status_read.get()));
  status_write.reset();
  data.reset();
  await_bootstrap(status_read.get(), *popen);
  return popen;
}

}  // namespace mp::detail
