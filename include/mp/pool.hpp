// mp/pool.hpp — Pool, ThreadPool, AsyncResult (CPython: multiprocessing/pool.py).
//
//   int square(int x) { return x * x; }
//   mp::Pool pool(4);                                   // Pool(4); Pool() uses cpu_count()
//   int y = pool.apply(square, 3);                      // pool.apply(square, (3,))
//   auto r = pool.apply_async(mp::callbacks(on_ok, on_err), square, 3);   // callback=, error_callback=
//   std::vector<int> v = pool.map(square, inputs);      // any input range; chunksize optional
//   for (int x : pool.imap_unordered(square, std::views::iota(0, 1'000'000), 16)) ...
//   pool.close(); pool.join();                          // or let the destructor terminate + join
//
// Tasks are functions or captureless lambdas whose arguments and result are serializable
// (mp/reduction.hpp), under every start method: workers exist from construction (a fork worker
// does not see globals changed later), and a task's function travels as its code location, its
// arguments as bytes. A task whose types cannot be sent does not compile. ThreadPool takes any
// callable and sends nothing. Shared objects (Lock, Value, Queue, manager proxies, ...) are valid
// initargs and task arguments: the descriptors of a task's arguments go to the worker that runs
// it with the task (Python: only proxies; the others raise "... objects should only be shared
// between processes through inheritance"). A result cannot hold one (that task fails so).
//
// An exception escaping a task is rethrown by get(), map() and the iterators: the same type for
// the <stdexcept> types and mp's own errors, else mp::RemoteError(type name, message).
// Callbacks run in the pool's result thread and have run before the matching get()/wait()
// returns; one that throws is reported on stderr and the pool goes on.
//
// Guarantees beyond CPython (see docs/RELIABILITY.md)
// - A worker that dies (SIGKILL, OOM, abort, exit) fails only the task it was running, with
//   mp::WorkerLostError naming the pid and the signal or exit code; the tasks it had been handed
//   but had not started run elsewhere; it is replaced and no call hangs (CPython's Pool hangs).
// - A result or exception that cannot be serialized or decoded fails only its own task.
// - imap/imap_unordered read their input lazily with a bounded number of chunks in flight or
//   buffered, so an endless or huge input runs in constant memory. After close() a lazy input
//   is read to its end without waiting for the consumer (results are buffered, as CPython does).
// - maxtasksperchild never strands work (a worker is never handed more tasks than it has left);
//   it works under fork and spawn.
// - terminate() and the destructor finish in bounded time (SIGTERM, then SIGKILL after 1 s),
//   also when a dead worker held a queue lock; results still pending then fail with
//   mp::ProcessError instead of blocking forever. Workers die with the pool's process.
// - PoolOptions::task_timeout: a task running longer is failed with mp::TimeoutError; its worker
//   is killed and replaced (as the Python libraries pebble and billiard).
// - chunksize left out adapts to the measured task time (joblib's auto batching): one-item chunks
//   for long tasks, chunks of ~2 ms of work for tiny ones. A given chunksize is used as is.
// Differences from Python: AsyncResult::wait(timeout) returns whether the result is ready;
// map() of a function returning void returns nothing.
// Compilers: g++ >= 12, clang >= 14. Any input range works; with clang 14 and libstdc++ 12, the
// standard views themselves (std::views::iota, ...) do not compile, whoever takes them.
#pragma once

#include <chrono>
#include <iterator>
#include <optional>
#include <ranges>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "mp/pool_jobs.hpp"

namespace mp {

// Pool(processes, initializer, initargs, maxtasksperchild, context) and the per-task time limit.
struct PoolOptions {
  std::optional<int> processes = std::nullopt;                          // default: cpu_count()
  std::optional<int> maxtasksperchild = std::nullopt;                   // default: unlimited
  std::optional<Context> context = std::nullopt;                        // default: get_context()
  std::optional<std::chrono::nanoseconds> task_timeout = std::nullopt;  // default: none
};

// The callback= and error_callback= of the _async methods, as their leading argument.
template <class OnResult, class OnError>
struct Callbacks {
  OnResult on_result;
  OnError on_error;
};
template <class OnResult, class OnError = std::nullptr_t>
Callbacks<OnResult, OnError> callbacks(OnResult on_result, OnError on_error = nullptr) {
  return {std::move(on_result), std::move(on_error)};
}

// multiprocessing.pool.AsyncResult (ApplyResult, MapResult).
template <class R>
class AsyncResult {
 public:
  AsyncResult() = default;
  explicit AsyncResult(std::shared_ptr<detail::pool::State<R>> state) : state_(std::move(state)) {}

