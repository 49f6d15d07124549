// mp/process.hpp — multiprocessing.Process and the module functions about processes
// (CPython: multiprocessing/process.py).
//
//   void adder(mp::Value<int> v, int n);
//   mp::Process p(adder, value, 1000);   // target: a function or captureless lambda, then its args
//   p.start(); p.join();                 // p.exitcode() == 0
//
// Targets: any callable under fork (capturing lambdas too, nothing is copied out of the process);
// under spawn a function or captureless lambda whose arguments are serializable (mp/reduction.hpp)
// — anything else is rejected by start() with std::invalid_argument. Arguments are converted to
// the function's parameter types when the Process is made.
//
// A Process object is a handle: copies refer to the same child (like Python references).
// Destroying it does not kill or detach the child; it is joined at exit like in CPython.
// Exit codes: 0 when the target returns, 1 when an exception escapes it (printed to stderr as
// "Process <name>:" and the exception), n after std::exit(n), -N when killed by signal N.
#pragma once

#include <chrono>
#include <concepts>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "mp/context.hpp"
#include "mp/detail/timeout.hpp"
#include "mp/export.hpp"
#include "mp/reduction.hpp"

namespace mp {

class Process;

namespace detail {

struct ProcessState;
struct ProcessAccess;
using AnyFunction = void (*)();
// Deserializes the arguments, calls ready() (the child is bootstrapped), then calls the function;
// instantiated per target signature.
using Trampoline = void (*)(AnyFunction fn, const char* args, std::size_t size, void (*ready)());

struct SpawnTarget {
  AnyFunction trampoline = nullptr;
  AnyFunction function = nullptr;
  std::string args;  // serialized tuple of arguments
};

class TargetBase {
 public:
  virtual ~TargetBase() = default;
  virtual void call() = 0;                       // in a forked child
  virtual SpawnTarget spawn_target() const = 0;  // for spawn; throws if not sendable
};

template <class T>
concept FunctionPointer = std::is_pointer_v<T> && std::is_function_v<std::remove_pointer_t<T>>;

template <class F>
concept ToFunctionPointer = requires(F f) {
  { +f } -> FunctionPointer;
};

template <class Fn>
struct Signature;
template <class R, class... P>
struct Signature<R (*)(P...)> {
  using Params = std::tuple<std::remove_cvref_t<P>...>;
};
template <class R, class... P>
struct Signature<R (*)(P...) noexcept> {
  using Params = std::tuple<std::remove_cvref_t<P>...>;
};

template <class Tuple>
struct TuplePicklable;
template <class... T>
struct TuplePicklable<std::tuple<T...>>
    : std::bool_constant<(reduction::is_picklable_v<T> && ...)> {};

template <class Fn, class Tuple>
void call_spawned(AnyFunction fn, const char* data, std::size_t size, void (*ready)()) {
  Tuple args = reduction::load_from<Tuple>(data, size);
  ready();
  std::apply(reinterpret_cast<Fn>(fn), args);
}

[[noreturn]] MP_API void throw_not_spawnable(const char* why);

// A function pointer and its arguments, converted to the parameter types.
template <class Fn, class Tuple>
class FunctionTarget final : public TargetBase {
 public:
  FunctionTarget(Fn fn, Tuple args) : fn_(fn), args_(std::move(args)) {}
  void call() override { std::apply(fn_, args_); }
  SpawnTarget spawn_target() const override {
    if constexpr (TuplePicklable<Tuple>::value) {
      SpawnTarget t;
      t.trampoline = reinterpret_cast<AnyFunction>(&call_spawned<Fn, Tuple>);
      t.function = reinterpret_cast<AnyFunction>(fn_);
      reduction::dump_into(t.args, args_);
      return t;
    } else {
      throw_not_spawnable("an argument type of the target cannot be serialized");
    }
  }

 private:
  Fn fn_;
  Tuple args_;
};

// Any other callable: usable under fork only.
template <class F, class Tuple>
class CallableTarget final : public TargetBase {
 public:
  CallableTarget(F f, Tuple args) : f_(std::move(f)), args_(std::move(args)) {}
  void call() override { std::apply(f_, args_); }
  SpawnTarget spawn_target() const override {
    throw_not_spawnable("the target is not a function or captureless lambda");
  }

