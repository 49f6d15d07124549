// The spawn start method on POSIX (CPython: multiprocessing/popen_spawn_posix.py).
// The child is this executable run again (posix_spawn, lib/platform/process.hpp; not Boost.Process:
// see there) with the marker argument. Of the descriptors the library opens (all close-on-exec) it
// inherits exactly the preparation data, the status pipe and the handles of the shared objects
// passed as arguments.
// start() returns once the child reports that it is bootstrapped, or throws its error.
#include "platform/process.hpp"
#include "process_impl.hpp"

namespace mp::detail {

std::unique_ptr<Popen> launch_spawn(ProcessState& state) {
  // Executed through /proc/self/exe (the very file this process runs, even if the path was since
  // replaced); argv[0] is the program's path, for ps and error messages.
  return launch_spawned_child(state, platform::executable_path(),
                              platform::executable_display_path());
}

}  // namespace mp::detail