  // The result, or the task's exception. get(timeout) throws mp::TimeoutError when not ready.
  R get() {
    state_->wait_until(static_cast<const std::chrono::steady_clock::time_point*>(nullptr));
    return value();
  }
  template <class Rep, class Period>
  R get(std::chrono::duration<Rep, Period> timeout) {
    if (!wait(timeout)) throw TimeoutError("AsyncResult.get(): timed out");
    return value();
  }
  void wait() {
    state_->wait_until(static_cast<const std::chrono::steady_clock::time_point*>(nullptr));
  }
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) {
    const auto deadline = detail::deadline_after(timeout);
    return state_->wait_until(&deadline);
  }
  bool ready() const { return state_->done(); }
  // Throws std::invalid_argument "AsyncResult not ready" before ready() (CPython: ValueError).
  bool successful() const {
    if (!state_->done()) throw std::invalid_argument("AsyncResult not ready");
    std::lock_guard g(state_->mutex);
    return !state_->error;
  }

  // For the library (map(): the value is moved out).
  R take() {
    wait();
    std::lock_guard g(state_->mutex);
    if (state_->error) std::rethrow_exception(state_->error);
    if constexpr (!std::is_void_v<R>) return std::move(*state_->value);
  }

 private:
  R value() {
    std::lock_guard g(state_->mutex);
    if (state_->error) std::rethrow_exception(state_->error);
    if constexpr (!std::is_void_v<R>) return *state_->value;
  }
  std::shared_ptr<detail::pool::State<R>> state_;
};

// multiprocessing.pool.IMapIterator: the results of imap()/imap_unordered(). An input range.
template <class T>
class IMapIterator {
 public:
  IMapIterator(std::shared_ptr<detail::pool::StreamSink<T>> sink,
               std::shared_ptr<detail::pool::Job> job, std::function<void()> abandon,
               std::shared_ptr<detail::pool::Engine> engine)
      : s_(std::make_shared<Shared>(std::move(sink), std::move(job), std::move(abandon),
                                    std::move(engine))) {}

  // next(): the next result, std::nullopt at the end (Python's StopIteration); rethrows the
  // task's exception. next(timeout) throws mp::TimeoutError when none comes in time.
  std::optional<T> next() { return s_->next(nullptr); }
  template <class Rep, class Period>
  std::optional<T> next(std::chrono::duration<Rep, Period> timeout) {
    const auto deadline = detail::deadline_after(timeout);
    return s_->next(&deadline);
  }

  class iterator {
   public:
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    explicit iterator(IMapIterator* owner) : owner_(owner) { advance(); }
    const T& operator*() const { return *value_; }
    T& operator*() { return *value_; }
    iterator& operator++() {
      advance();
      return *this;
    }
    void operator++(int) { advance(); }
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return !it.value_; }

   private:
    void advance() { value_ = owner_->next(); }
    IMapIterator* owner_ = nullptr;
    std::optional<T> value_;
  };
  iterator begin() { return iterator(this); }
  std::default_sentinel_t end() { return {}; }

 private:
  struct Shared {
    Shared(std::shared_ptr<detail::pool::StreamSink<T>> sink_,
           std::shared_ptr<detail::pool::Job> job_, std::function<void()> abandon_,
           std::shared_ptr<detail::pool::Engine> engine_)
        : sink(std::move(sink_)),
          job(std::move(job_)),
          abandon(std::move(abandon_)),
          engine(std::move(engine_)) {}
    ~Shared() {
      if (abandon) abandon();
    }
    std::optional<T> next(const std::chrono::steady_clock::time_point* deadline) {
      bool freed = false;
      struct Kick {
        bool& freed;
        detail::pool::Engine& engine;
        ~Kick() {
          if (freed) engine.kick();
        }
      } kick{freed, *engine};
      return sink->next(deadline, freed);
    }
    std::shared_ptr<detail::pool::StreamSink<T>> sink;
    std::shared_ptr<detail::pool::Job> job;
    std::function<void()> abandon;
    std::shared_ptr<detail::pool::Engine> engine;
  };
  std::shared_ptr<Shared> s_;
};

