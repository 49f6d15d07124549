// Internal: the logger's settings, passed to spawned and forkserver children (lib/util.cpp).
#pragma once

namespace mp::detail {
struct LogSettings {
  int level = 0;
  bool to_stderr = false;
};
LogSettings log_settings() noexcept;
void apply_log_settings(const LogSettings& s) noexcept;
}  // namespace mp::detail
