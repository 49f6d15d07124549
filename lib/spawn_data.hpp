// Internal: the preparation data a spawned child receives (CPython: spawn.get_preparation_data).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "support/code_ref.hpp"
#include "mp/reduction.hpp"
#include "platform/handle.hpp"

namespace mp::detail {

inline constexpr const char* kSpawnMarker = "--mp-spawn-child";
inline constexpr const char* kSpawnEnv = "MP_SPAWNED_CHILD";  // value: the status descriptor

struct PreparationData {
  static constexpr std::uint32_t kVersion = 1;
  std::uint32_t version = kVersion;
  std::string name;
  std::vector<int> identity;
  bool daemon = false;
  std::string authkey;
  int parent_pid = 0;
  std::string parent_name;
  std::string start_method;
  bool has_target = false;
  CodeRef trampoline;
  CodeRef function;
  std::string args;
  std::vector<std::int64_t> handles;  // inherited descriptors
  int log_level = 0;                  // mp/util.hpp's logger, as CPython passes it
  bool log_to_stderr = false;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(version, name, identity, daemon, authkey, parent_pid, parent_name, start_method, has_target,
       trampoline, function, args, handles, log_level, log_to_stderr);
  }
};

// In a child forked by the forkserver (lib/forkserver.cpp): parses the preparation data `data`,
// gives the received `handles` the numbers the data names and `inherited[i]` the number
// `targets[i]` (without close-on-exec), reports to `status` and runs the target with `parent` as
// the parent's process handle, then exits. Never returns.
[[noreturn]] void run_forkserver_child(std::string_view data, platform::Handle status,
                                       platform::Handle parent,
                                       const std::vector<platform::Handle>& handles,
                                       const std::vector<platform::Handle>& inherited,
                                       const std::vector<std::int32_t>& targets);

// The argument that makes a spawned program the forkserver (freeze_support runs it).
inline constexpr const char* kForkserverMarker = "--mp-forkserver";
// Runs the forkserver in this process (lib/forkserver.cpp); never returns.
[[noreturn]] void forkserver_main(platform::Handle listener, platform::Handle init,
                                  platform::Handle status);

}  // namespace mp::detail
