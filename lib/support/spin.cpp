// lib/support/spin.cpp — the spinning policy's test hook (lib/support/spin.hpp).
#include "support/spin.hpp"
#include "platform/system.hpp"

#include <cstdlib>
#include <optional>
#include <string>

namespace mp::detail {

namespace {
unsigned pause_repeat_from_environment() noexcept {
  try {
    const std::optional<std::string> v = platform::get_env("MP_PAUSE_REPEAT");
    if (!v || v->empty()) return 1;
    char* end = nullptr;
    const unsigned long n = std::strtoul(v->c_str(), &end, 10);
    return *end == '\0' && n <= 1000 ? static_cast<unsigned>(n) : 1;
  } catch (...) {
    return 1;
  }
}
}  // namespace

// Read once at start-up (a forked child inherits it; a spawned one reads the same environment).
std::atomic<unsigned> g_pause_repeat{pause_repeat_from_environment()};

}  // namespace mp::detail
