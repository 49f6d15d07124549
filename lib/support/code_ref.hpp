// lib/support/code_ref.hpp — a function of this program named so that another process running the same
// program can call it (a spawned or forkserver child's target, a pickled Barrier's action, a Pool
// task): the loaded module, its build id and the offset in it. Never an address: addresses differ
// between processes (ASLR), and a module rebuilt since is refused instead of called.
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

#include "platform/system.hpp"

namespace mp::detail {

struct CodeRef {
  std::string module;    // "" for the main executable, else the path it was loaded from
  std::string build_id;  // GNU build id (hex); checked when resolved
  std::uint64_t offset = 0;

  template <class Archive>
  void serialize(Archive& ar) {
    ar(module, build_id, offset);
  }

  // `f`: a function pointer. Throws std::invalid_argument if `f` is in no loaded module.
  template <class Fn>
  requires std::is_function_v<std::remove_pointer_t<Fn>>
  static CodeRef of(Fn f) {
    platform::CodeLocation loc = platform::locate_code(reinterpret_cast<const void*>(f));
    return {std::move(loc.module), std::move(loc.build_id), loc.offset};
  }
  // The function in this process (loads its module if needed). Throws mp::ProcessError for a
  // missing module or a build-id mismatch.
  template <class Fn>
  requires std::is_function_v<std::remove_pointer_t<Fn>> Fn resolve()
  const { return reinterpret_cast<Fn>(platform::resolve_code({module, build_id, offset})); }
};

}  // namespace mp::detail
