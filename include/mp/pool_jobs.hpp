// mp/pool_jobs.hpp — internals shared by mp/pool.hpp and mp/futures.hpp: how a call is cut into
// chunks, sent to a worker and turned back into a typed result. Not part of the API; include
// mp/pool.hpp or mp/futures.hpp.
//
// One engine (lib/pool_engine.*) runs every pool: Pool and ProcessPoolExecutor over worker
// processes, ThreadPool and ThreadPoolExecutor over threads. It knows jobs only through `Job`:
// a job hands out chunks (a run of consecutive items) and receives each chunk's outcome. The
// typed side — reading the input, serializing arguments, decoding results, callbacks — is here.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <ranges>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "mp/context.hpp"
#include "mp/errors.hpp"
#include "mp/export.hpp"
#include "mp/heap.hpp"
#include "mp/process.hpp"
#include "mp/queues.hpp"
#include "mp/reduction.hpp"

namespace mp::detail::pool {

// ---- items of a chunk on the wire: [u32 count] then each value as mp/reduction.hpp writes it,
// except that values that are their bytes (kRawBytes: arithmetic and trivially copyable types),
// and argument tuples of them, are their bytes, without padding.
template <class T>
struct RawTuple : std::false_type {};
template <class... E>
struct RawTuple<std::tuple<E...>> : std::bool_constant<(kRawBytes<E> && ...)> {};
template <class T>
inline constexpr bool kRawItem = kRawBytes<T> || RawTuple<T>::value;
// The bytes of a kRawItem on the wire.
template <class T>
struct RawSize : std::integral_constant<std::size_t, sizeof(T)> {};
template <class... E>
struct RawSize<std::tuple<E...>> : std::integral_constant<std::size_t, (0 + ... + sizeof(E))> {};

template <class T>
void store_raw(char* p, const T& value) {
  if constexpr (kRawBytes<T>) {
    std::memcpy(p, static_cast<const void*>(&value), sizeof(T));
  } else {
    std::apply([&](const auto&... e) { ((std::memcpy(p, &e, sizeof e), p += sizeof e), ...); },
               value);
  }
}
template <class T>
void load_raw(const char* p, T& value) {
  if constexpr (kRawBytes<T>) {
    std::memcpy(static_cast<void*>(&value), p, sizeof(T));
  } else {
    std::apply(
        [&](auto&... e) {
          ((std::memcpy(static_cast<void*>(&e), p, sizeof e), p += sizeof e), ...);
        },
        value);
  }
}

class ItemWriter {
 public:
  explicit ItemWriter(std::string& out) : out_(out), ar_(out) {}
  void count(std::uint32_t n) { out_.append(reinterpret_cast<const char*>(&n), sizeof n); }
  template <class T>
  void write(const T& value) {
    if constexpr (kRawItem<T>) {
      write_all(&value, 1);
    } else {
      ar_(value);
    }
  }
  // n values; raw ones into a buffer grown once.
  template <class T>
  void write_all(const T* values, std::size_t n) {
    if constexpr (kRawBytes<T>) {
      out_.append(reinterpret_cast<const char*>(values), n * sizeof(T));
    } else if constexpr (kRawItem<T>) {
      const std::size_t at = out_.size();
      out_.resize(at + n * RawSize<T>::value);
      char* p = out_.data() + at;
      for (std::size_t i = 0; i < n; ++i, p += RawSize<T>::value) store_raw(p, values[i]);
    } else {
      for (std::size_t i = 0; i < n; ++i) ar_(values[i]);
    }
  }
  // Grows the buffer by `bytes` for the caller to fill; returns where they start.
  char* extend(std::size_t bytes) {
    const std::size_t at = out_.size();
    out_.resize(at + bytes);
    return out_.data() + at;
  }

 private:
  std::string& out_;
  reduction::OutputArchive ar_;
};

// Reads items in place; the archive is made only for items that are not raw.
class ItemReader {
 public:
  ItemReader(const char* data, std::size_t size) : pos_(data), end_(data + size) {}
  std::uint32_t count() {
    std::uint32_t n = 0;
    std::memcpy(&n, take(1, sizeof n), sizeof n);
    return n;
  }
  template <class T>
  T read() {
    if constexpr (kRawItem<T>) {
      T value;
      load_raw(take(1, RawSize<T>::value), value);
      return value;
    } else {
      T value{};
      try {
        archive()(value);
      } catch (const cereal::Exception& e) {
        throw UnpicklingError(std::string("corrupt data: ") + e.what());
      }
      pos_ = end_ - ar_->remaining();
      return value;
    }
  }
  // n values into dst (raw ones in one pass).
  template <class T>
  void read_into(T* dst, std::size_t n) {
    if constexpr (kRawBytes<T>) {
      const char* p = take(n, sizeof(T));
      if (n != 0) std::memcpy(static_cast<void*>(dst), p, n * sizeof(T));
    } else if constexpr (kRawItem<T>) {
      const char* p = take(n, RawSize<T>::value);
      for (std::size_t i = 0; i < n; ++i, p += RawSize<T>::value) load_raw(p, dst[i]);
    } else {
      for (std::size_t i = 0; i < n; ++i) dst[i] = read<T>();
    }
  }
  // The next n items of `size` bytes each, read in place.
  const char* take(std::size_t n, std::size_t size) {
    const auto left = static_cast<std::size_t>(end_ - pos_);
    if (ar_) throw std::logic_error("mp: raw items after serialized ones");
    if (size != 0 && n > left / size)
      throw UnpicklingError("truncated data: message ends inside a value");
    const char* p = pos_;
    pos_ += n * size;
    return p;
  }
  void finish() const {
    if (pos_ != end_) throw UnpicklingError("corrupt data: trailing bytes after the results");
  }

