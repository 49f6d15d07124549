// lib/util.cpp — the library's logger (CPython: multiprocessing/util.py).
#include "mp/util.hpp"

#include <atomic>
#include <cstdio>
#include <string>

#include "mp/process.hpp"
#include "util_impl.hpp"

namespace mp::util {
namespace {
// Plain atomics, no initialization guard: a fork copies them as they are.
constinit std::atomic<int> g_level{NOTSET};
constinit std::atomic<bool> g_to_stderr{false};
constinit Logger g_logger;

const char* level_name(int level) noexcept {
  switch (level) {
    case SUBDEBUG:
      return "SUBDEBUG";
    case DEBUG:
      return "DEBUG";
    case INFO:
      return "INFO";
    case SUBWARNING:
      return "SUBWARNING";
    case WARNING:
      return "WARNING";
    case ERROR:
      return "ERROR";
    case CRITICAL:
      return "CRITICAL";
    default:
      return nullptr;
  }
}
}  // namespace

void Logger::setLevel(int level) noexcept { g_level.store(level, std::memory_order_relaxed); }
int Logger::getEffectiveLevel() const noexcept {
  const int level = g_level.load(std::memory_order_relaxed);
  return level == NOTSET ? WARNING : level;
}
bool Logger::isEnabledFor(int level) const noexcept { return level >= getEffectiveLevel(); }

void Logger::log(int level, std::string_view message) const {
  if (!g_to_stderr.load(std::memory_order_relaxed) || !isEnabledFor(level)) return;
  std::string line = "[";
  if (const char* name = level_name(level)) {
    line += name;
  } else {
    line += "Level " + std::to_string(level);
  }
  line += '/';
  line += current_process().name();
  line += "] ";
  line += message;
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stderr);  // stderr is unbuffered: one write
  std::fflush(stderr);
}

Logger& get_logger() noexcept { return g_logger; }

Logger& log_to_stderr(std::optional<int> level) noexcept {
  if (level) g_logger.setLevel(*level);
  g_to_stderr.store(true, std::memory_order_relaxed);
  return g_logger;
}

}  // namespace mp::util

namespace mp::detail {
LogSettings log_settings() noexcept {
  return {util::g_level.load(std::memory_order_relaxed),
          util::g_to_stderr.load(std::memory_order_relaxed)};
}
void apply_log_settings(const LogSettings& s) noexcept {
  util::g_level.store(s.level, std::memory_order_relaxed);
  util::g_to_stderr.store(s.to_stderr, std::memory_order_relaxed);
}
}  // namespace mp::detail