namespace detail::pool {

// The callable a job stores: a function pointer for processes, the callable itself for threads.
template <bool Threads, class F>
auto task_function(F&& f) {
  using D = std::decay_t<F>;
  if constexpr (Threads) {
    return D(std::forward<F>(f));
  } else {
    static_assert(ToFunctionPointer<D>,
                  "mp::Pool: a task must be a function or captureless lambda (ThreadPool takes any "
                  "callable)");
    return +f;
  }
}

// The argument tuple a task is called with: the function's parameter types for processes (each
// argument is converted when the task is made, as mp::Process does), the decayed arguments for
// threads.
template <bool Threads, class Fn, class... A>
struct ArgsOf {
  using type = std::tuple<std::decay_t<A>...>;
};
template <class Fn, class... A>
struct ArgsOf<false, Fn, A...> {
  using type = typename Signature<Fn>::Params;
};
template <bool Threads, class Fn, class Range, bool Star>
struct ItemArgs;
template <class Fn, class Range, bool Star>
struct ItemArgs<false, Fn, Range, Star> {
  using type = typename Signature<Fn>::Params;
};
template <class Fn, class Range>
struct ItemArgs<true, Fn, Range, false> {
  using type = std::tuple<std::decay_t<std::ranges::range_reference_t<Range>>>;
};
template <class Fn, class Range>
struct ItemArgs<true, Fn, Range, true> {
  using type = std::decay_t<std::ranges::range_reference_t<Range>>;
};

template <class Fn, class Args>
using ResultOf = decltype(std::apply(std::declval<Fn&>(), std::declval<Args&>()));

template <class Args>
void check_args() {
  static_assert(
      TuplePicklable<Args>::value,
      "mp::Pool: an argument type of the task cannot be serialized (see mp/reduction.hpp)");
}

inline std::optional<std::size_t> check_chunksize(std::optional<int> chunksize) {
  if (!chunksize) return std::nullopt;
  if (*chunksize < 1)
    throw std::invalid_argument("Chunksize must be 1+, not " + std::to_string(*chunksize));
  return static_cast<std::size_t>(*chunksize);
}

template <class R, class OnResult, class OnError>
std::function<void(State<R>&)> make_callbacks(OnResult on_result, OnError on_error) {
  return [on_result = std::move(on_result), on_error = std::move(on_error)](State<R>& s) {
    try {
      if (s.error) {
        if constexpr (!std::is_same_v<OnError, std::nullptr_t>) on_error(s.error);
      } else if constexpr (!std::is_same_v<OnResult, std::nullptr_t>) {
        if constexpr (std::is_void_v<R>) {
          on_result();
        } else {
          on_result(static_cast<const R&>(*s.value));
        }
      }
    } catch (...) {
      report_callback_error("callback", std::current_exception());
    }
  };
}

// What a lazy call keeps of its input: a reference to an lvalue range, the range itself moved in
// from an rvalue (as std::views::all, whose views clang 14 cannot instantiate over libstdc++ 12).
template <class R>
class RangeRef {
 public:
  explicit RangeRef(R& r) noexcept : r_(&r) {}
  auto begin() const { return std::ranges::begin(*r_); }
  auto end() const { return std::ranges::end(*r_); }

 private:
  R* r_;
};
template <class Range>
using KeptRange =
    std::conditional_t<std::is_lvalue_reference_v<Range>, RangeRef<std::remove_reference_t<Range>>,
                       std::remove_cvref_t<Range>>;

// map() sends the input from where it is: processes, a contiguous input whose elements are the
// task's one parameter type and their own wire form.
template <class F, class Range>
constexpr bool map_in_place() {
  using D = std::decay_t<F>;
  if constexpr (!std::ranges::contiguous_range<Range> || !std::ranges::sized_range<Range> ||
                !ToFunctionPointer<D>) {
    return false;
  } else {
    using E = std::remove_cv_t<std::ranges::range_value_t<Range>>;
    using Fn = decltype(+std::declval<D&>());
    return kRawBytes<E> && std::is_same_v<typename Signature<Fn>::Params, std::tuple<E>>;
  }
}
template <bool Threads, class F, class Range>
inline constexpr bool kMapInPlace = !Threads && map_in_place<F, Range>();

template <class T>
struct IsCallbacks : std::false_type {};
template <class A, class B>
struct IsCallbacks<Callbacks<A, B>> : std::true_type {};

// The API shared by Pool (Threads = false) and ThreadPool (true).
template <bool Threads>
class BasicPool {
 public:
  BasicPool(const BasicPool&) = delete;
  BasicPool& operator=(const BasicPool&) = delete;
  BasicPool(BasicPool&&) noexcept = default;
  BasicPool& operator=(BasicPool&&) noexcept = default;
  // Python's `with Pool() as p:` — terminates and joins.
  ~BasicPool() {
    if (!engine_) return;
    try {
      engine_->terminate();
      engine_->join();
    } catch (...) {
    }
  }

