// The part of platform/io.hpp written on its other calls alone, the same on every OS: both
// builds compile this file.
#include "mp/errors.hpp"
#include "platform/io.hpp"

namespace mp::platform {

std::size_t recv_some(Handle connection, void* data, std::size_t size) {
  const std::size_t n = read_some(connection, data, size);
  if (n == 0) throw EOFError();
  return n;
}

void recv_exact(Handle connection, void* data, std::size_t size) {
  char* p = static_cast<char*>(data);
  while (size > 0) {
    const std::size_t n = recv_some(connection, p, size);
    p += n;
    size -= n;
  }
}

}  // namespace mp::platform