 private:
  reduction::InputArchive& archive() {
    if (!ar_) ar_.emplace(pos_, static_cast<std::size_t>(end_ - pos_));
    return *ar_;
  }
  const char* pos_;
  const char* end_;
  std::optional<reduction::InputArchive> ar_;
};

// A worker process runs a chunk through a Runner instantiated for the task's signature: it reads
// the arguments, calls the function on each and writes the results. Exceptions propagate.
using Runner = void (*)(AnyFunction fn, const char* data, std::size_t size, std::string& out);

template <class Fn, class Args>
void run_chunk(AnyFunction fn, const char* data, std::size_t size, std::string& out) {
  using R = decltype(std::apply(std::declval<Fn>(), std::declval<Args&>()));
  ItemReader in(data, size);
  const std::uint32_t n = in.count();
  ItemWriter w(out);
  w.count(n);
  if constexpr (kRawItem<Args> && kRawBytes<R>) {
    // Arguments read and results written in place.
    const char* p = in.take(n, RawSize<Args>::value);
    char* q = w.extend(std::size_t{n} * sizeof(R));
    for (std::uint32_t i = 0; i < n; ++i, p += RawSize<Args>::value, q += sizeof(R)) {
      Args args;
      load_raw(p, args);
      const R r = std::apply(reinterpret_cast<Fn>(fn), args);
      std::memcpy(q, static_cast<const void*>(&r), sizeof(R));
    }
  } else {
    for (std::uint32_t i = 0; i < n; ++i) {
      Args args = in.template read<Args>();
      if constexpr (std::is_void_v<R>) {
        std::apply(reinterpret_cast<Fn>(fn), args);
      } else {
        w.write(std::apply(reinterpret_cast<Fn>(fn), args));
      }
    }
  }
  in.finish();
}

// ---- what the engine sees
struct Outcome {
  bool ok = false;
  std::string bytes;  // processes: the serialized results, from offset `skip` on
  std::size_t skip = 0;
  std::shared_ptr<void> values;  // threads: the results as a std::vector<R>
  std::exception_ptr error;      // !ok
  std::uint64_t ns = 0;          // time the worker spent on the chunk
};

// The descriptors of shareable objects (Lock, Value, Queue, ...) in a chunk's arguments: the
// token each was serialized as (reduction::send_handle) and a duplicate the chunk owns until its
// outcome is in, so the objects may be destroyed meanwhile. The engine passes them to the worker
// that runs the chunk over the worker's socket (SCM_RIGHTS); there receive_handle(token) gives them.
class MP_API ChunkHandles {
 public:
  ChunkHandles() = default;
  ChunkHandles(ChunkHandles&& o) noexcept : items(std::move(o.items)) { o.items.clear(); }
  ChunkHandles& operator=(ChunkHandles&& o) noexcept;
  ~ChunkHandles();
  std::vector<std::pair<std::uint64_t, reduction::native_handle>> items;
};

// While alive, reduction::send_handle() on this thread records descriptors instead of refusing.
class MP_API HandleCapture {
 public:
  HandleCapture();
  ~HandleCapture();
  HandleCapture(const HandleCapture&) = delete;
  HandleCapture& operator=(const HandleCapture&) = delete;
  // Duplicates what was recorded.
  ChunkHandles take();
};

struct Chunk {
  std::uint32_t index = 0;
  ChunkHandles handles;            // processes: descriptors in the arguments
  AnyFunction runner = nullptr;    // processes
  AnyFunction function = nullptr;  // processes
  std::string args;                // processes: the serialized arguments
  // Processes, instead of `args`: the arguments are `count` items whose bytes are their wire
  // form, at `view` in the caller's input; valid until the engine's release() of the job.
  const char* view = nullptr;
  std::size_t view_bytes = 0;
  std::uint32_t count = 0;
  std::function<void(Outcome&)> local;  // threads: runs the chunk in the calling thread
};

enum class Next { chunk, wait, done };

class MP_API Job {
 public:
  virtual ~Job();
  // Fills `c` with the next chunk; `wait` while the job's buffer is full (kick() the engine when
  // it has room), `done` when nothing is left. Called with the engine's lock held; never throws.
  virtual Next next(Chunk& c, bool threads, int processes) noexcept = 0;
  // The outcome of chunk `index`. Called without the engine's lock; never throws.
  virtual void deliver(std::uint32_t index, Outcome& o) noexcept = 0;
  // The pool ended (terminate, broken) before the job finished.
  virtual void fail(std::exception_ptr error) noexcept = 0;
  // shutdown(cancel_futures=true): a job none of whose chunks was handed out cancels itself.
  virtual void cancel_pending() noexcept {}
  // Reads no more input (its consumer went away, or its caller's input is about to).
  virtual void abandon() noexcept {}
  // Set when the pool is closed: a lazy job then reads all its input without waiting for its
  // consumer, so close() + join() never wait on an iterator nobody reads (CPython buffers all).
  std::atomic<bool> unbounded{false};
};

// An engine (lib/pool_engine.cpp). Thread-safe.
class MP_API Engine {
 public:
  virtual ~Engine();
  // Throws std::invalid_argument "Pool not running" after close()/terminate(), or the error the
  // pool broke with (executors: BrokenProcessPool).
  virtual void submit(std::shared_ptr<Job> job) = 0;
  // A job that returned Next::wait has room again.
  virtual void kick() noexcept = 0;
  virtual void close() = 0;
  virtual void terminate() = 0;
  // Waits for the workers (and the engine's thread) to end.
  virtual void join() = 0;
  // The job's caller is about to free its input: the job reads no more of it, and no chunk
  // whose arguments are a view of it (Chunk::view) is sent again (a retry fails instead; the
  // job's result is already decided then). Returns once no such read is under way.
  virtual void release(Job& job) noexcept { job.abandon(); }
  virtual bool running() const noexcept = 0;
  virtual int processes() const noexcept = 0;
  virtual bool threads() const noexcept = 0;
  // shutdown(cancel_futures=true)
  virtual void cancel_pending() noexcept = 0;
  // Executors: kill the workers (terminate_workers/kill_workers); pending work fails.
  virtual void signal_workers(bool kill) = 0;
  // Chunks handed to workers so far (tests of the adaptive chunk size).
  virtual std::uint64_t chunks_sent() const noexcept = 0;
  // Called by a thread about to wait for `done`: polls briefly (lib/spin.hpp's policy) and, on a
  // process pool, reads the results that arrive meanwhile itself and delivers them, so a result
  // that comes within microseconds reaches its waiter without a hop through the engine's thread
  // or a sleep. Returns whether `done` is set.
  virtual bool await(const std::atomic<bool>& done) noexcept = 0;
  // A thread will await a result soon (true) / no longer (false); nests. While one does, a
  // process engine's thread leaves the result queue to it (it would only be woken for nothing).
  virtual void awaiting(bool /*starts*/) noexcept {}
};

// What a worker process is started with. Serializable: the queues and the block travel as
// descriptors under spawn.
struct WorkerChannels {
  QueueCore tasks;
  QueueCore results;
  heap::SharedBlock slots;
  std::uint32_t index = 0;
  std::uint64_t maxtasks = 0;
  std::string initializer;                // the initializer's code location, empty: none
  reduction::native_handle handles = -1;  // receives the descriptors of tasks' arguments
  template <class Archive>
  void save(Archive& ar) const {
    ar(tasks, results, slots, index, maxtasks, initializer,
       reduction::send_handle(handles, "Pool channel"));
  }
  template <class Archive>
  void load(Archive& ar) {
    std::uint64_t token = 0;
    ar(tasks, results, slots, index, maxtasks, initializer, token);
    handles = reduction::receive_handle(token);
  }
};

// Makes (does not start) worker processes; instantiated per initializer signature.
using WorkerFactory = std::function<Process(const Context&, const WorkerChannels&)>;

struct EngineConfig {
  int processes = 1;
  std::uint64_t maxtasks = 0;  // 0: unlimited
  std::optional<Context> context;
  std::optional<std::chrono::nanoseconds> task_timeout;
  WorkerFactory factory;                     // processes
  AnyFunction initializer = nullptr;         // processes: located and sent in WorkerChannels
  std::function<void()> thread_initializer;  // threads
  // Executors: a worker that dies breaks the pool; this makes the error for every pending job.
  std::function<std::exception_ptr(const std::string&)> broken_error;
  const char* name = "Pool";
};

MP_API std::shared_ptr<Engine> make_process_engine(EngineConfig config);
MP_API std::shared_ptr<Engine> make_thread_engine(EngineConfig config);
// Queues of ended process pools kept for the next ones in this process (tests).
MP_API std::size_t spare_queues() noexcept;

// In a worker process: runs the initializer (`init(context)`), then serves tasks until told to stop
// or maxtasks is reached. Never returns by exception (the worker exits with code 1).
MP_API void worker_main(WorkerChannels& channels, void (*init)(void*), void* context);
// A function as the bytes workers resolve it from (a CodeRef: module, build id, offset), and back;
// "" stands for none.
MP_API std::string code_of(AnyFunction f);
MP_API AnyFunction resolve_initializer(const std::string& code);

template <class Init, class Tuple>
struct InitCall {
  Init init;
  Tuple* args;
  static void run(void* self) {
    auto* c = static_cast<InitCall*>(self);
    std::apply(c->init, *c->args);
  }
};

template <class Init, class Tuple>
void worker_entry(WorkerChannels channels, Tuple initargs) {
  if constexpr (std::is_same_v<Init, std::nullptr_t>) {
    worker_main(channels, nullptr, nullptr);
  } else {
    using Call = InitCall<Init, Tuple>;
    Call call{reinterpret_cast<Init>(resolve_initializer(channels.initializer)), &initargs};
    worker_main(channels, channels.initializer.empty() ? nullptr : &Call::run, &call);
  }
}

// Builds the factory and initializer fields of `config` for `init(initargs...)`.
template <class Init, class... A>
void set_initializer(EngineConfig& config, Init&& init, A&&... initargs) {
  using D = std::decay_t<Init>;
  if constexpr (std::is_same_v<D, std::nullptr_t>) {
    static_assert(sizeof...(A) == 0, "mp: initargs without an initializer");
    config.factory = [](const Context& ctx, const WorkerChannels& ch) {
      return Process(ctx, &worker_entry<std::nullptr_t, std::tuple<>>, ch, std::tuple<>{});
    };
  } else {
    static_assert(ToFunctionPointer<D>,
                  "mp: a pool's initializer must be a function or captureless lambda");
    using Fn = decltype(+std::declval<D&>());
    using Tuple = typename Signature<Fn>::Params;
    static_assert(std::tuple_size_v<Tuple> == sizeof...(A),
                  "mp: wrong number of initargs for the initializer");
    config.initializer = reinterpret_cast<AnyFunction>(+init);
    auto args = std::make_shared<Tuple>(std::forward<A>(initargs)...);
    Fn fn = +init;
    config.thread_initializer = [fn, args] { std::apply(fn, *args); };
    config.factory = [args](const Context& ctx, const WorkerChannels& ch) {
      return Process(ctx, &worker_entry<Fn, Tuple>, ch, *args);
    };
  }
}

// ---- typed results

// Prints "Exception in <where>:" and the error to stderr (a throwing callback never stops the
// pool's threads; CPython prints the traceback the same way).
MP_API void report_callback_error(const char* where, std::exception_ptr error) noexcept;
// The exception a chunk's results could not be decoded with.
MP_API std::exception_ptr current_error() noexcept;

template <class T>
std::vector<T> decode_values(Outcome& o, std::size_t expected) {
  std::vector<T> out;
  if (o.values) {
    out = std::move(*static_cast<std::vector<T>*>(o.values.get()));
  } else {
    ItemReader in(o.bytes.data() + o.skip, o.bytes.size() - o.skip);
    const std::uint32_t n = in.count();
    if (n != expected) throw UnpicklingError("corrupt data: wrong number of results in a chunk");
    if constexpr (kRawItem<T> && std::is_default_constructible_v<T>) {
      out.resize(n);
      in.read_into(out.data(), n);
    } else {
      out.reserve(n);
      for (std::uint32_t i = 0; i < n; ++i) out.push_back(in.template read<T>());
    }
    in.finish();
  }
  if (out.size() != expected)
    throw UnpicklingError("corrupt data: wrong number of results in a chunk");
  return out;
}

// void results: the count only.
struct Nothing {};

template <class R>
using Stored = std::conditional_t<std::is_void_v<R>, Nothing, R>;

// The state of an AsyncResult or Future.
template <class R>
struct State {
  using Result = R;
  enum Status { pending, running, finished, cancelled };
  std::mutex mutex;
  std::condition_variable cv;
  Status status = pending;
  std::optional<Stored<R>> value;
  std::exception_ptr error;
  std::vector<std::function<void()>> done_callbacks;  // futures
  std::atomic<bool> is_done{false};
  std::weak_ptr<Engine> engine;  // the pool that computes it (Engine::await)

