// POSIX part of platform/system.hpp: environment and CPU count (demangling: system_cxxabi.cpp).
#include <stdlib.h>
#include <unistd.h>

#include <cstdlib>

#include "platform/system.hpp"

namespace mp::platform {

std::optional<std::string> get_env(const char* name) {
  const char* v = std::getenv(name);
  if (!v) return std::nullopt;
  return std::string(v);
}

void unset_env(const char* name) { ::unsetenv(name); }

unsigned cpu_count() noexcept {
  const long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<unsigned>(n) : 1u;
}

}  // namespace mp::platform
