// Linux part of lib/platform/sync.hpp: the current CPU (glibc reads it from rseq, no system call).
#include <sched.h>

#include "platform/sync.hpp"

namespace mp::platform {

int current_cpu() noexcept { return ::sched_getcpu(); }

}  // namespace mp::platform