  // Sets the result and wakes the waiters; callbacks run first (as CPython's AsyncResult._set).
  void finish(std::optional<Stored<R>> v, std::exception_ptr e,
              const std::function<void(State&)>& before) {
    {
      std::lock_guard g(mutex);
      if (status == finished || status == cancelled) return;
      value = std::move(v);
      error = e;
    }
    if (before) before(*this);
    complete(finished);
  }
  // finish() with no callbacks to run first: the result and the status under one lock.
  void finish_now(std::optional<Stored<R>> v, std::exception_ptr e) {
    std::unique_lock g(mutex);
    if (status == finished || status == cancelled) return;
    value = std::move(v);
    error = e;
    complete(finished, g);
  }
  void complete(Status s) {
    std::unique_lock g(mutex);
    complete(s, g);
  }
  void complete(Status s, std::unique_lock<std::mutex>& g) {
    std::vector<std::function<void()>> cbs;
    status = s;
    cbs.swap(done_callbacks);
    is_done.store(true, std::memory_order_release);
    g.unlock();
    cv.notify_all();
    for (auto& cb : cbs) {
      try {
        cb();
      } catch (...) {
        report_callback_error("callback", std::current_exception());
      }
    }
  }
  bool done() {
    std::lock_guard g(mutex);
    return status == finished || status == cancelled;
  }
  // `awaited`: the engine the caller already called awaiting(true) on (apply(): before
  // submitting); the call ends it.
  template <class Clock, class Dur>
  bool wait_until(const std::chrono::time_point<Clock, Dur>* deadline, Engine* awaited = nullptr) {
    if (!is_done.load(std::memory_order_acquire)) {
      std::shared_ptr<Engine> e = awaited ? nullptr : engine.lock();
      if (!awaited && e) {
        awaited = e.get();
        awaited->awaiting(true);
      }
      if (awaited) awaited->await(is_done);
    }
    if (awaited) awaited->awaiting(false);
    if (is_done.load(std::memory_order_acquire)) return true;
    std::unique_lock g(mutex);
    auto pred = [&] { return status == finished || status == cancelled; };
    if (!deadline) {
      cv.wait(g, pred);
      return true;
    }
    return cv.wait_until(g, *deadline, pred);
  }
};

// Where a job's decoded chunks go.
template <class T>
class Sink {
 public:
  virtual ~Sink() = default;
  // Chunk of items [start, start + values.size()) succeeded.
  virtual void put(std::size_t start, std::vector<T>&& values) = 0;
  // Chunk of `count` items at `start` failed (count 0: reading the input failed there).
  virtual void put_error(std::size_t start, std::size_t count, std::exception_ptr error) = 0;
  // The input is exhausted after `items` items in `chunks` chunks.
  virtual void set_end(std::size_t items, std::size_t chunks) = 0;
  // The pool ended first.
  virtual void fail(std::exception_ptr error) = 0;
  // The input's size, when known, before its first chunk is handed out.
  virtual void expect(std::size_t /*items*/) {}
  // Where the `count` values of the chunk at `start` may be decoded in place (the final storage),
  // or null (then put()). After decoding there, placed() stands for put().
  virtual T* place(std::size_t /*start*/, std::size_t /*count*/) { return nullptr; }
  virtual void placed(std::size_t /*start*/, std::size_t /*count*/) {}
  // Lazy sinks: whether another chunk may be handed out (bounded buffering).
  virtual bool room(std::size_t /*outstanding*/) { return true; }
  // Futures: false once cancelled; marks the job running otherwise.
  virtual bool start() { return true; }
  virtual void cancel_pending() {}
};

// The input of a job: materialized (apply, map) or a lazy range (imap, Executor.map).
template <class Args>
class Source {
 public:
  virtual ~Source() = default;
  // Appends up to `max` items; false when the input is exhausted (and nothing was appended).
  virtual bool pull(std::vector<Args>& out, std::size_t max) = 0;
  // Items left, when known.
  virtual std::optional<std::size_t> remaining() const { return std::nullopt; }
  // Up to `max` next items where they are, for serializing them without a copy (n: how many),
  // or null when this source cannot; skip(n) then consumes them.
  virtual const Args* peek(std::size_t /*max*/, std::size_t& n) {
    n = 0;
    return nullptr;
  }
  virtual void skip(std::size_t /*n*/) {}
  // Up to `max` next items as their wire bytes, in place and valid until the job's release()
  // (n: how many), or null; skip(n) then consumes them.
  virtual const char* peek_bytes(std::size_t /*max*/, std::size_t& n) {
    n = 0;
    return nullptr;
  }
  virtual void release() {}
};

template <class Args>
class VectorSource final : public Source<Args> {
 public:
  explicit VectorSource(std::vector<Args> items) : items_(std::move(items)) {}
  bool pull(std::vector<Args>& out, std::size_t max) override {
    if (pos_ == items_.size()) return false;
    const std::size_t n = std::min(max, items_.size() - pos_);
    for (std::size_t i = 0; i < n; ++i) out.push_back(std::move(items_[pos_ + i]));
    pos_ += n;
    return true;
  }
  std::optional<std::size_t> remaining() const override { return items_.size() - pos_; }
  const Args* peek(std::size_t max, std::size_t& n) override {
    n = std::min(max, items_.size() - pos_);
    return items_.data() + pos_;
  }
  void skip(std::size_t n) override { pos_ += n; }
  void release() override { std::vector<Args>().swap(items_); }