 private:
  F f_;
  Tuple args_;
};

template <class F, class... Args>
std::unique_ptr<TargetBase> make_target(F&& f, Args&&... args) {
  using D = std::decay_t<F>;
  if constexpr (ToFunctionPointer<D>) {
    using Fn = decltype(+std::declval<D&>());
    using Tuple = typename Signature<Fn>::Params;
    static_assert(std::tuple_size_v<Tuple> == sizeof...(Args),
                  "mp::Process: wrong number of arguments for the target function");
    static_assert(std::is_constructible_v<Tuple, Args&&...>,
                  "mp::Process: the arguments do not convert to the target's parameter types");
    return std::make_unique<FunctionTarget<Fn, Tuple>>(+f, Tuple(std::forward<Args>(args)...));
  } else {
    using Tuple = std::tuple<std::decay_t<Args>...>;
    static_assert(std::is_invocable_v<D&, std::decay_t<Args>&...>,
                  "mp::Process: the target cannot be called with these arguments");
    return std::make_unique<CallableTarget<D, Tuple>>(std::forward<F>(f),
                                                      Tuple(std::forward<Args>(args)...));
  }
}

struct ProcessTag {};

// While set (in a spawned child rebuilding a SpawnableProcess), a constructed Process takes no
// new identity: it becomes the current process, as CPython's unpickled Process object does.
class MP_API RebuildScope {
 public:
  RebuildScope() noexcept;
  ~RebuildScope();
  RebuildScope(const RebuildScope&) = delete;
  RebuildScope& operator=(const RebuildScope&) = delete;
};

// In a spawned child: rebuilds the Process subclass D from its serialized fields and runs it.
template <class D>
void run_spawned_subclass(AnyFunction, const char* data, std::size_t size, void (*ready)()) {
  auto self = [&] {
    RebuildScope scope;
    return reduction::load_from<D>(data, size);
  }();
  ready();
  self.run();
}

// The parent's side: serializes the subclass object itself while the spawn is prepared.
template <class D>
class SubclassTarget final : public TargetBase {
 public:
  explicit SubclassTarget(D& self) : self_(self) {}
  void call() override { self_.run(); }
  SpawnTarget spawn_target() const override {
    SpawnTarget t;
    t.trampoline = reinterpret_cast<AnyFunction>(&run_spawned_subclass<D>);
    t.function = t.trampoline;
    reduction::dump_into(t.args, self_);
    return t;
  }

 private:
  D& self_;
};

template <class F>
concept NotProcessArgument = !std::is_same_v<std::remove_cvref_t<F>, Context> &&
                             !std::is_same_v<std::remove_cvref_t<F>, ProcessTag> &&
                             !std::is_base_of_v<Process, std::remove_cvref_t<F>>;

}  // namespace detail

class MP_API Process {
  using PrivateTag = detail::ProcessTag;

 public:
  // A process with no target: run() does nothing unless a subclass overrides it. A subclass that
  // overrides run() starts under fork as is; under spawn it derives from SpawnableProcess (below),
  // which rebuilds it in the child (Python pickles the object).
  Process();
  explicit Process(const Context& ctx);
  template <class F, class... Args>
  requires detail::NotProcessArgument<F>
  explicit Process(F&& target, Args&&... args)
      : Process(PrivateTag{}, nullptr,
                detail::make_target(std::forward<F>(target), std::forward<Args>(args)...)) {}
  template <class F, class... Args>
  Process(const Context& ctx, F&& target, Args&&... args)
      : Process(PrivateTag{}, &ctx,
                detail::make_target(std::forward<F>(target), std::forward<Args>(args)...)) {}

  Process(const Process&) = default;
  Process& operator=(const Process&) = default;
  Process(Process&&) noexcept = default;
  Process& operator=(Process&&) noexcept = default;
  virtual ~Process();

