// mp::Process and the module functions (CPython: multiprocessing/process.py).
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <typeinfo>

#include "support/forced_unwind.hpp"
#include "support/lifeline.hpp"
#include "support/load_time_global.hpp"
#include "mp/errors.hpp"
#include "platform/handle.hpp"
#include "platform/io.hpp"
#include "platform/process.hpp"
#include "platform/system.hpp"
#include "platform/wait.hpp"
#include "process_impl.hpp"
#include "support/deadline.hpp"
#include "mp/util.hpp"

namespace mp {
namespace detail {

Popen::~Popen() {
  if (!returncode_ && pid_ != 0) lease.leak();  // the child may still run: its blocks stay reserved
  close();
}

void Popen::close() noexcept {
  platform::close_handle(handle_);
  handle_ = platform::kInvalidHandle;
}

std::optional<int> Popen::poll() {
  if (!returncode_ && handle_ != platform::kInvalidHandle)
    returncode_ = platform::reap(handle_, false);
  note_ended();
  return returncode_;
}

std::optional<int> Popen::wait(const platform::Nanos* timeout) {
  if (returncode_) return returncode_;
  if (timeout && !platform::wait_readable(handle_, timeout)) return std::nullopt;
  returncode_ = platform::reap(handle_, true);
  note_ended();
  return returncode_;
}

void Popen::send_signal(int sig) {
  if (!returncode_ && handle_ != platform::kInvalidHandle) platform::send_signal(handle_, sig);
}

platform::Handle open_child_then_open_gate(int pid, platform::Handle gate) {
  platform::Handle h = platform::kInvalidHandle;
  try {
    h = platform::open_process(pid);
  } catch (...) {
    platform::kill_and_reap(pid);  // it has not passed the gate: the target never ran
    throw;
  }
  const char go = 1;
  try {
    platform::write_all(gate, &go, 1);
  } catch (const OSError&) {
    // The child is gone already (killed from outside): it is reaped through `h` as any child.
  }
  return h;
}

void wait_at_gate(platform::Handle gate) noexcept {
  char go = 0;
  std::size_t n = 0;
  try {
    n = platform::read_some(gate, &go, 1);
  } catch (...) {
  }
  if (n != 1) platform::exit_now(1);
}

ProcessState::~ProcessState() { platform::close_handle(parent_handle); }

void throw_not_spawnable(const char* why) {
  throw std::invalid_argument(
      std::string("mp: cannot start this Process with the spawn start method: ") + why +
      ". Under spawn the target must be a function or captureless lambda whose parameters are "
      "serializable (mp/reduction.hpp); use the fork start method for other callables.");
}

Globals::Globals() : current(std::make_shared<ProcessState>()) {
  current->kind = Kind::Current;
  current->name = "MainProcess";
  current->pid = platform::current_pid();
  current->authkey.resize(32);
  platform::random_bytes(current->authkey.data(), current->authkey.size());
  platform::hold_across_fork(mutex);
}

namespace {
// Never destroyed: the exit function and children may use it during static destruction.
MP_LOAD_TIME_GLOBAL(Globals, g_globals);
}  // namespace

Globals& globals() { return g_globals.get(); }

void become_child(const std::string& name, const std::vector<int>& identity, bool daemon,
                  const std::string& authkey, int parent_pid, const std::string& parent_name,
                  platform::Handle parent_handle, bool watch_parent) {
  Globals& g = globals();
  g.children.clear();
  g.counter = 0;
  g.exit_registered = false;
  auto cur = std::make_shared<ProcessState>();
  cur->kind = Kind::Current;
  cur->name = name;
  cur->identity = identity;
  cur->daemon = daemon;
  cur->authkey = authkey;
  cur->pid = platform::current_pid();
  g.current = std::move(cur);
  auto parent = std::make_shared<ProcessState>();
  parent->kind = Kind::Parent;
  parent->name = parent_name;
  parent->pid = parent_pid;
  parent->parent_handle =
      parent_handle != platform::kInvalidHandle ? parent_handle : open_parent(parent_pid);
  if (daemon && watch_parent) watch_parent_for_daemon(parent->parent_handle, parent_pid);
  g.parent = std::move(parent);
}

int run_body(const std::function<void()>& body, void (*leave)(int code));

MP_CATCHES_FORCED_UNWIND int run_in_child(const std::function<void()>& body,
                                          void (*leave)(int code)) {
  const int code = run_body(body, leave);
  util::info("process exiting with exitcode " + std::to_string(code));
  return code;
}

MP_CATCHES_FORCED_UNWIND int run_body(const std::function<void()>& body, void (*leave)(int code)) {
  util::info("child process calling self.run()");
  try {
    body();
    return 0;
  } catch (const ForcedUnwind&) {
    // pthread_exit() in the target (or a cancellation): the target's thread has ended, as if it
    // returned. The unwind must not continue into the frames below the target (under fork, the
    // parent's own frames), so the child leaves from here, with code 0.
    util::info("process exiting with exitcode 0");
    leave(0);
    std::abort();  // not reached: leave() does not return
  } catch (const std::exception& e) {
    platform::flush_stdio();
    std::fprintf(stderr, "Process %s:\n%s: %s\n", globals().current->name.c_str(),
                 platform::demangle(typeid(e).name()).c_str(), e.what());
  } catch (...) {
    platform::flush_stdio();
    std::fprintf(stderr, "Process %s:\nunknown exception\n", globals().current->name.c_str());
  }
  std::fflush(stderr);
  return 1;
}

void exit_function() noexcept {
  // The program's own output first: CPython's buffered streams reach their pipe before the
  // children it waits for here have printed theirs (observed: `prog | cat` shows the parent's
  // last lines, then the late child's).
  platform::flush_stdio();
  try {
    util::info("process shutting down");
    for (Process& p : active_children())
      if (p.daemon()) {
        util::info("calling terminate() for daemon " + p.name());
        p.terminate();
      }
    for (Process& p : active_children()) {
      util::info("calling join() for process " + p.name());
      p.join();
    }
  } catch (...) {
  }
  platform::flush_stdio();
}

namespace {
void atexit_handler() { exit_function(); }

void reap_finished(Globals& g) {
  std::lock_guard lk(g.mutex);
  std::erase_if(g.children, [](const std::shared_ptr<ProcessState>& s) {
    std::lock_guard slk(s->mutex);
    return !s->popen || s->popen->poll().has_value();
  });
}
}  // namespace

}  // namespace detail

using detail::Kind;
using detail::ProcessState;

Process::Process() : Process(PrivateTag{}, nullptr, nullptr) {}
Process::Process(const Context& ctx) : Process(PrivateTag{}, &ctx, nullptr) {}

namespace detail {
namespace {
thread_local bool t_rebuilding = false;
}  // namespace
RebuildScope::RebuildScope() noexcept { t_rebuilding = true; }
RebuildScope::~RebuildScope() { t_rebuilding = false; }
}  // namespace detail

Process::Process(PrivateTag, const Context* ctx, std::unique_ptr<detail::TargetBase> target) {
  detail::check_bootstrapped();
  detail::Globals& g = detail::globals();
  std::lock_guard lk(g.mutex);
  if (detail::t_rebuilding) {      // a SpawnableProcess in its spawned child: it is this process
    detail::t_rebuilding = false;  // objects among its fields are new ones
    state_ = g.current;
    return;
  }
  state_ = std::make_shared<ProcessState>();
  ProcessState& cur = *g.current;
  state_->identity = cur.identity;
  state_->identity.push_back(++g.counter);
  state_->daemon = cur.daemon;
  state_->authkey = cur.authkey;
  std::string name = "Process-";
  for (std::size_t i = 0; i < state_->identity.size(); ++i) {
    if (i) name += ':';
    name += std::to_string(state_->identity[i]);
  }
  state_->name = std::move(name);
  state_->target = std::move(target);
  state_->creator_pid = platform::current_pid();
  if (ctx) state_->method = ctx->get_start_method();
}

Process::~Process() = default;

void Process::run() {
  if (state_->target) state_->target->call();
}

void Process::start() {
  detail::check_bootstrapped();
  adopt_class_name();
  ProcessState& s = *state_;
  if (s.kind != Kind::Child) throw std::logic_error("cannot start a process twice");
  {
    std::lock_guard lk(s.mutex);
    if (s.closed) throw std::invalid_argument("process object is closed");
    if (s.popen) throw std::logic_error("cannot start a process twice");
    if (s.creator_pid != platform::current_pid())
      throw std::logic_error("can only start a process object created by current process");
    if (detail::globals().current->daemon)
      throw std::logic_error("daemonic processes are not allowed to have children");
  }
  detail::reap_finished(detail::globals());
  {
    // Room for this child in the list now: nothing may fail once the child runs.
    detail::Globals& g = detail::globals();
    std::lock_guard lk(g.mutex);
    g.children.reserve(g.children.size() + 1);
  }
  const std::string method = s.method ? *s.method : get_start_method();
  // A SpawnableProcess sends itself; its target refers to *this, so it never outlives start().
  const bool sends_itself = (method == "spawn" || method == "forkserver") && !s.target &&
                            typeid(*this) != typeid(Process);
  if (sends_itself) {
    s.target = spawn_self();
    if (!s.target)
      detail::throw_not_spawnable(
          "a Process subclass overriding run() needs the fork start method, or to derive from "
          "mp::SpawnableProcess<Derived> and serialize its fields");
  }
  // As CPython's Popen (util._flush_std_streams), under every start method: the parent's buffered
  // output comes out before anything the child prints.
  platform::flush_stdio();
  std::unique_ptr<detail::Popen> popen;
  try {
    popen = detail::launch(method, s, *this);
  } catch (...) {
    if (sends_itself) s.target.reset();
    throw;
  }
  std::unique_ptr<detail::TargetBase> used_target;
  {
    std::lock_guard lk(s.mutex);
    s.popen = std::move(popen);
    // As CPython (del self._target, self._args): the child has its own copy now, so the parent
    // drops the arguments (e.g. a manager proxy's reference) at once. Destroyed outside the lock.
    used_target = std::move(s.target);
  }
  used_target.reset();
  detail::Globals& g = detail::globals();
  std::lock_guard lk(g.mutex);
  g.children.push_back(state_);
  if (!g.exit_registered) {
    // Once per program image (a forked child inherits the registration); under g.mutex.
    static constinit bool atexit_registered = false;
    if (!atexit_registered) atexit_registered = std::atexit(&detail::atexit_handler) == 0;
    g.exit_registered = true;
  }
}

void Process::join() { join_until(nullptr); }

void Process::join_for(std::chrono::nanoseconds timeout) {
  if (timeout < std::chrono::nanoseconds::zero()) timeout = std::chrono::nanoseconds::zero();
  join_until(&timeout);
}

// The wait itself runs without the state's lock, so terminate()/is_alive() from other threads
// still work during a join.
void Process::join_until(const std::chrono::nanoseconds* timeout) {
  ProcessState& s = *state_;
  if (s.kind == Kind::Current) throw std::logic_error("cannot join current process");
  if (s.kind == Kind::Parent) {
    if (s.parent_handle != platform::kInvalidHandle)
      platform::wait_readable(s.parent_handle, timeout);
    return;
  }
  const detail::Deadline deadline(timeout);
  // Once more only if what to wait on changed (a forkserver child whose server is gone).
  platform::Handle waited = platform::kInvalidHandle;
  for (;;) {
    platform::Handle handle;
    {
      std::lock_guard lk(s.mutex);
      if (waited == platform::kInvalidHandle) {
        if (s.closed) throw std::invalid_argument("process object is closed");
        if (!s.popen) throw std::logic_error("can only join a started process");
        if (s.creator_pid != platform::current_pid())
          throw std::logic_error("can only join a child process");
      } else if (!s.popen) {
        return;
      }
      if (s.popen->poll()) return;
      handle = s.popen->join_handle();
      if (handle == waited) return;
    }
    platform::Nanos left;
    if (!platform::wait_readable(handle, deadline.remaining(left))) return;
    waited = handle;
  }
}

bool Process::is_alive() const {
  ProcessState& s = *state_;
  if (s.kind == Kind::Current) return true;
  if (s.kind == Kind::Parent) {
    if (s.parent_handle == platform::kInvalidHandle) return false;
    const platform::Nanos zero{0};
    return !platform::wait_readable(s.parent_handle, &zero);
  }
  std::lock_guard lk(s.mutex);
  if (s.closed) throw std::invalid_argument("process object is closed");
  if (!s.popen) return false;
  if (s.creator_pid != platform::current_pid())
    throw std::logic_error("can only test a child process");
  return !s.popen->poll().has_value();
}

std::optional<int> Process::exitcode() const {
  ProcessState& s = *state_;
  if (s.kind != Kind::Child) return std::nullopt;
  std::lock_guard lk(s.mutex);
  if (s.closed) throw std::invalid_argument("process object is closed");
  if (!s.popen) return std::nullopt;
  return s.popen->poll();
}

std::optional<int> Process::pid() const {
  ProcessState& s = *state_;
  if (s.kind != Kind::Child) return s.pid;
  std::lock_guard lk(s.mutex);
  if (s.closed) throw std::invalid_argument("process object is closed");
  if (!s.popen) return std::nullopt;
  return s.popen->pid();
}

// CPython names a process after its class: "Process-1", or "Worker-1" for a subclass Worker. The
// dynamic type is known only after construction, so the default name is settled on first use.
void Process::adopt_class_name() const {
  ProcessState& s = *state_;
  if (s.kind != Kind::Child || typeid(*this) == typeid(Process)) return;
  std::lock_guard lk(s.mutex);
  if (s.class_named) return;
  s.class_named = true;
  std::string cls = platform::demangle(typeid(*this).name());
  // The unqualified name, without template arguments (Python's type(self).__name__).
  const std::size_t open = std::min(cls.find('<'), cls.size());
  const std::size_t colons = cls.rfind("::", open);
  if (colons != std::string::npos) cls.erase(0, colons + 2);
  const std::size_t dash = s.name.find('-');
  if (dash != std::string::npos && !cls.empty()) s.name = cls + s.name.substr(dash);
}

const std::string& Process::name() const {
  adopt_class_name();
  return state_->name;
}
void Process::set_name(std::string name) {
  std::lock_guard lk(state_->mutex);
  state_->class_named = true;
  state_->name = std::move(name);
}
bool Process::daemon() const { return state_->daemon; }

void Process::set_daemon(bool daemonic) {
  std::lock_guard lk(state_->mutex);
  if (state_->popen) throw std::logic_error("process has already started");
  state_->daemon = daemonic;
}

const std::string& Process::authkey() const { return state_->authkey; }
void Process::set_authkey(std::string key) { state_->authkey = std::move(key); }

void Process::terminate() {
  std::lock_guard lk(state_->mutex);
  if (state_->closed) throw std::invalid_argument("process object is closed");
  if (state_->popen) state_->popen->send_signal(platform::kTerminateSignal);
}

void Process::kill() {
  std::lock_guard lk(state_->mutex);
  if (state_->closed) throw std::invalid_argument("process object is closed");
  if (state_->popen) state_->popen->send_signal(platform::kKillSignal);
}

void Process::close() {
  ProcessState& s = *state_;
  {
    std::lock_guard lk(s.mutex);
    if (s.closed) return;
    if (s.popen) {
      if (!s.popen->poll())
        throw std::invalid_argument(
            "Cannot close a process while it is still running. You should first call join() or "
            "terminate().");
      s.popen->close();
    }
    s.closed = true;
  }
  detail::Globals& g = detail::globals();
  std::lock_guard lk(g.mutex);
  std::erase(g.children, state_);
}

std::intptr_t Process::sentinel() const {
  ProcessState& s = *state_;
  if (s.kind == Kind::Parent) return s.parent_handle;
  std::lock_guard lk(s.mutex);
  if (s.closed) throw std::invalid_argument("process object is closed");
  if (!s.popen) throw std::logic_error("process not started");
  return s.popen->sentinel();
}

Process current_process() {
  detail::Globals& g = detail::globals();
  std::lock_guard lk(g.mutex);
  return detail::ProcessAccess::make(g.current);
}

std::optional<Process> parent_process() {
  detail::Globals& g = detail::globals();
  std::lock_guard lk(g.mutex);
  if (!g.parent) return std::nullopt;
  return detail::ProcessAccess::make(g.parent);
}

std::vector<Process> active_children() {
  detail::Globals& g = detail::globals();
  detail::reap_finished(g);
  std::lock_guard lk(g.mutex);
  std::vector<Process> out;
  out.reserve(g.children.size());
  for (const auto& s : g.children) out.push_back(detail::ProcessAccess::make(s));
  return out;
}

unsigned cpu_count() { return platform::cpu_count(); }

}  // namespace mp