 private:
  std::vector<Args> items_;
  std::size_t pos_ = 0;
};

// The caller's contiguous input of a map() that waits for its result (no copy): items of type
// E, each its own wire form (kRawBytes), the task's one parameter.
template <class Args, class E>
class SpanSource final : public Source<Args> {
 public:
  SpanSource(const E* items, std::size_t size) : items_(items), size_(size) {}
  bool pull(std::vector<Args>& out, std::size_t max) override {
    if (pos_ == size_) return false;
    const std::size_t n = std::min(max, size_ - pos_);
    for (std::size_t i = 0; i < n; ++i) out.emplace_back(items_[pos_ + i]);
    pos_ += n;
    return true;
  }
  std::optional<std::size_t> remaining() const override { return size_ - pos_; }
  const char* peek_bytes(std::size_t max, std::size_t& n) override {
    n = std::min(max, size_ - pos_);
    return reinterpret_cast<const char*>(items_ + pos_);
  }
  void skip(std::size_t n) override { pos_ += n; }
  void release() override { pos_ = size_; }

 private:
  const E* items_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

// Converts an input element to the argument tuple: one parameter (map) or unpacked (starmap).
template <class Args, bool Star, class E>
Args to_args(E&& e) {
  if constexpr (Star) {
    return std::apply([](auto&&... a) { return Args(std::forward<decltype(a)>(a)...); },
                      std::forward<E>(e));
  } else {
    return Args(std::forward<E>(e));
  }
}

template <class Args, bool Star, class V>
class RangeSource final : public Source<Args> {
 public:
  explicit RangeSource(V view) : view_(std::move(view)) {}
  bool pull(std::vector<Args>& out, std::size_t max) override {
    if (!started_) {
      it_.emplace(std::ranges::begin(view_));
      started_ = true;
    }
    if (done_ || *it_ == std::ranges::end(view_)) {
      done_ = true;
      return false;
    }
    for (std::size_t i = 0; i < max && *it_ != std::ranges::end(view_); ++i, ++*it_)
      out.push_back(to_args<Args, Star>(**it_));
    return true;
  }
  void release() override { done_ = true; }

