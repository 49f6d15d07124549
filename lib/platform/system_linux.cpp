// Linux part of platform/system.hpp: getrandom. system_portable.cpp replaces it under
// MP_PLATFORM_POSIX_FALLBACKS.
#include <sys/random.h>
#include <sys/types.h>

#include <cerrno>
#include <cstddef>

#include "platform/handle.hpp"
#include "platform/system.hpp"

namespace mp::platform {

void random_bytes(void* out, std::size_t size) {
  auto* p = static_cast<unsigned char*>(out);
  while (size > 0) {
    const ssize_t n = ::getrandom(p, size, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_last_error("getrandom");
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

}  // namespace mp::platform
