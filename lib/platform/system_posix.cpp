// POSIX part of platform/system.hpp: environment, CPU count, demangling, dlopen.
#include <cxxabi.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <thread>

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

std::string demangle(const char* mangled) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> p(abi::__cxa_demangle(mangled, nullptr, nullptr, &status),
                                           std::free);
  return status == 0 && p ? std::string(p.get()) : std::string(mangled);
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
