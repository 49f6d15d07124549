// Internal: the state behind mp::Process, the Popen interface (one implementation per start
// method: popen_fork.cpp, popen_spawn_posix.cpp, popen_spawn_win32.cpp, popen_forkserver.cpp) and
// the per-process globals.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "heap_impl.hpp"
#include "mp/process.hpp"
#include "platform/handle.hpp"

namespace mp::detail {

struct ProcessState;

// A started child (CPython: popen_fork.Popen and subclasses). Methods are called with the
// owning ProcessState's mutex held.
class Popen {
 public:
  virtual ~Popen();
  int pid() const noexcept { return pid_; }
  platform::Handle sentinel() const noexcept { return handle_; }
  // What join() sleeps on until poll() can tell: the sentinel, or for a forkserver child the
  // socket its exit status comes on.
  virtual platform::Handle join_handle() const noexcept { return handle_; }
  // The exit code once the child ended (reaping it); nullopt while it runs (or timeout passed).
  // Virtual: a forkserver child is not the caller's own (popen_forkserver.cpp).
  virtual std::optional<int> poll();
  virtual std::optional<int> wait(const platform::Nanos* timeout);
  void send_signal(int sig);
  void close() noexcept;
  // A started child: its pid and a process handle (pidfd) on it, owned from now on.
  Popen(int pid, platform::Handle handle) : pid_(pid), handle_(handle) {}
  // Made before the child exists (so that creating it is the last thing that can fail), then given
  // the child by started().
  Popen() = default;
  void started(int pid, platform::Handle handle) noexcept {
    pid_ = pid;
    handle_ = handle;
  }
  // The shared-heap blocks the child has (heap_impl.hpp): released once the child is known to have
  // ended (or never ran), kept for the program's life if this Popen goes while the child may run.
  heap::detail::Lease lease;

 protected:
  int pid_ = 0;
  platform::Handle handle_ = platform::kInvalidHandle;  // pidfd
  std::optional<int> returncode_;
  // Call after setting returncode_.
  void note_ended() noexcept {
    if (returncode_) lease.release();
  }
};

// The start of a child is all or nothing: either start() returns and the child is tracked, or it
// throws and no child ran the target (none is left, not even a zombie). So the child waits at a
// gate until the parent holds every descriptor it needs on it (its pidfd); if the parent cannot
// get one, it kills and reaps the waiting child and throws.
// Opens the process handle on the new child `pid`, then opens `gate` (writes one byte). On failure
// kills and reaps the child and throws. Needs no new descriptor but the handle.
platform::Handle open_child_then_open_gate(int pid, platform::Handle gate);
// In the child: waits for the parent to open the gate; leaves at once (_exit) if the parent gave up.
void wait_at_gate(platform::Handle gate) noexcept;

// Starts `state`'s child with the given method (chosen only in context.cpp).
std::unique_ptr<Popen> launch_fork(ProcessState& state, Process& self);
std::unique_ptr<Popen> launch_spawn(ProcessState& state);
std::unique_ptr<Popen> launch_forkserver(ProcessState& state);
// Reads a spawned child's bootstrap report from `status`; throws ProcessError with the child's
// message (popen_spawn_posix.cpp; the forkserver's children and server report the same way).
// `other_tag`: a forkserver child's pipe, where the server's exit record may come first: its tag
// is stored there for the child's wait() to read the rest.
void await_bootstrap(platform::Handle status, Popen& child, char* other_tag = nullptr);
// The spawn launch of both systems (lib/spawn.cpp): runs `executable` with argv[0] `argv0` as a
// spawned child of `state`, passing it exactly its handles, and returns once it is bootstrapped.
std::unique_ptr<Popen> launch_spawned_child(ProcessState& state, const std::string& executable,
                                            const std::string& argv0);
std::unique_ptr<Popen> launch(const std::string& method, ProcessState& state, Process& self);

enum class Kind { Child, Current, Parent };

struct ProcessState {
  std::mutex mutex;
  Kind kind = Kind::Child;
  std::string name;
  bool class_named = false;  // name chosen, or already made from the subclass's name
  bool daemon = false;
  // A daemonic fork child that ends with the thread starting it (platform::end_with_forking_thread)
  // instead of watching its parent from a thread of its own. Only for a starter thread that
  // outlives the child (the pool engine's).
  bool ends_with_starter = false;
  std::vector<int> identity;
  std::string authkey;
  std::optional<std::string> method;  // from the Context given, else the default at start()
  std::unique_ptr<TargetBase> target;
  std::unique_ptr<Popen> popen;
  bool closed = false;
  int creator_pid = 0;  // the process that made the Process object
  int pid = 0;          // Current / Parent
  platform::Handle parent_handle = platform::kInvalidHandle;  // Parent: a pidfd
  ~ProcessState();
};

// Per-process globals (CPython: process._current_process, _children, _process_counter).
struct Globals {
  Globals();         // this process as MainProcess, with a new authkey
  std::mutex mutex;  // guards children, counter (held across every fork: the child's copy is sane)
  std::vector<std::shared_ptr<ProcessState>> children;
  int counter = 0;
  std::shared_ptr<ProcessState> current;
  std::shared_ptr<ProcessState> parent;
  bool exit_registered = false;
};
Globals& globals();

// Sets up the globals in a new child (fork or spawn): name, identity, daemon, authkey, parent.
// `parent_handle` (owned from now on): a process handle on the parent already open (a forkserver
// child, whose OS parent is the server); else one is opened by pid.
void become_child(const std::string& name, const std::vector<int>& identity, bool daemon,
                  const std::string& authkey, int parent_pid, const std::string& parent_name,
                  platform::Handle parent_handle = platform::kInvalidHandle,
                  bool watch_parent = true);
// Runs a target in the child, printing an escaping exception; returns the exit code. If the
// target ends its thread (pthread_exit), calls leave(0), which must end the process.
int run_in_child(const std::function<void()>& body, void (*leave)(int code));
// CPython's _exit_function: terminate daemonic children, join the others.
void exit_function() noexcept;
// A forked child's way out (fork, and forkserver children, which are forks of the server):
// exit_function(), then _exit(status), so the atexit handlers and static destructors of the
// process it was forked from never run in it (CPython: os._exit after _bootstrap). Also what
// exit()/std::exit() in its target does (platform::on_exit_first). A forkserver child also
// reports its status on its status socket first (lib/spawn.cpp).
void forked_child_exit(int status);
// In a forkserver child: its status socket (kept open, close-on-exec, to report its exit status);
// elsewhere kInvalidHandle. For tests.
platform::Handle forkserver_child_status_socket() noexcept;
// Every mp entry point calls this: a spawned child whose main() forgot freeze_support() stops here.
void check_bootstrapped();

// The library's way to a Process for a shared state (current_process(), active_children()); not
// part of the public API.
struct ProcessAccess {
  static Process make(std::shared_ptr<ProcessState> state) { return Process(std::move(state)); }
  static ProcessState& state(const Process& p) { return *p.state_; }
};

}  // namespace mp::detail
