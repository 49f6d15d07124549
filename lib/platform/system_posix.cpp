// POSIX part of platform/system.hpp: environment, CPU count, dlopen (demangling: system_cxxabi.cpp).
#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>

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

// ---- shared libraries

void* open_library(const std::vector<std::string>& names, const std::string& what) {
  std::string errors;
  for (const std::string& name : names) {
    if (void* lib = ::dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL)) return lib;
    const char* err = ::dlerror();
    errors += std::string(errors.empty() ? "" : "; ") + (err ? err : name + ": unknown error");
  }
  throw std::runtime_error("mp: cannot load " + what + ": " + errors);
}

void* library_symbol(void* library, const char* symbol) {
  ::dlerror();
  void* p = ::dlsym(library, symbol);
  if (!p) {
    const char* err = ::dlerror();
    throw std::runtime_error(std::string("mp: ") +
                             (err ? err : std::string("no symbol ") + symbol));
  }
  return p;
}

}  // namespace mp::platform
