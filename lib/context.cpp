// Start methods (CPython: multiprocessing/context.py). The only place that picks a Popen.
#include "mp/context.hpp"

#include <array>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string_view>

#include "support/load_time_global.hpp"
#include "platform/system.hpp"
#include "platform/wait.hpp"
#include "process_impl.hpp"

namespace mp {
namespace {

// Default first, as CPython's get_all_start_methods(). (Constant: no initialization guard that a
// fork could copy half-taken.) Windows has neither fork nor a forkserver: spawn alone, as CPython
// there (the only place the start methods depend on the system).
#ifdef _WIN32
constexpr std::array<std::string_view, 1> methods() { return {"spawn"}; }
#else
constexpr std::array<std::string_view, 3> methods() { return {"fork", "spawn", "forkserver"}; }
#endif

bool known(const std::string& m) {
  for (const auto& x : methods())
    if (x == m) return true;
  return false;
}

struct DefaultMethod {
  DefaultMethod() { platform::hold_across_fork(mutex); }
  std::mutex mutex;
  std::optional<std::string> actual;  // fixed by set_start_method or first use
};

MP_LOAD_TIME_GLOBAL(DefaultMethod, g_default_method);

DefaultMethod& default_method() { return g_default_method.get(); }

std::string initial_default() {
  if (auto env = platform::get_env("MP_START_METHOD"); env && !env->empty()) {
    if (!known(*env))
      throw std::invalid_argument("MP_START_METHOD: cannot find context for '" + *env + "'");
    return *env;
  }
  return std::string(methods().front());
}

}  // namespace

Context::Context(std::string method) : method_(std::move(method)) {
  if (!known(method_)) throw std::invalid_argument("cannot find context for '" + method_ + "'");
}

Context get_context(const std::string& method) {
  return Context(method.empty() ? get_start_method() : method);
}

void set_start_method(const std::string& method, bool force) {
  DefaultMethod& d = default_method();
  std::lock_guard lk(d.mutex);
  if (d.actual && !force) throw std::runtime_error("context has already been set");
  if (!known(method)) throw std::invalid_argument("cannot find context for '" + method + "'");
  d.actual = method;
}

std::string get_start_method() {
  DefaultMethod& d = default_method();
  std::lock_guard lk(d.mutex);
  if (!d.actual) d.actual = initial_default();
  return *d.actual;
}

std::vector<std::string> get_all_start_methods() {
  const auto all = methods();
  return {all.begin(), all.end()};
}

namespace detail {

std::unique_ptr<Popen> launch(const std::string& method, ProcessState& state, Process& self) {
  if (method == "spawn") return launch_spawn(state);
#ifdef _WIN32
  (void)self;
#else
  if (method == "fork") return launch_fork(state, self);
  if (method == "forkserver") return launch_forkserver(state);
#endif
  throw std::invalid_argument("cannot find context for '" + method + "'");
}

// A spawned child inherits its parent's default method (CPython's preparation data does too).
void set_inherited_start_method(const std::string& method) {
  DefaultMethod& d = default_method();
  std::lock_guard lk(d.mutex);
  if (known(method)) d.actual = method;
}

}  // namespace detail
}  // namespace mp
