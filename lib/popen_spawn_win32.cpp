// The spawn start method on Windows, the only one there (CPython: popen_spawn_win32.py).
// The child is this executable (GetModuleFileNameW) run again by CreateProcessW with the marker
// argument, its command line quoted so that it splits back into the same arguments; it inherits
// exactly the listed handles (PROC_THREAD_ATTRIBUTE_HANDLE_LIST: the preparation data, the status
// pipe and the handles of the shared objects passed as arguments), under the same values, which
// its command line and preparation data name. A daemonic child is in this process's
// kill-on-close job object, so it dies with its owner however the owner ends; a non-daemonic one
// outlives a killed owner and sees it end, as in CPython (lib/platform/process_win32.cpp).
// The sentinel is the process handle (waitable); terminate() and kill() both end the child with
// TerminateProcess and a private exit code reported as -SIGTERM, as CPython on Windows.
// start() returns once the child reports that it is bootstrapped, or throws its error.
#include "platform/process.hpp"
#include "process_impl.hpp"

namespace mp::detail {

std::unique_ptr<Popen> launch_spawn(ProcessState& state) {
  const std::string exe = platform::executable_path();
  return launch_spawned_child(state, exe, exe);
}

}  // namespace mp::detail
