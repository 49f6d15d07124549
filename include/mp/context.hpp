// mp/context.hpp — start methods (CPython: multiprocessing/context.py).
//
// A Context names a start method: "fork" (POSIX), "spawn" (everywhere) or "forkserver" (POSIX;
// mp/forkserver.hpp). The default is fork on Linux and spawn on macOS and Windows; the environment
// variable MP_START_METHOD, read once when the default is first needed, overrides it (used to run
// a whole program under spawn).
//   auto ctx = mp::get_context("spawn");  mp::Process p(ctx, task, args...);
#pragma once

#include <string>
#include <vector>

#include "mp/export.hpp"

namespace mp {

class MP_API Context {
 public:
  // Throws std::invalid_argument "cannot find context for 'x'" for an unknown name.
  explicit Context(std::string method);
  const std::string& get_start_method() const noexcept { return method_; }
  friend bool operator==(const Context&, const Context&) = default;

 private:
  std::string method_;
};

// get_context(): the default context; get_context("spawn"): that method.
MP_API Context get_context(const std::string& method = "");
// Sets the default start method. Throws std::runtime_error "context has already been set" when it
// was set (or used) before and `force` is false; std::invalid_argument for an unknown name.
MP_API void set_start_method(const std::string& method, bool force = false);
// The default start method; fixes it if not fixed yet (as CPython without allow_none).
MP_API std::string get_start_method();
// The methods this platform supports, the default first.
MP_API std::vector<std::string> get_all_start_methods();

}  // namespace mp