  // Starts the child. Throws std::logic_error "cannot start a process twice" (and CPython's other
  // misuse messages), ProcessError/OSError when the child cannot be launched or bootstrapped
  // (spawn: the child's own error message is reported here). All or nothing: if it throws, no
  // child ran the target and none is left (not even a zombie); if it returns, the child is tracked.
  // Flushes the parent's stdio and std::cout/cerr/clog first (CPython's Popen does).
  // A target that calls pthread_exit() ends the child with exit code 0, as a return would.
  void start();
  // What the child runs: the target with its arguments. Override in a subclass (fork only).
  virtual void run();
  // Waits for the child to end. join(timeout) returns after at most about `timeout`; the child
  // may still run then (exitcode() stays empty). Throws std::logic_error when not started or
  // joining itself.
  void join();
  template <class Rep, class Period>
  void join(std::chrono::duration<Rep, Period> timeout) {
    join_for(detail::to_nanos(timeout));
  }
  // join(1.5): Python's seconds as a number.
  void join(double timeout_seconds) { join_for(detail::seconds_to_nanos(timeout_seconds)); }
  bool is_alive() const;
  // std::nullopt until the child has ended (and been reaped by join/is_alive/exitcode).
  std::optional<int> exitcode() const;
  std::optional<int> pid() const;
  std::optional<int> ident() const { return pid(); }
  const std::string& name() const;
  void set_name(std::string name);
  bool daemon() const;
  // Throws std::logic_error "process has already started" after start().
  void set_daemon(bool daemonic);
  // The secret shared with children, used by Listener/Client and managers by default.
  const std::string& authkey() const;
  void set_authkey(std::string key);
  void terminate();  // SIGTERM
  void kill();       // SIGKILL
  // Releases the OS resources. Throws std::invalid_argument if the child still runs.
  void close();
  // A handle that becomes ready when the child ends (a pidfd on Linux), for connection::wait.
  std::intptr_t sentinel() const;

  // Identity: copies of one Process handle are equal (Python compares Process objects by identity).
  friend bool operator==(const Process& a, const Process& b) noexcept {
    return a.state_ == b.state_;
  }

 private:
  friend struct detail::ProcessAccess;  // lib/process_impl.hpp: the library's entry points
  explicit Process(std::shared_ptr<detail::ProcessState> state) : state_(std::move(state)) {}
  Process(PrivateTag, const Context* ctx, std::unique_ptr<detail::TargetBase> target);
  void join_for(std::chrono::nanoseconds timeout);
  template <class Derived>
  friend class SpawnableProcess;
  // What a spawned child needs to rebuild this object (SpawnableProcess); null: not spawnable.
  virtual std::unique_ptr<detail::TargetBase> spawn_self() { return nullptr; }
  void join_until(const std::chrono::nanoseconds* timeout);
  void adopt_class_name() const;
  std::shared_ptr<detail::ProcessState> state_;
};

// A Process subclass that overrides run() and can be started under spawn too (CPython pickles
// the Process object). Derived must be default constructible and serializable: it lists its
// fields in `template <class Archive> void serialize(Archive& ar) { ar(field1, field2); }`. The
// spawned child default-constructs a Derived, loads the fields and calls run(); inside run(),
// name(), pid() etc. are the child's own, as in Python:
//
//   class Worker : public mp::SpawnableProcess<Worker> {
//    public:
//     Worker() = default;
//     Worker(int n, mp::Queue<int> q) : n_(n), q_(std::move(q)) {}
//     void run() override { q_.put(n_ * n_); }
//     template <class Archive> void serialize(Archive& ar) { ar(n_, q_); }
//    private:
//     int n_ = 0;
//     mp::Queue<int> q_;
//   };
template <class Derived>
class SpawnableProcess : public Process {
 public:
  using Process::Process;

 private:
  std::unique_ptr<detail::TargetBase> spawn_self() override {
    static_assert(std::is_base_of_v<SpawnableProcess, Derived>,
                  "mp::SpawnableProcess<Derived>: Derived must be the class deriving from it");
    static_assert(
        std::is_default_constructible_v<Derived>,
        "mp::SpawnableProcess<Derived>: Derived must be default constructible (the spawned "
        "child constructs it, then loads its fields)");
    static_assert(reduction::is_picklable_v<Derived>,
                  "mp::SpawnableProcess<Derived>: give Derived a `template <class Archive> void "
                  "serialize(Archive&)` member listing the fields the child needs");
    return std::make_unique<detail::SubclassTarget<Derived>>(static_cast<Derived&>(*this));
  }
};

// The Process object of the calling process ("MainProcess" in the main program).
MP_API Process current_process();
// The parent, in a child; std::nullopt in the main process. Its is_alive() turns false when the
// parent ends, and join(timeout) waits for that.
MP_API std::optional<Process> parent_process();
// The live children of the calling process; ended ones are reaped (as CPython).
MP_API std::vector<Process> active_children();
MP_API unsigned cpu_count();

}  // namespace mp
