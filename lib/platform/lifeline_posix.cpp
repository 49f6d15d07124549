// POSIX part of lib/platform/lifeline.hpp.
#include <signal.h>
#include <unistd.h>

#include "platform/lifeline.hpp"

namespace mp::platform {

int os_parent_pid() noexcept { return static_cast<int>(::getppid()); }

void kill_self() noexcept {
  ::kill(::getpid(), SIGKILL);
  for (;;) ::pause();  // SIGKILL cannot be caught: never reached past the delivery
}

}  // namespace mp::platform