 private:
  V view_;
  std::optional<std::ranges::iterator_t<V>> it_;
  bool started_ = false;
  bool done_ = false;
};

// Chunk size when none is given (guarantee 9): each chunk aims at about kTargetChunkNs of work,
// from the time the workers measured on this job's chunks so far (joblib's auto batching), never
// more than a quarter of a worker's share of a known input (so load stays balanced; the share of
// the whole input, as CPython's len/(4*processes), so the chunks do not shrink towards its end), and starting
// from one item (a long task is never batched behind another). A lazy input's chunks stay under
// kMaxLazyChunk items, which with the iterator's window bounds the items read ahead.
struct Chunking {
  static constexpr std::uint64_t kTargetChunkNs = 2'000'000;
  static constexpr std::size_t kMaxChunk = std::size_t{1} << 16;
  static constexpr std::size_t kMaxLazyChunk = 4096;
  std::optional<std::size_t> fixed;
  double ns_per_item = 0;            // 0: nothing measured yet
  std::optional<std::size_t> total;  // a known input's size, from the first call
  std::size_t next_size(std::optional<std::size_t> remaining, int processes) {
    if (!total) total = remaining;
    if (fixed) return *fixed;
    std::size_t size = 1;
    if (ns_per_item > 0) {
      const double want = static_cast<double>(kTargetChunkNs) / ns_per_item;
      size = want >= static_cast<double>(kMaxChunk)
                 ? kMaxChunk
                 : std::max<std::size_t>(1, static_cast<std::size_t>(want));
    }
    if (remaining) {
      size = std::min(size,
                      std::max<std::size_t>(1, *total / (4 * static_cast<std::size_t>(processes))));
    } else {
      size = std::min(size, kMaxLazyChunk);
    }
    return size;
  }
  // A moving average weighted by items: a chunk's fixed cost (a cold first item, the clock
  // reads) divided by one item does not keep the next chunks small.
  void measured(std::uint64_t ns, std::size_t items) {
    if (fixed || items == 0) return;
    ns_sum_ = 0.5 * ns_sum_ + static_cast<double>(ns);
    items_sum_ = 0.5 * items_sum_ + static_cast<double>(items);
    ns_per_item = std::max(1.0, ns_sum_ / items_sum_);
  }

