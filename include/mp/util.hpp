// mp/util.hpp — the library's logger (CPython: multiprocessing/util.py's get_logger,
// log_to_stderr and the sub_debug/debug/info/sub_warning helpers).
//
//   auto& logger = mp::log_to_stderr();        // logger = multiprocessing.log_to_stderr()
//   logger.setLevel(mp::util::INFO);           // logger.setLevel(logging.INFO)
//   // stderr: [INFO/Process-1] child process calling self.run()
//   //         [INFO/Process-1] process exiting with exitcode 0
//   logger.warning("doomed");                  // [WARNING/MainProcess] doomed
//
// Guarantees: each message is one write of one line "[LEVEL/process name] message\n" to stderr
// (lines from several processes do not interleave within a line). Children inherit the level and
// whether log_to_stderr() was called, under fork, spawn and forkserver (CPython passes both in
// the spawn preparation data). Thread-safe.
// Python: a Logger here is mp's one logger ("multiprocessing"), not a logging.Logger: it has no
// handlers to add or formatters to set; messages are strings (format them before the call).
// Until log_to_stderr() is called nothing is printed (CPython: no handler, so only WARNING and
// above reach logging's last-resort handler; mp prints nothing).
#pragma once

#include <optional>
#include <string_view>

#include "mp/export.hpp"

namespace mp::util {

// logging's levels and multiprocessing's two extra ones.
inline constexpr int NOTSET = 0;
inline constexpr int SUBDEBUG = 5;
inline constexpr int DEBUG = 10;
inline constexpr int INFO = 20;
inline constexpr int SUBWARNING = 25;
inline constexpr int WARNING = 30;
inline constexpr int ERROR = 40;
inline constexpr int CRITICAL = 50;

class MP_API Logger {
 public:
  // The level below which messages are dropped (NOTSET: WARNING, logging's root default).
  void setLevel(int level) noexcept;
  int getEffectiveLevel() const noexcept;
  bool isEnabledFor(int level) const noexcept;
  // Writes the message if the level is enabled and log_to_stderr() was called.
  void log(int level, std::string_view message) const;
  void debug(std::string_view message) const { log(DEBUG, message); }
  void info(std::string_view message) const { log(INFO, message); }
  void warning(std::string_view message) const { log(WARNING, message); }
  void error(std::string_view message) const { log(ERROR, message); }
  void critical(std::string_view message) const { log(CRITICAL, message); }
};

// multiprocessing.get_logger(): the library's logger (the same object on every call).
MP_API Logger& get_logger() noexcept;
// multiprocessing.log_to_stderr(level=None): from now on messages go to stderr; sets the level if
// given. Returns the logger.
MP_API Logger& log_to_stderr(std::optional<int> level = std::nullopt) noexcept;

// util.sub_debug/debug/info/sub_warning: the library's own messages go through these.
inline void sub_debug(std::string_view message) { get_logger().log(SUBDEBUG, message); }
inline void debug(std::string_view message) { get_logger().log(DEBUG, message); }
inline void info(std::string_view message) { get_logger().log(INFO, message); }
inline void sub_warning(std::string_view message) { get_logger().log(SUBWARNING, message); }

}  // namespace mp::util

namespace mp {
using util::get_logger;
using util::log_to_stderr;
}  // namespace mp
