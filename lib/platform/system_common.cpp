// The OS-independent part of platform/system.hpp, built on every platform.
#include "platform/system.hpp"

namespace mp::platform {

std::string to_hex(const void* data, std::size_t size) {
  static const char digits[] = "0123456789abcdef";
  const auto* p = static_cast<const unsigned char*>(data);
  std::string s;
  s.reserve(2 * size);
  for (std::size_t i = 0; i < size; ++i) {
    s.push_back(digits[p[i] >> 4]);
    s.push_back(digits[p[i] & 15]);
  }
  return s;
}

}  // namespace mp::platform
