// The fork start method (CPython: multiprocessing/popen_fork.py).
// The child is a copy of the parent: the target and its arguments are used in place, nothing is
// serialized. The child leaves with _exit after flushing its stdio and joining its own children,
// so the parent's atexit handlers and static destructors never run twice.
#include <mutex>

#include "process_impl.hpp"

namespace mp::detail {
namespace {


// std::exit(n) inside a forked child's target: leave through our cleanup with status n.
void forked_child_exit(int status) {
  exit_function();
  platform::exit_now(status);
}

}  // namespace

std::unique_ptr<Popen> launch_fork(ProcessState& state, Process& self) {
  Globals& g = globals();
  const int parent_pid = platform::current_pid();
  const std::string parent_name = g.current->name;
  int pid;
  {
    // The fork handlers hold g.mutex across the fork, so the child's copy of the globals is sane.
    pid = platform::fork_process();
    if (pid == 0) {
      become_child(state.name, state.identity, state.daemon, state.authkey, parent_pid, parent_name);
      platform::on_exit_first(&forked_child_exit);
      const int code = run_in_child([&] { self.run(); });
      exit_function();
      platform::exit_now(code);
    }
  }
  platform::Handle h = platform::open_process(pid);
  return std::make_unique<Popen>(pid, h);
}

}  // namespace mp::detail
