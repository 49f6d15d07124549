// The OS-independent part of platform/process.hpp, built on every platform.
#include <cstdio>
#include <iostream>

#include "platform/process.hpp"

namespace mp::platform {

void flush_stdio() noexcept {
  try {
    std::cout.flush();
    std::cerr.flush();
    std::clog.flush();
  } catch (...) {
  }
  std::fflush(nullptr);
}

}  // namespace mp::platform