 private:
  double ns_sum_ = 0, items_sum_ = 0;
};

// Calls `fn` on chunks of `Args` read from a Source, and puts the results in a Sink.
// F: a function pointer (processes) or any callable (threads).
template <class F, class Args, class T>
class MapJob final : public Job {
  using R = decltype(std::apply(std::declval<F&>(), std::declval<Args&>()));

 public:
  MapJob(F fn, std::unique_ptr<Source<Args>> source, std::shared_ptr<Sink<T>> sink,
         std::optional<std::size_t> chunksize)
      : fn_(std::move(fn)), source_(std::move(source)), sink_(std::move(sink)) {
    chunking_.fixed = chunksize;
  }

  Next next(Chunk& c, bool threads, int processes) noexcept override {
    std::lock_guard g(mutex_);
    if (done_) return Next::done;
    if (!unbounded.load(std::memory_order_relaxed) && !sink_->room(outstanding_)) return Next::wait;
    if (index_ == 0 && !sink_->start()) return finish_input();
    // Adaptive size, nothing measured yet: one single-item chunk per worker until a time is in.
    if (!chunking_.fixed && chunking_.ns_per_item == 0 &&
        outstanding_ >= static_cast<std::size_t>(processes))
      return Next::wait;
    const std::optional<std::size_t> remaining = source_->remaining();
    if (index_ == 0 && remaining) sink_->expect(*remaining);
    const std::size_t size = chunking_.next_size(remaining, processes);
    constexpr bool kMemcpyArgs = kRawItem<Args>;
    if constexpr (FunctionPointer<F> && kMemcpyArgs) {
      // Processes: arguments whose bytes are their wire form travel from where they are.
      std::size_t n = 0;
      const char* bytes = threads ? nullptr : source_->peek_bytes(size, n);
      if (bytes) {
        if (n == 0) return finish_input();
        c.args.clear();
        c.view = bytes;
        c.view_bytes = n * RawSize<Args>::value;
        c.count = static_cast<std::uint32_t>(n);
        source_->skip(n);
        c.runner = reinterpret_cast<AnyFunction>(&run_chunk<F, Args>);
        c.function = reinterpret_cast<AnyFunction>(fn_);
        return handed_out(c, n);
      }
    }
    if constexpr (FunctionPointer<F> && kMemcpyArgs) {
      // Processes: arguments the source holds in place are serialized from there.
      std::size_t n = 0;
      const Args* in_place = threads ? nullptr : source_->peek(size, n);
      if (in_place) {
        if (n == 0) return finish_input();
        c.args.clear();
        ItemWriter w(c.args);
        w.count(static_cast<std::uint32_t>(n));
        try {
          w.write_all(in_place, n);
        } catch (...) {
          c.args.clear();
          c.local = [e = std::current_exception()](Outcome& o) { o.error = e; };
        }
        source_->skip(n);
        c.runner = reinterpret_cast<AnyFunction>(&run_chunk<F, Args>);
        c.function = reinterpret_cast<AnyFunction>(fn_);
        return handed_out(c, n);
      }
    }
    std::vector<Args> items;
    try {
      items.reserve(std::min<std::size_t>(size, 1024));
      if (!source_->pull(items, size)) return finish_input();
    } catch (...) {
      // An input that throws: the error comes out where this chunk begins; the input ends here.
      sink_->put_error(position_, 0, std::current_exception());
      ++index_;
      return finish_input();
    }
    handed_out(c, items.size());
    try {
      if (threads) {
        c.local = [fn = fn_, items = std::move(items)](Outcome& o) mutable {
          auto values = std::make_shared<std::vector<T>>();
          values->reserve(items.size());
          for (auto& a : items) {
            if constexpr (std::is_void_v<R>) {
              std::apply(fn, a);
              values->push_back(T{});
            } else {
              values->push_back(std::apply(fn, a));
            }
          }
          o.values = std::move(values);
        };
      } else if constexpr (FunctionPointer<F>) {
        c.runner = reinterpret_cast<AnyFunction>(&run_chunk<F, Args>);
        c.function = reinterpret_cast<AnyFunction>(fn_);
        c.args.clear();
        if constexpr (kMemcpyArgs) {
          ItemWriter w(c.args);
          w.count(static_cast<std::uint32_t>(items.size()));
          w.write_all(items.data(), items.size());
        } else {
          HandleCapture capture;
          ItemWriter w(c.args);
          w.count(static_cast<std::uint32_t>(items.size()));
          for (const auto& a : items) w.write(a);
          c.handles = capture.take();
        }
      }
    } catch (...) {  // an argument that cannot be serialized fails its own chunk
      c.args.clear();
      c.local = [e = std::current_exception()](Outcome& o) { o.error = e; };
    }
    return Next::chunk;
  }

  void deliver(std::uint32_t index, Outcome& o) noexcept override {
    std::size_t start = 0, count = 0;
    {
      std::lock_guard g(mutex_);
      auto it = spans_.find(index);
      if (it == spans_.end()) return;
      std::tie(start, count) = it->second;
      spans_.erase(it);
      --outstanding_;
      if (o.ok) chunking_.measured(o.ns, count);
    }
    try {
      if (!o.ok) {
        sink_->put_error(start, count, o.error);
      } else if (T* dst = o.values ? nullptr : sink_->place(start, count)) {
        try {
          decode_into(o, dst, count);
        } catch (...) {
          sink_->put_error(start, count, std::current_exception());
          return;
        }
        sink_->placed(start, count);
      } else {
        std::vector<T> values;
        try {
          values = decode_results(o, count);
        } catch (...) {
          sink_->put_error(start, count, std::current_exception());
          return;
        }
        sink_->put(start, std::move(values));
      }
    } catch (...) {
      report_callback_error("result handler", std::current_exception());
    }
  }

