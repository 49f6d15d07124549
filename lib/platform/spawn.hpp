// Internal OS call for the spawn start method (lib/popen_spawn_posix.cpp): run a program with
// the descriptors it should have and a clean signal state.
#pragma once

#include <string>
#include <vector>

#include "platform/os.hpp"

namespace mp::platform {

// Starts `executable` with the argument vector `args` (args[0] included) and the caller's
// environment, in which `env_name` is set to `env_value`. Returns the child's pid.
// Descriptors: the child receives `inherit` under the same numbers although they are
// close-on-exec, and, by the POSIX convention, the caller's descriptors that are not
// close-on-exec (stdio among them); every descriptor the library opens is close-on-exec, so none
// of them leaks. Signals: the child's mask is empty and every signal has its default disposition,
// whatever the calling thread blocks or the process ignores.
// Safe to call from several threads at once; the cost does not grow with the caller's memory.
// Throws: OSError with the OS error of the failed step (e.g. the exec: ENOENT, E2BIG, EACCES).
int spawn_process(const std::string& executable, const std::vector<std::string>& args, const char* env_name,
                  const std::string& env_value, const std::vector<Handle>& inherit);

}  // namespace mp::platform
