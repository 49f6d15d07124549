// mp/futures.hpp — concurrent.futures: ProcessPoolExecutor, ThreadPoolExecutor, Future, wait,
// as_completed (CPython: Lib/concurrent/futures/_base.py, process.py, thread.py).
//
//   mp::futures::ProcessPoolExecutor ex(4);
//   mp::futures::Future<int> f = ex.submit(square, 3);     // f.result() == 9
//   for (int x : ex.map(square, inputs)) ...               // lazy, in order
//   for (auto& g : mp::futures::as_completed(futures)) ...
//   auto [done, not_done] = mp::futures::wait(futures, 1s, mp::futures::FIRST_COMPLETED);
//
// The executors run on the engine of mp/pool.hpp (same tasks, same exception rules, same
// guarantees), with CPython's executor contract on top: a worker that dies abruptly breaks the
// pool — every pending future and every later submit() fail with BrokenProcessPool, never a
// hang. Pending futures that no worker has taken can be cancelled; shutdown(cancel_futures=true)
// cancels all of them. The destructor is shutdown(true) (Python's `with` block).
//
// Differences from Python
// - map() reads its input lazily with bounded buffering (CPython submits the whole input at once)
//   and returns an iterator with next(timeout); chunksize left out adapts, as Pool.map's.
// - max_tasks_per_child works under fork too (CPython refuses it with fork).
// - ProcessPoolExecutorOptions::task_timeout: a per-task time limit, as PoolOptions'.
#pragma once

#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "mp/pool.hpp"

namespace mp::futures {

// concurrent.futures.CancelledError: result()/exception() of a cancelled future.
class MP_API CancelledError : public std::runtime_error {
 public:
  CancelledError() : std::runtime_error("CancelledError") {}
  using std::runtime_error::runtime_error;
};
// BrokenExecutor and its subclasses: the executor cannot run tasks any more.
class MP_API BrokenExecutor : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
class MP_API BrokenProcessPool : public BrokenExecutor {
 public:
  using BrokenExecutor::BrokenExecutor;
};
class MP_API BrokenThreadPool : public BrokenExecutor {
 public:
  using BrokenExecutor::BrokenExecutor;
};

enum ReturnWhen { FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED };

template <class R>
class Future {
  using State = detail::pool::State<R>;

 public:
  Future() = default;
  explicit Future(std::shared_ptr<State> state) : state_(std::move(state)) {}

  // The result; rethrows the task's exception; CancelledError if cancelled; result(timeout)
  // throws mp::TimeoutError when not done in time.
  R result() { return result_until(nullptr); }
  template <class Rep, class Period>
  R result(std::chrono::duration<Rep, Period> timeout) {
    const auto deadline = mp::detail::deadline_after(timeout);
    return result_until(&deadline);
  }
  // The task's exception (null if it returned); CancelledError if cancelled.
  std::exception_ptr exception() { return exception_until(nullptr); }
  template <class Rep, class Period>
  std::exception_ptr exception(std::chrono::duration<Rep, Period> timeout) {
    const auto deadline = mp::detail::deadline_after(timeout);
    return exception_until(&deadline);
  }
  bool done() const { return state_->done(); }
  bool running() const {
    std::lock_guard g(state_->mutex);
    return state_->status == State::running;
  }
  bool cancelled() const {
    std::lock_guard g(state_->mutex);
    return state_->status == State::cancelled;
  }
  // Cancels the future unless a worker took it (running) or it is done. True if cancelled.
  bool cancel() {
    {
      std::lock_guard g(state_->mutex);
      if (state_->status == State::cancelled) return true;
      if (state_->status != State::pending) return false;
      state_->status = State::cancelled;  // from now on no worker takes it
    }
    state_->complete(State::cancelled);
    return true;
  }
  // fn(future) runs when the future is done (at once if it is), in the thread that completed it;
  // as in CPython, result() may return before it has run. An exception it throws is reported on
  // stderr and ignored, as CPython logs it.
  template <class F>
  void add_done_callback(F fn) {
    Future self = *this;
    auto call = [fn = std::move(fn), self]() mutable { fn(self); };
    {
      std::lock_guard g(state_->mutex);
      if (state_->status != State::finished && state_->status != State::cancelled) {
        state_->done_callbacks.emplace_back(std::move(call));
        return;
      }
    }
    try {
      call();
    } catch (...) {
      detail::pool::report_callback_error("done callback", std::current_exception());
    }
  }