  void fail(std::exception_ptr error) noexcept override {
    {
      std::lock_guard g(mutex_);
      done_ = true;
      source_->release();
    }
    try {
      sink_->fail(error);
    } catch (...) {
      report_callback_error("result handler", std::current_exception());
    }
  }

  void cancel_pending() noexcept override {
    try {
      sink_->cancel_pending();
    } catch (...) {
    }
  }

  // The consumer went away (imap iterator destroyed, map() returned): read no more input.
  void abandon() noexcept override {
    std::lock_guard g(mutex_);
    done_ = true;
    source_->release();
  }

 private:
  void decode_into(const Outcome& o, T* dst, std::size_t count) {
    ItemReader in(o.bytes.data() + o.skip, o.bytes.size() - o.skip);
    if (in.count() != count)
      throw UnpicklingError("corrupt data: wrong number of results in a chunk");
    in.read_into(dst, count);
    in.finish();
  }
  std::vector<T> decode_results(Outcome& o, std::size_t count) {
    if constexpr (std::is_void_v<R>) {
      if (o.values) return std::vector<T>(count);
      ItemReader in(o.bytes.data() + o.skip, o.bytes.size() - o.skip);
      if (in.count() != count)
        throw UnpicklingError("corrupt data: wrong number of results in a chunk");
      in.finish();
      return std::vector<T>(count);
    } else {
      return decode_values<T>(o, count);
    }
  }
  // Chunk `c` holds the next `n` items.
  Next handed_out(Chunk& c, std::size_t n) {
    c.index = index_++;
    spans_.emplace(c.index, std::make_pair(position_, n));
    position_ += n;
    ++outstanding_;
    return Next::chunk;
  }
  Next finish_input() {
    done_ = true;
    source_->release();
    sink_->set_end(position_, index_);
    return Next::done;
  }

  F fn_;
  std::mutex mutex_;
  std::unique_ptr<Source<Args>> source_;
  std::shared_ptr<Sink<T>> sink_;
  Chunking chunking_;
  std::map<std::uint32_t, std::pair<std::size_t, std::size_t>> spans_;
  std::uint32_t index_ = 0;
  std::size_t position_ = 0;
  std::size_t outstanding_ = 0;
  bool done_ = false;
};

// Into a State: one value (apply, submit) or the whole list (map). The first error ends it.
template <class R, bool Single>
class StateSink final : public Sink<Stored<R>> {
  using T = Stored<R>;
  using Value = std::conditional_t<Single, T, std::vector<T>>;
  using Whole =
      std::conditional_t<Single, R, std::conditional_t<std::is_void_v<R>, void, std::vector<R>>>;

 public:
  using OnResult = std::function<void(const State<Whole>&)>;
  StateSink(std::shared_ptr<State<Whole>> state, std::function<void(State<Whole>&)> callbacks)
      : state_(std::move(state)), callbacks_(std::move(callbacks)) {}

  void put(std::size_t start, std::vector<T>&& values) override {
    std::unique_lock g(mutex_);
    if constexpr (Single) {
      if (!values.empty()) single_ = std::move(values.front());
    } else if constexpr (!std::is_void_v<R>) {
      if (values_.size() < start + values.size()) values_.resize(start + values.size());
      for (std::size_t i = 0; i < values.size(); ++i) values_[start + i] = std::move(values[i]);
    }
    received_ += values.size();
    ++chunks_done_;
    maybe_finish(g);
  }
  // map(): the list is made at its full size when the first chunk of several items arrives, so
  // that chunks decode straight into it. Not before: making it (fresh memory, faulted in page
  // by page) then happens while the workers run the chunks handed out, not ahead of them.
  void expect(std::size_t items) override {
    if constexpr (kPlaceable) {
      std::lock_guard g(mutex_);
      expected_ = items;
    }
  }
  // map() of a sized input, on the caller's thread before the job is submitted: the list's memory
  // comes from the caller's heap, so it goes back there. Allocated on the engine thread, it would
  // come from that thread's malloc arena, whose free top glibc keeps resident, and every later
  // fork copies it. Only allocated here; place() still fills it while the workers run.
  void reserve(std::size_t items) {
    if constexpr (kPlaceable) {
      std::lock_guard g(mutex_);
      try {
        values_.reserve(items);
      } catch (const std::bad_alloc&) {  // place() tries again, then put() takes over
      } catch (const std::length_error&) {
      }
    }
  }
  T* place(std::size_t start, std::size_t count) override {
    if constexpr (kPlaceable) {
      std::lock_guard g(mutex_);
      if (!sized_ && expected_ && count > 1 && values_.size() <= *expected_) {
        try {
          values_.resize(*expected_);
          sized_ = true;
        } catch (const std::bad_alloc&) {  // the chunks are put() one by one instead
          expected_.reset();
        }
      }
      // The list is never resized while sized_ (put() and maybe_finish() keep its size).
      if (sized_ && start <= values_.size() && count <= values_.size() - start)
        return values_.data() + start;
    }
    return nullptr;
  }
  void placed(std::size_t, std::size_t count) override {
    std::unique_lock g(mutex_);
    received_ += count;
    ++chunks_done_;
    maybe_finish(g);
  }
  void put_error(std::size_t, std::size_t, std::exception_ptr error) override {
    std::unique_lock g(mutex_);
    ++chunks_done_;
    if (!error_) error_ = error;
    g.unlock();
    finish(error);
  }
  void set_end(std::size_t items, std::size_t chunks) override {
    std::unique_lock g(mutex_);
    end_items_ = items;
    end_chunks_ = chunks;
    maybe_finish(g);
  }
  void fail(std::exception_ptr error) override { finish(error); }
  bool start() override {
    std::lock_guard g(state_->mutex);
    if (state_->status == State<Whole>::cancelled) return false;
    state_->status = State<Whole>::running;
    return true;
  }
  void cancel_pending() override {
    {
      std::lock_guard g(state_->mutex);
      if (state_->status != State<Whole>::pending) return;
      state_->status = State<Whole>::cancelled;  // from now on no worker takes it
    }
    state_->complete(State<Whole>::cancelled);
  }