  // pool.apply(f, args): the result of f(args...) run in a worker.
  template <class F, class... A>
  auto apply(F&& f, A&&... args) {
    // The caller reads its result itself from the moment it is submitted (Engine::awaiting).
    detail::pool::Engine& e = *engine_;
    e.awaiting(true);
    decltype(submit_one(mp::callbacks(nullptr, nullptr), std::forward<F>(f),
                        std::forward<A>(args)...)) state;
    try {
      state =
          submit_one(mp::callbacks(nullptr, nullptr), std::forward<F>(f), std::forward<A>(args)...);
    } catch (...) {
      e.awaiting(false);
      throw;
    }
    state->wait_until(static_cast<const std::chrono::steady_clock::time_point*>(nullptr), &e);
    return AsyncResult<typename decltype(state)::element_type::Result>(std::move(state)).take();
  }
  template <class F, class... A>
  requires(!IsCallbacks<std::decay_t<F>>::value) auto apply_async(F&& f, A&&... args) {
    return apply_async(mp::callbacks(nullptr, nullptr), std::forward<F>(f),
                       std::forward<A>(args)...);
  }
  template <class OnResult, class OnError, class F, class... A>
  auto apply_async(Callbacks<OnResult, OnError> cb, F&& f, A&&... args) {
    auto state = submit_one(std::move(cb), std::forward<F>(f), std::forward<A>(args)...);
    return AsyncResult<typename decltype(state)::element_type::Result>(std::move(state));
  }

  // pool.map(f, iterable, chunksize): the input is read first (as CPython's list(iterable)); a
  // contiguous input of the task's parameter type, when that is its own bytes, is sent from
  // where it is (map() waits for the result, so no copy is needed).
  template <class F, std::ranges::input_range Range>
  auto map(F&& f, Range&& inputs, std::optional<int> chunksize = std::nullopt) {
    if constexpr (kMapInPlace<Threads, F, Range>) {
      return map_in_place(std::forward<F>(f), inputs, chunksize);
    } else {
      return map_async(std::forward<F>(f), std::forward<Range>(inputs), chunksize).take();
    }
  }
  template <class F, std::ranges::input_range Range>
  requires(!IsCallbacks<std::decay_t<F>>::value) auto map_async(
      F&& f, Range&& inputs, std::optional<int> chunksize = std::nullopt) {
    return many_async<false>(mp::callbacks(nullptr, nullptr), std::forward<F>(f),
                             std::forward<Range>(inputs), chunksize);
  }
  template <class OnResult, class OnError, class F, std::ranges::input_range Range>
  auto map_async(Callbacks<OnResult, OnError> cb, F&& f, Range&& inputs,
                 std::optional<int> chunksize = std::nullopt) {
    return many_async<false>(std::move(cb), std::forward<F>(f), std::forward<Range>(inputs),
                             chunksize);
  }
  // pool.starmap(f, iterable_of_tuples, chunksize)
  template <class F, std::ranges::input_range Range>
  auto starmap(F&& f, Range&& inputs, std::optional<int> chunksize = std::nullopt) {
    return starmap_async(std::forward<F>(f), std::forward<Range>(inputs), chunksize).take();
  }
  template <class F, std::ranges::input_range Range>
  requires(!IsCallbacks<std::decay_t<F>>::value) auto starmap_async(
      F&& f, Range&& inputs, std::optional<int> chunksize = std::nullopt) {
    return many_async<true>(mp::callbacks(nullptr, nullptr), std::forward<F>(f),
                            std::forward<Range>(inputs), chunksize);
  }
  template <class OnResult, class OnError, class F, std::ranges::input_range Range>
  auto starmap_async(Callbacks<OnResult, OnError> cb, F&& f, Range&& inputs,
                     std::optional<int> chunksize = std::nullopt) {
    return many_async<true>(std::move(cb), std::forward<F>(f), std::forward<Range>(inputs),
                            chunksize);
  }

  // pool.imap / imap_unordered: lazy. An lvalue input is referred to (keep it alive while
  // iterating); an rvalue one is moved into the iterator.
  template <class F, std::ranges::input_range Range>
  auto imap(F&& f, Range&& inputs, std::optional<int> chunksize = std::nullopt) {
    return stream<false>(true, std::forward<F>(f), std::forward<Range>(inputs), chunksize);
  }
  template <class F, std::ranges::input_range Range>
  auto imap_unordered(F&& f, Range&& inputs, std::optional<int> chunksize = std::nullopt) {
    return stream<false>(false, std::forward<F>(f), std::forward<Range>(inputs), chunksize);
  }