  // For wait()/as_completed().
  const std::shared_ptr<State>& state() const noexcept { return state_; }
  friend bool operator==(const Future& a, const Future& b) { return a.state_ == b.state_; }

 private:
  // Returns when done: from then on status, value and error do not change (complete() set
  // is_done after them), so they are read without the lock.
  void wait_or_throw(const std::chrono::steady_clock::time_point* deadline) {
    if (!state_->wait_until(deadline)) throw TimeoutError("Future.result(): timed out");
    if (!state_->is_done.load(std::memory_order_acquire)) {  // cancel() has not completed it yet
      std::unique_lock g(state_->mutex);
      state_->cv.wait(g, [&] { return state_->is_done.load(std::memory_order_relaxed); });
    }
    if (state_->status == State::cancelled) throw CancelledError();
  }
  R result_until(const std::chrono::steady_clock::time_point* deadline) {
    wait_or_throw(deadline);
    if (state_->error) std::rethrow_exception(state_->error);
    if constexpr (!std::is_void_v<R>) return *state_->value;
  }
  std::exception_ptr exception_until(const std::chrono::steady_clock::time_point* deadline) {
    wait_or_throw(deadline);
    return state_->error;
  }
  std::shared_ptr<State> state_;
};

namespace detail {

// Wakes a waiter of several futures.
struct Waiter {
  std::mutex mutex;
  std::condition_variable cv;
  std::size_t finished = 0;
  std::size_t failed = 0;
};

template <class R>
void watch(const Future<R>& f, const std::shared_ptr<Waiter>& w) {
  auto& s = *f.state();
  auto note = [w, s = f.state()] {
    bool failed = false;
    {
      std::lock_guard g(s->mutex);
      failed = s->status == mp::detail::pool::State<R>::finished && s->error;
    }
    {
      std::lock_guard g(w->mutex);
      ++w->finished;
      if (failed) ++w->failed;
    }
    w->cv.notify_all();
  };
  {
    std::lock_guard g(s.mutex);
    if (s.status != mp::detail::pool::State<R>::finished &&
        s.status != mp::detail::pool::State<R>::cancelled) {
      s.done_callbacks.emplace_back(std::move(note));
      return;
    }
  }
  note();
}

template <class R>
bool failed(const Future<R>& f) {
  return !f.cancelled() && f.done() && f.exception() != nullptr;
}

}  // namespace detail

template <class R>
struct DoneAndNotDone {
  std::vector<Future<R>> done;
  std::vector<Future<R>> not_done;
};

// concurrent.futures.wait(fs, timeout, return_when): the futures done and not done when the
// condition is met or the timeout passed (no exception on timeout, as CPython).
template <class R>
DoneAndNotDone<R> wait(const std::vector<Future<R>>& fs,
                       std::optional<std::chrono::nanoseconds> timeout = std::nullopt,
                       ReturnWhen return_when = ALL_COMPLETED) {
  auto w = std::make_shared<detail::Waiter>();
  for (const auto& f : fs) detail::watch(f, w);
  const auto deadline = mp::detail::deadline_after(timeout.value_or(std::chrono::nanoseconds{0}));
  {
    std::unique_lock g(w->mutex);
    auto met = [&] {
      if (w->finished >= fs.size()) return true;
      if (return_when == FIRST_COMPLETED) return w->finished > 0;
      if (return_when == FIRST_EXCEPTION) return w->failed > 0;
      return false;
    };
    if (timeout) {
      w->cv.wait_until(g, deadline, met);
    } else {
      w->cv.wait(g, met);
    }
  }
  DoneAndNotDone<R> out;
  for (const auto& f : fs) (f.done() ? out.done : out.not_done).push_back(f);
  return out;
}
template <class R, class Rep, class Period>
DoneAndNotDone<R> wait(const std::vector<Future<R>>& fs, std::chrono::duration<Rep, Period> timeout,
                       ReturnWhen return_when = ALL_COMPLETED) {
  return wait(fs, std::optional<std::chrono::nanoseconds>(mp::detail::to_nanos(timeout)),
              return_when);
}
template <class R>
DoneAndNotDone<R> wait(const std::vector<Future<R>>& fs, ReturnWhen return_when) {
  return wait(fs, std::nullopt, return_when);
}

// concurrent.futures.as_completed(fs, timeout): the futures in the order they complete (those
// already done first). Iterating past the timeout throws mp::TimeoutError
// "N (of M) futures unfinished". Duplicates are yielded once.
template <class R>
class AsCompleted {
 public:
  AsCompleted(const std::vector<Future<R>>& fs, std::optional<std::chrono::nanoseconds> timeout)
      : s_(std::make_shared<Shared>()) {
    if (timeout) s_->deadline = mp::detail::deadline_after(*timeout);
    for (const auto& f : fs)
      if (std::find(s_->all.begin(), s_->all.end(), f) == s_->all.end()) s_->all.push_back(f);
    for (const auto& f : s_->all) {
      auto s = s_;
      auto& st = *f.state();
      auto note = [s, f] {
        {
          std::lock_guard g(s->mutex);
          s->ready.push_back(f);
        }
        s->cv.notify_all();
      };
      std::unique_lock g(st.mutex);
      if (st.status != mp::detail::pool::State<R>::finished &&
          st.status != mp::detail::pool::State<R>::cancelled) {
        st.done_callbacks.emplace_back(std::move(note));
      } else {
        g.unlock();
        note();
      }
    }
  }

