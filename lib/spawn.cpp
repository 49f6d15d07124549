// The child side of the spawn start method (CPython: multiprocessing/spawn.py):
// freeze_support() receives the preparation data, resolves the target, reports to the parent
// over the status pipe and runs the target.
#include "mp/spawn.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <algorithm>

#include "support/framing.hpp"
#include "support/unique_handle.hpp"
#include "mp/errors.hpp"
#include "platform/wait.hpp"
#include "platform/handle.hpp"
#include "platform/handle_passing.hpp"
#include "platform/io.hpp"
#include "platform/process.hpp"
#include "platform/shared_memory.hpp"
#include "platform/system.hpp"
#include "forkserver_impl.hpp"
#include "process_impl.hpp"
#include "reduction_impl.hpp"
#include "spawn_data.hpp"
#include "util_impl.hpp"

namespace mp {
namespace detail {
void set_inherited_start_method(const std::string& method);

namespace {

bool g_freeze_support_called = false;
platform::Handle g_status = platform::kInvalidHandle;

// Status protocol: one byte 0 = bootstrapped; 1 = failed, then the message as one frame
// (lib/support/framing.hpp).
void report_failure(platform::Handle status, const std::string& message) noexcept {
  if (status == platform::kInvalidHandle) return;
  try {
    std::string frame(1, '\1');
    detail::framing::append(frame, message);
    platform::write_all(status, frame.data(), frame.size());
  } catch (...) {
  }
}

[[noreturn]] void fail_bootstrap(const std::string& message) {
  std::fprintf(stderr, "%s\n", message.c_str());
  std::fflush(stderr);
  report_failure(g_status, message);
  platform::exit_now(1);
}

// A forkserver child keeps its status socket after the report, to report its exit status on it.
bool g_keep_status = false;
bool g_ready_sent = false;

void report_ready() {
  if (g_status == platform::kInvalidHandle) return;
  const char tag = 0;
  try {
    platform::write_all(g_status, &tag, 1);
  } catch (...) {
  }
  g_ready_sent = true;
  if (g_keep_status) return;
  platform::close_handle(g_status);
  g_status = platform::kInvalidHandle;
}

#ifndef _WIN32  // no forkserver on Windows
// A forkserver child's way out: as a forked child's, but it writes its exit status on its status
// socket first (the record the server writes after reaping it, lib/forkserver_impl.hpp), so the
// requester's join wakes once, when the child has ended, not again after the server's reap. A
// child that dies by a signal writes nothing: the server's record then tells.
[[noreturn]] void forkserver_child_exit(int code) {
  exit_function();
  if (g_status != platform::kInvalidHandle) {
    char record[kExitRecordBytes] = {kExitTag};
    const std::int32_t status = code & 0xff;  // what the OS reports of exit(code)
    std::memcpy(record + 1, &status, sizeof status);
    try {
      platform::write_all(g_status, record, sizeof record);
    } catch (...) {
    }
  }
  platform::exit_now(code);
}
#endif

}  // namespace

platform::Handle forkserver_child_status_socket() noexcept {
  return g_keep_status ? g_status : platform::kInvalidHandle;
}

namespace {

#ifndef _WIN32
// A process forked by a forkserver child has no exit status of its parent's to report.
void forget_status_in_fork_child() {
  platform::close_handle(g_status);
  g_status = platform::kInvalidHandle;
  g_keep_status = false;
}
#endif

// The spawned child's way out: CPython's _exit_function, then exit() (atexit handlers, static
// destructors), as when main returns.
[[noreturn]] void spawned_child_exit(int code) {
  exit_function();
  std::exit(code);
}

int parse_fd(const char* s) {
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  if (!s[0] || *end || v < 0 || v > 1 << 30) fail_bootstrap("mp spawn: bad descriptor argument");
  return static_cast<int>(v);
}

PreparationData parse_preparation_data(std::string_view bytes) {
  PreparationData d;
  try {
    d = reduction::loads<PreparationData>(bytes);
  } catch (const std::exception& e) {
    fail_bootstrap(std::string("mp spawn: bad preparation data: ") + e.what());
  }
  if (d.version != PreparationData::kVersion)
    fail_bootstrap("mp spawn: preparation data version mismatch");
  return d;
}

PreparationData receive_preparation_data(int data_fd) {
  std::size_t size = 0;
  void* p = nullptr;
  try {
    size = platform::shared_memory_size(data_fd);
    p = platform::map_shared(data_fd, size);
  } catch (const std::exception& e) {
    fail_bootstrap(std::string("mp spawn: bad preparation data: ") + e.what());
  }
  PreparationData d = parse_preparation_data(std::string_view(static_cast<const char*>(p), size));
  platform::unmap(p, size);
  platform::close_handle(data_fd);
  return d;
}

// Runs the target of `d`, then leaves through `leave` (spawned_child_exit, or forkserver_child_exit
// in a forkserver's child).
[[noreturn]] void run_prepared(PreparationData d, platform::Handle parent_handle,
                               void (*leave)(int code));

[[noreturn]] void spawned_main(int data_fd, int status_fd) {
  g_status = status_fd;
  wait_at_gate(status_fd);  // until the parent holds a handle on this process
  platform::name_process_after_executable();
  platform::set_inheritable(status_fd, false);
  run_prepared(receive_preparation_data(data_fd), platform::kInvalidHandle, &spawned_child_exit);
}

[[noreturn]] void run_prepared(PreparationData d, platform::Handle parent_handle,
                               void (*leave)(int code)) {
  apply_log_settings({d.log_level, d.log_to_stderr});
  become_child(d.name, d.identity, d.daemon, d.authkey, d.parent_pid, d.parent_name, parent_handle);
  set_inherited_start_method(d.start_method);

  std::vector<platform::Handle> inherited(d.handles.begin(), d.handles.end());
  auto close_inherited = [&] {
    for (platform::Handle h : inherited) platform::close_handle(h);
    inherited.clear();
  };
  int code = 0;
  if (!d.has_target) {
    close_inherited();
    report_ready();
  } else {
    Trampoline trampoline = nullptr;
    AnyFunction function = nullptr;
    try {
      trampoline = d.trampoline.resolve<Trampoline>();
      function = d.function.resolve<AnyFunction>();
    } catch (const std::exception& e) {
      fail_bootstrap(e.what());
    }
    static std::vector<platform::Handle>* s_inherited;
    s_inherited = &inherited;
    code = run_in_child(
        [&] {
          reduction::detail::ReceiveScope scope(inherited);
          try {
            trampoline(
                function, d.args.data(), d.args.size(), +[] {
                  for (platform::Handle h : *s_inherited) platform::close_handle(h);
                  s_inherited->clear();
                  report_ready();
                });
          } catch (const std::exception& e) {
            if (g_status != platform::kInvalidHandle && !g_ready_sent)
              fail_bootstrap(std::string("mp spawn: cannot receive the arguments: ") + e.what());
            throw;
          }
        },
        leave);
  }
  leave(code);
  std::abort();  // not reached: leave() does not return
}

}  // namespace

#ifndef _WIN32  // the forkserver (POSIX only): descriptor numbers exist there
[[noreturn]] void run_forkserver_child(std::string_view data, platform::Handle status,
                                       platform::Handle parent,
                                       const std::vector<platform::Handle>& handles,
                                       const std::vector<platform::Handle>& inherited,
                                       const std::vector<std::int32_t>& targets) {
  g_status = status;
  PreparationData d = parse_preparation_data(data);
  if (d.handles.size() != handles.size() || inherited.size() != targets.size())
    fail_bootstrap("mp forkserver: wrong number of descriptors received");
  // Descriptors go to the numbers they had in the parent (the arguments refer to their handles
  // by those numbers): first all out of the way of every target, then each onto its own.
  platform::Handle top = 3;
  for (std::int64_t h : d.handles) {
    if (h < 0 || h > (1 << 30)) fail_bootstrap("mp forkserver: bad descriptor number");
    top = std::max<platform::Handle>(top, static_cast<platform::Handle>(h) + 1);
  }
  for (std::int32_t t : targets) {
    if (t < 0 || t > (1 << 30)) fail_bootstrap("mp forkserver: bad descriptor number");
    top = std::max<platform::Handle>(top, t + 1);
  }
  // Only a descriptor sitting on some target's number has to move out of the way first.
  std::vector<platform::Handle> target_numbers(d.handles.begin(), d.handles.end());
  target_numbers.insert(target_numbers.end(), targets.begin(), targets.end());
  try {
    auto lift = [top, &target_numbers](platform::Handle h) {
      if (h == platform::kInvalidHandle || h >= top ||
          std::find(target_numbers.begin(), target_numbers.end(), h) == target_numbers.end())
        return h;
      const platform::Handle m = platform::duplicate_above(h, top);
      platform::close_handle(h);
      return m;
    };
    std::vector<platform::Handle> moved, moved_inherited;
    for (platform::Handle h : handles) moved.push_back(lift(h));
    for (platform::Handle h : inherited) moved_inherited.push_back(lift(h));
    g_status = lift(g_status);
    parent = lift(parent);
    for (std::size_t i = 0; i < moved.size(); ++i)
      platform::move_descriptor(moved[i], static_cast<platform::Handle>(d.handles[i]));
    for (std::size_t i = 0; i < moved_inherited.size(); ++i)
      platform::move_descriptor_inheritable(moved_inherited[i], targets[i]);
  } catch (const std::exception& e) {
    fail_bootstrap(std::string("mp forkserver: ") + e.what());
  }
  g_keep_status = true;
  platform::at_fork_in_child(&forget_status_in_fork_child);
  platform::on_exit_first(&forkserver_child_exit);
  run_prepared(std::move(d), parent, &forkserver_child_exit);
}
#endif

void check_bootstrapped() {
  if (g_freeze_support_called) return;
  const char* env = std::getenv(kSpawnEnv);
  if (!env) return;
  g_status = std::atoi(env);
  fail_bootstrap(
      "mp: this program was started as a spawned child process, but its main() did not call "
      "mp::freeze_support(argc, argv) before using mp. Add it as the first line of main.");
}

// ---- the parent's side (CPython: spawn.get_preparation_data and the Popen of each system:
// popen_spawn_posix.cpp, popen_spawn_win32.cpp)

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

std::unique_ptr<Popen> launch_spawned_child(ProcessState& state, const std::string& executable,
                                            const std::string& argv0) {
  std::vector<platform::Handle> handles;
  heap::detail::Lease lease;
  UniqueHandle data(write_preparation_data(state, handles, lease));
  // Duplex: the child reports its bootstrap on it and first waits there for the parent's gate byte.
  auto [status_r, status_w] = platform::socket_pair();
  UniqueHandle status_read(status_r), status_write(status_w);
  auto popen = std::make_unique<Popen>();
  popen->lease = std::move(lease);

  // The child gets exactly these handles, under the same numbers (values on Windows): the
  // arguments' shared objects, the preparation data and the status pipe; the last two are named
  // on its command line.
  std::vector<platform::Handle> inherit(handles.begin(), handles.end());
  inherit.push_back(data.get());
  inherit.push_back(status_write.get());
  const std::string status = std::to_string(status_write.get());
  const int pid =
      platform::spawn_process(executable, {argv0, kSpawnMarker, std::to_string(data.get()), status},
                              kSpawnEnv, status, inherit, state.daemon);
  popen->started(pid, open_child_then_open_gate(pid, status_read.get()));
  status_write.reset();
  data.reset();
  await_bootstrap(status_read.get(), *popen);
  return popen;
}

}  // namespace detail

void freeze_support(int argc, char** argv) {
  detail::g_freeze_support_called = true;
  if (argc >= 4 && argv && argv[1] && std::strcmp(argv[1], detail::kSpawnMarker) == 0) {
    platform::unset_env(detail::kSpawnEnv);
    detail::spawned_main(detail::parse_fd(argv[2]), detail::parse_fd(argv[3]));
  }
#ifndef _WIN32  // no forkserver on Windows (lib/context.cpp)
  if (argc >= 5 && argv && argv[1] && std::strcmp(argv[1], detail::kForkserverMarker) == 0) {
    platform::unset_env(detail::kSpawnEnv);
    detail::forkserver_main(detail::parse_fd(argv[2]), detail::parse_fd(argv[3]),
                            detail::parse_fd(argv[4]));
  }
#endif
  platform::unset_env(detail::kSpawnEnv);
}

}  // namespace mp
