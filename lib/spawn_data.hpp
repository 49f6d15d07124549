// Internal: the preparation data a spawned child receives (CPython: spawn.get_preparation_data).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mp/reduction.hpp"

namespace mp::detail {

inline constexpr const char* kSpawnMarker = "--mp-spawn-child";
inline constexpr const char* kSpawnEnv = "MP_SPAWNED_CHILD";  // value: the status descriptor

struct CodeRef {
  std::string module;
  std::string build_id;
  std::uint64_t offset = 0;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(module, build_id, offset);
  }
};

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
  template <class Archive>
  void serialize(Archive& ar) {
    ar(version, name, identity, daemon, authkey, parent_pid, parent_name, start_method, has_target, trampoline,
       function, args, handles);
  }
};

}  // namespace mp::detail