  class iterator {
   public:
    using value_type = Future<R>;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    explicit iterator(AsCompleted* owner) : owner_(owner) { advance(); }
    const Future<R>& operator*() const { return *current_; }
    Future<R>& operator*() { return *current_; }
    iterator& operator++() {
      advance();
      return *this;
    }
    void operator++(int) { advance(); }
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return !it.current_; }

   private:
    void advance() { current_ = owner_->next(); }
    AsCompleted* owner_ = nullptr;
    std::optional<Future<R>> current_;
  };
  iterator begin() { return iterator(this); }
  std::default_sentinel_t end() { return {}; }

  // The next completed future; nullopt when all were yielded.
  std::optional<Future<R>> next() {
    std::unique_lock g(s_->mutex);
    auto have = [&] { return !s_->ready.empty() || s_->yielded == s_->all.size(); };
    if (s_->deadline) {
      if (!s_->cv.wait_until(g, *s_->deadline, have))
        throw TimeoutError(std::to_string(s_->all.size() - s_->yielded) + " (of " +
                           std::to_string(s_->all.size()) + ") futures unfinished");
    } else {
      s_->cv.wait(g, have);
    }
    if (s_->ready.empty()) return std::nullopt;
    Future<R> f = std::move(s_->ready.front());
    s_->ready.pop_front();
    ++s_->yielded;
    return f;
  }

 private:
  struct Shared {
    std::mutex mutex;
    std::condition_variable cv;
    std::vector<Future<R>> all;
    std::deque<Future<R>> ready;
    std::size_t yielded = 0;
    std::optional<std::chrono::steady_clock::time_point> deadline;
  };
  std::shared_ptr<Shared> s_;
};

template <class R>
AsCompleted<R> as_completed(const std::vector<Future<R>>& fs) {
  return AsCompleted<R>(fs, std::nullopt);
}
template <class R, class Rep, class Period>
AsCompleted<R> as_completed(const std::vector<Future<R>>& fs,
                            std::chrono::duration<Rep, Period> timeout) {
  return AsCompleted<R>(fs, mp::detail::to_nanos(timeout));
}

// ProcessPoolExecutor(max_workers, mp_context, initializer, initargs, max_tasks_per_child).
struct ProcessPoolExecutorOptions {
  std::optional<int> max_workers = std::nullopt;  // default: cpu_count()
  std::optional<Context> mp_context = std::nullopt;
  std::optional<int> max_tasks_per_child = std::nullopt;
  std::optional<std::chrono::nanoseconds> task_timeout =
      std::nullopt;  // beyond CPython: see PoolOptions
};

namespace detail {

// The executor API over a pool engine (Threads: ThreadPoolExecutor).
template <bool Threads>
class BasicExecutor : protected mp::detail::pool::BasicPool<Threads> {
  using Base = mp::detail::pool::BasicPool<Threads>;

 public:
  BasicExecutor(BasicExecutor&&) noexcept = default;
  ~BasicExecutor() {
    if (!this->engine_) return;
    try {
      shutdown(true);
    } catch (...) {
    }
  }

