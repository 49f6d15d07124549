// The demangling part of platform/system.hpp, for every toolchain on the Itanium C++ ABI
// (g++ and clang on Linux and macOS, mingw-w64 on Windows): both builds compile this file.
// MSVC would need its own (its type_info::name() is already readable).
#include <cxxabi.h>

#include <cstdlib>
#include <memory>

#include "platform/system.hpp"

namespace mp::platform {

std::string demangle(const char* mangled) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> p(abi::__cxa_demangle(mangled, nullptr, nullptr, &status),
                                           std::free);
  return status == 0 && p ? std::string(p.get()) : std::string(mangled);
}

}  // namespace mp::platform