 private:
  void maybe_finish(std::unique_lock<std::mutex>& g) {
    if (!end_chunks_ || chunks_done_ < *end_chunks_ || error_) return;
    std::optional<Stored<Whole>> v;
    if constexpr (Single) {
      v = std::move(single_);
    } else if constexpr (std::is_void_v<R>) {
      v.emplace();
    } else {
      values_.resize(*end_items_);
      v = std::move(values_);
    }
    g.unlock();
    state_->finish(std::move(v), nullptr, callbacks_);
  }
  void finish(std::exception_ptr error) { state_->finish(std::nullopt, error, callbacks_); }

  static constexpr bool kPlaceable = !Single && !std::is_void_v<R> && !std::is_same_v<T, bool>;

  std::shared_ptr<State<Whole>> state_;
  std::function<void(State<Whole>&)> callbacks_;
  std::mutex mutex_;
  std::vector<T> values_;
  std::optional<std::size_t> expected_;
  bool sized_ = false;
  std::optional<T> single_;
  std::size_t received_ = 0;
  std::size_t chunks_done_ = 0;
  std::optional<std::size_t> end_items_, end_chunks_;
  std::exception_ptr error_;
};

// Into an iterator's buffer (imap, imap_unordered, Executor.map): in order or in completion
// order; at most `window` chunks handed out and not yet consumed.
template <class T>
class StreamSink final : public Sink<T> {
 public:
  StreamSink(bool ordered, std::size_t window) : ordered_(ordered), window_(window) {}

  void put(std::size_t start, std::vector<T>&& values) override {
    {
      std::lock_guard g(mutex_);
      if (ordered_) {
        pending_.emplace(start, Entry{std::move(values), nullptr, 0});
      } else {
        ready_.push_back(Entry{std::move(values), nullptr, 0});
      }
      ++delivered_;
    }
    cv_.notify_all();
  }
  void put_error(std::size_t start, std::size_t count, std::exception_ptr error) override {
    {
      std::lock_guard g(mutex_);
      if (ordered_) {
        pending_.emplace(start, Entry{{}, error, count});
      } else {
        ready_.push_back(Entry{{}, error, count});
      }
      ++delivered_;
    }
    cv_.notify_all();
  }
  void set_end(std::size_t items, std::size_t chunks) override {
    {
      std::lock_guard g(mutex_);
      end_items_ = items;
      end_chunks_ = chunks;
    }
    cv_.notify_all();
  }
  void fail(std::exception_ptr error) override {
    {
      std::lock_guard g(mutex_);
      if (!failed_) failed_ = error;
    }
    cv_.notify_all();
  }
  bool room(std::size_t outstanding) override {
    std::lock_guard g(mutex_);
    return outstanding + unconsumed_chunks() < window_;
  }

  // The next value; nullopt at the end; throws a task's error, or TimeoutError after `deadline`.
  // Sets `freed` when a chunk was consumed (the job may have room again).
  std::optional<T> next(const std::chrono::steady_clock::time_point* deadline, bool& freed) {
    std::unique_lock g(mutex_);
    for (;;) {
      if (!current_.empty() && pos_ < current_.size()) return std::move(current_[pos_++]);
      if (!current_.empty() || had_current_) {
        current_.clear();
        pos_ = 0;
        had_current_ = false;
        ++consumed_;
        freed = true;
      }
      if (ordered_) {
        auto it = pending_.find(next_start_);
        if (it != pending_.end()) {
          Entry e = std::move(it->second);
          pending_.erase(it);
          if (e.error) {
            ++consumed_;
            freed = true;
            next_start_ += e.count;  // the items of a failed chunk are skipped
            std::rethrow_exception(e.error);
          }
          next_start_ += e.values.size();
          current_ = std::move(e.values);
          had_current_ = true;
          continue;
        }
      } else if (!ready_.empty()) {
        Entry e = std::move(ready_.front());
        ready_.pop_front();
        if (e.error) {
          ++consumed_;
          freed = true;
          std::rethrow_exception(e.error);
        }
        current_ = std::move(e.values);
        had_current_ = true;
        continue;
      }
      if (end_chunks_ && consumed_ >= *end_chunks_) return std::nullopt;
      if (failed_) std::rethrow_exception(failed_);
      if (!deadline) {
        cv_.wait(g);
      } else if (cv_.wait_until(g, *deadline) == std::cv_status::timeout) {
        bool again = !current_.empty() ||
                     (ordered_ ? pending_.count(next_start_) != 0 : !ready_.empty()) ||
                     (end_chunks_ && consumed_ >= *end_chunks_) || failed_;
        if (!again) throw TimeoutError("TimeoutError");
      }
    }
  }

 private:
  struct Entry {
    std::vector<T> values;
    std::exception_ptr error;
    std::size_t count;
  };
  std::size_t unconsumed_chunks() const { return delivered_ - consumed_; }

  bool ordered_;
  std::size_t window_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::map<std::size_t, Entry> pending_;
  std::deque<Entry> ready_;
  std::vector<T> current_;
  std::size_t pos_ = 0;
  bool had_current_ = false;
  std::size_t next_start_ = 0;
  std::size_t delivered_ = 0, consumed_ = 0;
  std::optional<std::size_t> end_items_, end_chunks_;
  std::exception_ptr failed_;
};

}  // namespace mp::detail::pool
