// mp/detail/call_job.hpp — internals of an executor's submit(): one call f(args...) as a pool
// job whose future State lives in the job (one allocation per submit; the Future shares the
// job's ownership). Not part of the API. Its outcomes are those of mp/pool_jobs.hpp's MapJob
// with one item into a StateSink (same errors, same cancellation), without the source, sink,
// chunk bookkeeping and their allocations and locks: the round trip of MPIPoolExecutor::submit.
#pragma once

#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <tuple>
#include <utility>

#include "mp/pool_jobs.hpp"

namespace mp::detail::pool {

// Processes only (Fn a function pointer, arguments serialized).
template <class Fn, class Args, class R>
class CallJob final : public Job {
 public:
  CallJob(Fn fn, Args&& args) : fn_(fn), args_(std::move(args)) {}

  State<R> state;

  Next next(Chunk& c, bool, int) noexcept override {
    if (!args_) return Next::done;  // handed out (next() runs under the engine's lock)
    {
      std::lock_guard g(state.mutex);
      if (state.status == State<R>::cancelled) {
        args_.reset();
        return Next::done;
      }
      state.status = State<R>::running;
    }
    c.index = 0;
    c.runner = reinterpret_cast<AnyFunction>(&run_chunk<Fn, Args>);
    c.function = reinterpret_cast<AnyFunction>(fn_);
    c.args.clear();
    try {
      ItemWriter w(c.args);
      w.count(1);
      if constexpr (kRawItem<Args>) {
        w.write(*args_);
      } else {
        HandleCapture capture;
        w.write(*args_);
        c.handles = capture.take();
      }
    } catch (...) {  // an argument that cannot be serialized fails the call
      c.args.clear();
      c.local = [e = std::current_exception()](Outcome& o) { o.error = e; };
    }
    args_.reset();
    return Next::chunk;
  }

  void deliver(std::uint32_t, Outcome& o) noexcept override {
    if (!o.ok) return finish(std::nullopt, o.error);
    std::optional<Stored<R>> value;
    try {
      ItemReader in(o.bytes.data() + o.skip, o.bytes.size() - o.skip);
      if (in.count() != 1)
        throw UnpicklingError("corrupt data: wrong number of results in a chunk");
      if constexpr (std::is_void_v<R>) {
        value.emplace();
      } else {
        value.emplace(in.template read<Stored<R>>());
      }
      in.finish();
    } catch (...) {
      return finish(std::nullopt, std::current_exception());
    }
    finish(std::move(value), nullptr);
  }

  void fail(std::exception_ptr error) noexcept override { finish(std::nullopt, error); }

  void cancel_pending() noexcept override {
    std::unique_lock g(state.mutex);
    if (state.status != State<R>::pending) return;
    state.complete(State<R>::cancelled, g);  // from now on next() does not hand it out
  }

 private:
  void finish(std::optional<Stored<R>> value, std::exception_ptr error) noexcept {
    try {
      state.finish_now(std::move(value), error);
    } catch (...) {
      report_callback_error("result handler", std::current_exception());
    }
  }

  Fn fn_;
  std::optional<Args> args_;  // until handed out
};

}  // namespace mp::detail::pool
