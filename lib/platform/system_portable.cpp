// Portable implementation of what system_linux.cpp does (MP_PLATFORM_POSIX_FALLBACKS): random
// bytes from getentropy() (glibc 2.25, macOS 10.12, FreeBSD 12, OpenBSD), at most 256 bytes a call.
#include <unistd.h>
#if defined(__APPLE__)
#  include <sys/random.h>
#endif

#include <algorithm>
#include <cerrno>
#include <cstddef>

#include "platform/handle.hpp"
#include "platform/system.hpp"

namespace mp::platform {

void random_bytes(void* out, std::size_t size) {
  auto* p = static_cast<unsigned char*>(out);
  while (size > 0) {
    const std::size_t n = std::min<std::size_t>(size, 256);
    if (::getentropy(p, n) != 0) {
      if (errno == EINTR) continue;
      throw_last_error("getentropy");
    }
    p += n;
    size -= n;
  }
}

}  // namespace mp::platform