  // No more tasks; the workers end once the submitted ones are done.
  void close() { engine_->close(); }
  // Stops the workers now (SIGTERM, then SIGKILL after 1 s); unfinished results fail.
  void terminate() { engine_->terminate(); }
  // Waits for the workers to end. Throws std::invalid_argument "Pool is still running" before
  // close() or terminate().
  void join() { engine_->join(); }

  // For tests: the chunks handed to workers so far.
  std::uint64_t chunks_sent() const { return engine_->chunks_sent(); }

  template <bool Star, class F, std::ranges::input_range Range>
  auto stream(bool ordered, F&& f, Range&& inputs, std::optional<int> chunksize,
              std::size_t window = 0) {
    check_running();
    const auto cs = check_chunksize(chunksize);
    auto fn = task_function<Threads>(std::forward<F>(f));
    using Fn = decltype(fn);
    using Args = typename ItemArgs<Threads, Fn, Range, Star>::type;
    if constexpr (!Threads) check_args<Args>();
    using R = ResultOf<Fn, Args>;
    static_assert(!std::is_void_v<R>, "mp::Pool::imap: the task must return a value");
    using V = KeptRange<Range>;
    auto sink = std::make_shared<StreamSink<R>>(
        ordered, window ? window : 4 * static_cast<std::size_t>(engine_->processes()) + 2);
    auto job = std::make_shared<MapJob<Fn, Args, R>>(
        fn, std::make_unique<RangeSource<Args, Star, V>>(V(std::forward<Range>(inputs))), sink, cs);
    std::weak_ptr<MapJob<Fn, Args, R>> weak = job;
    submit(job);
    return IMapIterator<R>(
        sink, job,
        [weak] {
          if (auto j = weak.lock()) j->abandon();
        },
        engine_);
  }

 protected:
  BasicPool() = default;
  explicit BasicPool(std::shared_ptr<Engine> engine) : engine_(std::move(engine)) {}

  void submit(std::shared_ptr<Job> job) { engine_->submit(std::move(job)); }

  // One call f(args...) (apply_async, submit): its State.
  template <class OnResult, class OnError, class F, class... A>
  auto submit_one(Callbacks<OnResult, OnError> cb, F&& f, A&&... args) {
    auto fn = task_function<Threads>(std::forward<F>(f));
    using Fn = decltype(fn);
    using Args = typename ArgsOf<Threads, Fn, A...>::type;
    if constexpr (!Threads) {
      static_assert(std::tuple_size_v<Args> == sizeof...(A),
                    "mp::Pool::apply: wrong number of arguments for the task");
      check_args<Args>();
    }
    using R = ResultOf<Fn, Args>;
    std::vector<Args> items;
    items.emplace_back(std::forward<A>(args)...);
    auto state = std::make_shared<State<R>>();
    state->engine = engine_;
    auto sink = std::make_shared<StateSink<R, true>>(
        state, make_callbacks<R>(std::move(cb.on_result), std::move(cb.on_error)));
    submit(std::make_shared<MapJob<Fn, Args, Stored<R>>>(
        fn, std::make_unique<VectorSource<Args>>(std::move(items)), sink, std::size_t{1}));
    return state;
  }
  void check_running() const {
    if (!engine_->running()) throw std::invalid_argument("Pool not running");
  }

  template <bool Star, class OnResult, class OnError, class F, class Range>
  auto many_async(Callbacks<OnResult, OnError> cb, F&& f, Range&& inputs,
                  std::optional<int> chunksize) {
    check_running();
    const auto cs = check_chunksize(chunksize);
    auto fn = task_function<Threads>(std::forward<F>(f));
    using Fn = decltype(fn);
    using Args = typename ItemArgs<Threads, Fn, Range, Star>::type;
    if constexpr (!Threads) check_args<Args>();
    using R = ResultOf<Fn, Args>;
    using Whole = std::conditional_t<std::is_void_v<R>, void, std::vector<R>>;
    std::vector<Args> items;
    if constexpr (std::ranges::sized_range<Range>) items.reserve(std::ranges::size(inputs));
    for (auto&& e : inputs) items.push_back(to_args<Args, Star>(std::forward<decltype(e)>(e)));
    auto state = std::make_shared<State<Whole>>();
    state->engine = engine_;
    auto sink = std::make_shared<StateSink<R, false>>(
        state, make_callbacks<Whole>(std::move(cb.on_result), std::move(cb.on_error)));
    sink->reserve(items.size());
    submit(std::make_shared<MapJob<Fn, Args, Stored<R>>>(
        fn, std::make_unique<VectorSource<Args>>(std::move(items)), sink, cs));
    return AsyncResult<Whole>(state);
  }

