// The fork start method (CPython: multiprocessing/popen_fork.py).
// The child is a copy of the parent: the target and its arguments are used in place, nothing is
// serialized. The child leaves with _exit after flushing its stdio and joining its own children,
// so the parent's atexit handlers and static destructors never run twice.
#include <mutex>

#include "process_impl.hpp"
#include "platform/handle.hpp"
#include "platform/io.hpp"
#include "platform/process.hpp"
#include "platform/wait.hpp"

namespace mp::detail {

void forked_child_exit(int status) {
  exit_function();
  platform::exit_now(status);
}

std::unique_ptr<Popen> launch_fork(ProcessState& state, Process& self) {
  Globals& g = globals();
  const int parent_pid = platform::current_pid();
  const std::string parent_name = g.current->name;
  const bool ends_with_starter = state.daemon && state.ends_with_starter;
  auto popen = std::make_unique<Popen>();
  platform::bind_child_calls();
  // A stream socket pair rather than a pipe: the gate byte is then one send (MSG_NOSIGNAL), not a
  // probe and a write between SIGPIPE mask changes. The child sees end of file if this process
  // dies first, as with a pipe.
  auto [gate_read, gate_write] = platform::socket_pair();
  int pid;
  heap::detail::ForkLease fork_lease;  // the child inherits every block this process holds
  {
    // The fork handlers hold g.mutex across the fork, so the child's copy of the globals is sane.
    try {
      pid = platform::fork_process();
    } catch (...) {
      fork_lease.forked();
      platform::close_handle(gate_read);
      platform::close_handle(gate_write);
      throw;
    }
    if (pid == 0) {
      platform::close_handle(gate_write);
      wait_at_gate(gate_read);
      platform::close_handle(gate_read);
      // A daemon follows its parent: by the OS's parent-death signal when its starter thread
      // outlives it, else by a watch thread (lib/support/lifeline.hpp).
      const bool watched = !ends_with_starter || !platform::end_with_forking_thread(parent_pid);
      become_child(state.name, state.identity, state.daemon, state.authkey, parent_pid, parent_name,
                   platform::kInvalidHandle, watched);
      platform::on_exit_first(&forked_child_exit);
      forked_child_exit(run_in_child([&] { self.run(); }, &forked_child_exit));
    }
  }
  fork_lease.forked();
  popen->lease = std::move(fork_lease.lease());
  // The read end stays open until the handle is had: freeing its slot first would not make
  // pidfd_open safe (another thread may take the slot), only make the failure path rarer.
  struct CloseGate {
    platform::Handle read, write;
    ~CloseGate() {
      platform::close_handle(read);
      platform::close_handle(write);
    }
  } close_gate{gate_read, gate_write};
  popen->started(pid, open_child_then_open_gate(pid, gate_write));
  return popen;
}

}  // namespace mp::detail