  // Throws std::runtime_error "cannot schedule new futures after shutdown", or BrokenProcessPool
  // once a worker died abruptly.
  template <class F, class... A>
  auto submit(F&& f, A&&... args) {
    check_open();
    auto state = this->submit_one(mp::callbacks(nullptr, nullptr), std::forward<F>(f),
                                  std::forward<A>(args)...);
    using R = typename decltype(state)::element_type::Result;
    return Future<R>(std::move(state));
  }
  // Executor.map(fn, iterable, chunksize): lazy, in order; next(timeout) on the iterator.
  template <class F, std::ranges::input_range Range>
  auto map(F&& f, Range&& inputs, std::optional<int> chunksize = std::nullopt) {
    check_open();
    return this->template stream<false>(true, std::forward<F>(f), std::forward<Range>(inputs),
                                        chunksize);
  }
  // Executor.shutdown(wait, cancel_futures): no more submits; cancel_futures cancels every
  // future no worker has taken; wait: returns when the running ones are done and the workers
  // ended.
  void shutdown(bool wait = true, bool cancel_futures = false) {
    shutdown_ = true;
    if (cancel_futures) this->engine_->cancel_pending();
    this->engine_->close();
    if (wait) this->engine_->join();
  }

 protected:
  using Base::Base;
  void check_open() const {
    if (shutdown_) throw std::runtime_error("cannot schedule new futures after shutdown");
  }
  bool shutdown_ = false;
};

std::exception_ptr MP_API broken_process_pool(const std::string& message);
MP_API std::shared_ptr<mp::detail::pool::Engine> make_executor_engine(
    const ProcessPoolExecutorOptions& options, mp::detail::pool::EngineConfig config);
MP_API std::shared_ptr<mp::detail::pool::Engine> make_thread_executor_engine(
    std::optional<int> max_workers, mp::detail::pool::EngineConfig config);

}  // namespace detail

// concurrent.futures.ProcessPoolExecutor. Throws std::invalid_argument "max_workers must be
// greater than 0", "max_tasks_per_child must be >= 1".
class ProcessPoolExecutor : public detail::BasicExecutor<false> {
 public:
  ProcessPoolExecutor() : ProcessPoolExecutor(ProcessPoolExecutorOptions{}) {}
  explicit ProcessPoolExecutor(int max_workers)
      : ProcessPoolExecutor(make_options(max_workers, std::nullopt)) {}
  ProcessPoolExecutor(const Context& ctx, int max_workers)
      : ProcessPoolExecutor(make_options(max_workers, ctx)) {}
  explicit ProcessPoolExecutor(const ProcessPoolExecutorOptions& options)
      : ProcessPoolExecutor(options, nullptr) {}
  template <class Init, class... A>
  ProcessPoolExecutor(const ProcessPoolExecutorOptions& options, Init&& initializer,
                      A&&... initargs) {
    mp::detail::pool::EngineConfig config;
    mp::detail::pool::set_initializer(config, std::forward<Init>(initializer),
                                      std::forward<A>(initargs)...);
    engine_ = detail::make_executor_engine(options, std::move(config));
  }
  // Python 3.14: ends every worker now with SIGTERM (terminate_workers) or SIGKILL
  // (kill_workers) and shuts the executor down; unfinished futures fail with BrokenProcessPool.
  void terminate_workers() {
    shutdown_ = true;
    engine_->signal_workers(false);
  }
  void kill_workers() {
    shutdown_ = true;
    engine_->signal_workers(true);
  }

 private:
  static ProcessPoolExecutorOptions make_options(int max_workers, std::optional<Context> ctx) {
    ProcessPoolExecutorOptions o;
    o.max_workers = max_workers;
    o.mp_context = std::move(ctx);
    return o;
  }
};

// concurrent.futures.ThreadPoolExecutor: any callable; max_workers defaults to
// min(32, cpu_count() + 4).
class ThreadPoolExecutor : public detail::BasicExecutor<true> {
 public:
  ThreadPoolExecutor() : ThreadPoolExecutor(std::nullopt) {}
  explicit ThreadPoolExecutor(std::optional<int> max_workers) {
    engine_ = detail::make_thread_executor_engine(max_workers, mp::detail::pool::EngineConfig{});
  }
  template <class Init, class... A>
  ThreadPoolExecutor(std::optional<int> max_workers, Init&& initializer, A&&... initargs) {
    mp::detail::pool::EngineConfig config;
    config.thread_initializer = [init = std::forward<Init>(initializer),
                                 args = std::make_tuple(std::forward<A>(initargs)...)]() mutable {
      std::apply(init, args);
    };
    engine_ = detail::make_thread_executor_engine(max_workers, std::move(config));
  }
};

}  // namespace mp::futures