  template <class F, class Range>
  auto map_in_place(F&& f, Range& inputs, std::optional<int> chunksize) {
    check_running();
    const auto cs = check_chunksize(chunksize);
    auto fn = task_function<Threads>(std::forward<F>(f));
    using Fn = decltype(fn);
    using E = std::remove_cv_t<std::ranges::range_value_t<Range>>;
    using Args = std::tuple<E>;
    using R = ResultOf<Fn, Args>;
    using Whole = std::conditional_t<std::is_void_v<R>, void, std::vector<R>>;
    auto state = std::make_shared<State<Whole>>();
    state->engine = engine_;
    auto sink = std::make_shared<StateSink<R, false>>(
        state, make_callbacks<Whole>(std::nullptr_t{}, std::nullptr_t{}));
    sink->reserve(static_cast<std::size_t>(std::ranges::size(inputs)));
    auto job = std::make_shared<MapJob<Fn, Args, Stored<R>>>(
        fn,
        std::make_unique<SpanSource<Args, E>>(std::ranges::data(inputs),
                                              static_cast<std::size_t>(std::ranges::size(inputs))),
        sink, cs);
    // However map() ends (an error may end it with chunks still out), the engine stops reading
    // `inputs` before it goes.
    struct Release {
      Engine& engine;
      Job& job;
      ~Release() { engine.release(job); }
    } release{*engine_, *job};
    submit(job);
    return AsyncResult<Whole>(std::move(state)).take();
  }

  std::shared_ptr<Engine> engine_;
};

MP_API std::shared_ptr<Engine> make_pool_engine(const PoolOptions& options, EngineConfig config);
MP_API std::shared_ptr<Engine> make_thread_pool_engine(std::optional<int> processes,
                                                       EngineConfig config);

}  // namespace detail::pool

// multiprocessing.Pool. Throws std::invalid_argument "Number of processes must be at least 1",
// "maxtasksperchild must be a positive int or None"; ProcessError/OSError when a worker cannot
// be started.
class Pool : public detail::pool::BasicPool<false> {
 public:
  Pool() : Pool(PoolOptions{}) {}
  explicit Pool(int processes) : Pool(make_options(processes, std::nullopt)) {}
  Pool(const Context& ctx, int processes) : Pool(make_options(processes, ctx)) {}
  explicit Pool(const PoolOptions& options) : Pool(options, nullptr) {}
  // Pool(options, initializer, initargs...): initializer(initargs...) runs first in every worker.
  template <class Init, class... A>
  Pool(const PoolOptions& options, Init&& initializer, A&&... initargs) {
    detail::pool::EngineConfig config;
    detail::pool::set_initializer(config, std::forward<Init>(initializer),
                                  std::forward<A>(initargs)...);
    engine_ = detail::pool::make_pool_engine(options, std::move(config));
  }

 private:
  static PoolOptions make_options(int processes, std::optional<Context> ctx) {
    PoolOptions o;
    o.processes = processes;
    o.context = std::move(ctx);
    return o;
  }
};

// multiprocessing.pool.ThreadPool: the same API over threads; tasks are any callables and
// nothing is serialized. terminate() cannot stop a running task: it waits for it (as CPython).
class ThreadPool : public detail::pool::BasicPool<true> {
 public:
  ThreadPool() : ThreadPool(std::nullopt) {}
  explicit ThreadPool(std::optional<int> processes) {
    engine_ = detail::pool::make_thread_pool_engine(processes, detail::pool::EngineConfig{});
  }
  // ThreadPool(processes, initializer, initargs...)
  template <class Init, class... A>
  ThreadPool(std::optional<int> processes, Init&& initializer, A&&... initargs) {
    detail::pool::EngineConfig config;
    config.thread_initializer = [init = std::forward<Init>(initializer),
                                 args = std::make_tuple(std::forward<A>(initargs)...)]() mutable {
      std::apply(init, args);
    };
    engine_ = detail::pool::make_thread_pool_engine(processes, std::move(config));
  }
};

}  // namespace mp
