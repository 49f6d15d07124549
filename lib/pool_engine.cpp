// The worker-pool engine behind Pool, ThreadPool and the executors (mp/pool_jobs.hpp).
// CPython: multiprocessing/pool.py (its task, result and worker handler threads) and
// concurrent/futures/process.py (the executor manager thread).
//
// Processes. Each worker has a task queue of its own (a shared-memory QueueCore) and all of them
// answer on one result queue. The parent hands each worker at most a few chunks at a time, so it
// always knows which chunks a worker holds; the worker writes the id and start time of the chunk
// it runs into its slot (shared memory) before running it. One engine thread reads the results,
// delivers them (callbacks run there), tops the workers up and watches them:
// - a worker that died: its results already sent are read first; the chunk in its slot fails
//   with WorkerLostError (executors: the pool breaks, CPython's BrokenProcessPool); the chunks it
//   held but had not started go to other workers; a new worker takes its place;
// - a chunk running longer than task_timeout: the worker is killed, the chunk fails with
//   TimeoutError, the rest as above;
// - maxtasksperchild: a worker is never handed more chunks than it has left to run, then exits
//   and is replaced, so no work is stranded in its queue.
// Callers hand chunks out directly under the engine's lock when a worker has room (no thread
// hop on submit). Functions travel as (module, offset) code locations (lib/platform/system.hpp), sent
// once to each worker before its first chunk that uses them.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <cstring>
#include <future>
#include <iostream>
#include <map>
#include <mutex>
#include <thread>

#include "mp/pool_jobs.hpp"
#include "support/code_ref.hpp"
#include "support/remote_error.hpp"
#include "support/spin.hpp"
#include "support/thread_object.hpp"
#include "platform/handle.hpp"
#include "platform/process.hpp"
#include "platform/system.hpp"
#include "platform/handle_passing.hpp"
#include "platform/io.hpp"
#include "platform/wait.hpp"
#include "process_impl.hpp"
#include "queue_spin.hpp"
#include "reduction_impl.hpp"
#include "support/event_count.hpp"

namespace mp {

WorkerLostError::WorkerLostError(int pid, int exitcode)
    : ProcessError("worker process (pid " + std::to_string(pid) + ") " +
                   (exitcode < 0 ? "was killed by " + platform::signal_name(-exitcode)
                                 : "exited with code " + std::to_string(exitcode)) +
                   " while running the task"),
      pid_(pid),
      exitcode_(exitcode) {}

namespace detail::pool {

Job::~Job() = default;
Engine::~Engine() = default;

void report_callback_error(const char* where, std::exception_ptr error) noexcept {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    std::cerr << "Exception in " << where << ": " << platform::demangle(typeid(e).name()) << ": "
              << e.what() << std::endl;
  } catch (...) {
    std::cerr << "Exception in " << where << ": unknown exception" << std::endl;
  }
}

std::exception_ptr current_error() noexcept { return std::current_exception(); }

ChunkHandles& ChunkHandles::operator=(ChunkHandles&& o) noexcept {
  if (this != &o) {
    for (auto& [token, fd] : items) platform::close_handle(static_cast<platform::Handle>(fd));
    items = std::move(o.items);
    o.items.clear();
  }
  return *this;
}
ChunkHandles::~ChunkHandles() {
  for (auto& [token, fd] : items) platform::close_handle(static_cast<platform::Handle>(fd));
}

namespace {
// The descriptors send_handle() records while a chunk's arguments are serialized on this thread.
struct Capture {
  unsigned depth = 0;
  std::vector<platform::Handle> recorded;
  std::optional<reduction::detail::SendScope> scope;
};
struct CaptureTag;
Capture& capture() { return thread_object<Capture, CaptureTag>(); }
}  // namespace

HandleCapture::HandleCapture() {
  Capture& t_capture = capture();
  if (t_capture.depth++ == 0) {
    t_capture.recorded.clear();
    t_capture.scope.emplace(t_capture.recorded);
  }
}
HandleCapture::~HandleCapture() {
  Capture& t_capture = capture();
  if (--t_capture.depth == 0) t_capture.scope.reset();
}
ChunkHandles HandleCapture::take() {
  ChunkHandles out;
  Capture& t_capture = capture();
  for (platform::Handle h : t_capture.recorded) {
    out.items.emplace_back(static_cast<std::uint64_t>(h), platform::duplicate_handle(h));
  }
  t_capture.recorded.clear();
  return out;
}

namespace {

using Nanos = std::chrono::nanoseconds;

std::int64_t now_ns() {
  return std::chrono::duration_cast<Nanos>(platform::Clock::now().time_since_epoch()).count();
}

// What a worker publishes about the chunk it runs (one cache line each).
struct alignas(64) Slot {
  std::atomic<std::uint64_t> task;
  std::atomic<std::int64_t> started_ns;
};

enum : std::uint8_t { kDefine = 1, kTask = 2, kStop = 3 };  // task queue
enum : std::uint8_t { kResult = 1, kWake = 2 };             // result queue

#pragma pack(push, 1)
struct TaskHeader {
  std::uint8_t kind;
  std::uint64_t id;
  std::uint32_t fn;
  std::uint32_t
      handles;  // descriptors sent before the task (tagged with its id); their tokens follow
};
struct ResultHeader {
  std::uint8_t kind;
  std::uint32_t worker;
  std::uint64_t id;
  std::uint8_t ok;
  std::uint64_t ns;
};
#pragma pack(pop)

void copy_item(void* context, const char* data, std::size_t size) {
  static_cast<std::string*>(context)->assign(data, size);
}

AnyFunction resolve(std::string_view code) {
  return reduction::loads<CodeRef>(code).resolve<AnyFunction>();
}

}  // namespace

std::string code_of(AnyFunction f) { return reduction::dumps(CodeRef::of(f)); }

AnyFunction resolve_initializer(const std::string& code) {
  return code.empty() ? nullptr : resolve(code);
}

namespace {
// In a worker: the descriptors of task `th`, sent before it; stale ones (of a task whose sending
// failed halfway) are dropped. The error when they are not all there.
std::exception_ptr receive_handles(const WorkerChannels& ch, const TaskHeader& th,
                                   const std::string& msg,
                                   reduction::detail::ReceiveMapScope::Map& received) {
  if (msg.size() < sizeof th + std::size_t{th.handles} * sizeof(std::uint64_t))
    return std::make_exception_ptr(UnpicklingError("pool worker: a truncated task"));
  try {
    const auto sock = static_cast<platform::Handle>(ch.handles);
    while (received.size() < th.handles) {
      std::uint64_t tag = 0;
      platform::Handle fd = platform::kInvalidHandle;
      if (!platform::receive_descriptor(sock, tag, fd, false)) break;
      if (tag != th.id) {
        platform::close_handle(fd);
        continue;
      }
      std::uint64_t token = 0;
      std::memcpy(&token, msg.data() + sizeof th + received.size() * sizeof token, sizeof token);
      received.emplace_back(token, fd);
    }
  } catch (...) {
    return std::current_exception();
  }
  if (received.size() == th.handles) return nullptr;
  return std::make_exception_ptr(
      ProcessError("pool worker: the descriptors of a task's arguments did not arrive"));
}
}  // namespace

void worker_main(WorkerChannels& ch, void (*init)(void*), void* context) {
  if (init) init(context);
  rest_queue_get_spin();  // its first task comes after the pool is made, not within a spin
  Slot& slot = static_cast<Slot*>(ch.slots.data())[ch.index];
  struct Fn {
    Runner runner = nullptr;
    AnyFunction function = nullptr;
    std::exception_ptr error;  // the code could not be resolved here
  };
  std::vector<Fn> table;
  reduction::detail::ReceiveMapScope::Map received;
  std::string msg, out;
  std::uint64_t done = 0;
  for (;;) {
    ch.tasks.get(&copy_item, &msg, nullptr);
    if (msg.empty()) continue;
    const auto kind = static_cast<std::uint8_t>(msg[0]);
    if (kind == kStop) return;
    if (kind == kDefine) {
      std::uint32_t id = 0;
      std::memcpy(&id, msg.data() + 1, sizeof id);
      const std::string_view rest(msg.data() + 1 + sizeof id, msg.size() - 1 - sizeof id);
      std::uint32_t n = 0;
      std::memcpy(&n, rest.data(), sizeof n);
      if (table.size() <= id) table.resize(id + 1);
      try {
        table[id].runner = reinterpret_cast<Runner>(resolve(rest.substr(sizeof n, n)));
        table[id].function = resolve(rest.substr(sizeof n + n));
      } catch (...) {
        table[id].error = std::current_exception();
      }
      continue;
    }
    TaskHeader th;
    std::memcpy(&th, msg.data(), sizeof th);
    const std::size_t args_at = sizeof th + std::size_t{th.handles} * sizeof(std::uint64_t);
    received.clear();
    const std::exception_ptr handle_error =
        th.handles == 0 ? nullptr : receive_handles(ch, th, msg, received);
    const std::int64_t start = now_ns();
    slot.started_ns.store(start, std::memory_order_relaxed);
    slot.task.store(th.id, std::memory_order_release);
    out.resize(sizeof(ResultHeader));
    ResultHeader rh{kResult, ch.index, th.id, 1, 0};
    try {
      if (handle_error) std::rethrow_exception(handle_error);
      if (th.fn >= table.size() || !table[th.fn].runner) {
        if (th.fn < table.size() && table[th.fn].error) std::rethrow_exception(table[th.fn].error);
        throw ProcessError("pool worker: a task refers to an unknown function");
      }
      const reduction::detail::ReceiveMapScope scope(received);
      table[th.fn].runner(table[th.fn].function, msg.data() + args_at, msg.size() - args_at, out);
    } catch (...) {
      out.resize(sizeof(ResultHeader));
      rh.ok = 0;
      encode_error(std::current_exception(), out);
    }
    for (auto& r : received) platform::close_handle(r.second);
    rh.ns = static_cast<std::uint64_t>(now_ns() - start);
    std::memcpy(out.data(), &rh, sizeof rh);
    ch.results.put(out.data(), out.size(), nullptr);
    if (out.capacity() > (std::size_t{16} << 20)) std::string().swap(out);
    if (msg.capacity() > (std::size_t{16} << 20)) std::string().swap(msg);
    if (ch.maxtasks != 0 && ++done >= ch.maxtasks) return;
  }
}

namespace {

// Chunks per worker handed out ahead: one running, one waiting, so a worker never idles while
// the parent reacts to its last result. When chunks take under kShortChunkNs (measured, as a
// moving average), up to kDeepDepth: the parent then answers in batches and workers do not sleep
// between chunks. Depth never affects which chunk fails when a worker dies (the others go to
// other workers), only how evenly long chunks spread.
constexpr std::size_t kDepth = 2;
constexpr std::size_t kDeepDepth = 64;
constexpr double kShortChunkNs = 50'000;
constexpr Nanos kTick = std::chrono::milliseconds(10);

enum class RunState { run, close, terminate };

std::exception_ptr not_running() {
  return std::make_exception_ptr(std::invalid_argument("Pool not running"));
}
std::exception_ptr terminated() {
  return std::make_exception_ptr(ProcessError("the pool was terminated before the task finished"));
}

// Byte buffers kept for reuse: a chunk's arguments and its results message. Each call's would
// otherwise be fresh memory (past glibc's mmap threshold, a mapping faulted in page by page, in
// every call). Bounded: at most kMaxCount buffers and kMaxBytes in all are kept.
class Buffers {
 public:
  std::string take() noexcept {
    std::lock_guard g(mu_);
    if (kept_.empty()) return {};
    std::string s = std::move(kept_.back());
    kept_.pop_back();
    bytes_ -= s.capacity();
    return s;
  }
  void give(std::string&& s) noexcept {
    const std::size_t cap = s.capacity();
    if (cap < kMinBytes || cap > kMaxBytes) return;
    std::lock_guard g(mu_);
    if (kept_.size() >= kMaxCount || bytes_ + cap > kMaxBytes) return;
    s.clear();
    kept_.push_back(std::move(s));  // no allocation: reserved
    bytes_ += cap;
  }
  Buffers() { kept_.reserve(kMaxCount); }

 private:
  static constexpr std::size_t kMinBytes = 4096;
  static constexpr std::size_t kMaxBytes = std::size_t{8} << 20;
  static constexpr std::size_t kMaxCount = 64;
  std::mutex mu_;
  std::vector<std::string> kept_;
  std::size_t bytes_ = 0;
};

// Runs delivery and failure calls after the engine's lock is released.
struct Deliveries {
  struct D {
    std::shared_ptr<Job> job;
    std::uint32_t index;
    Outcome outcome;
  };
  explicit Deliveries(Buffers* b = nullptr) : buffers(b) {}
  Buffers* buffers;  // where delivered results' buffers go
  std::vector<D> items;
  std::vector<std::pair<std::shared_ptr<Job>, std::exception_ptr>> failures;
  void run() {
    for (auto& d : items) {
      d.job->deliver(d.index, d.outcome);
      if (buffers) buffers->give(std::move(d.outcome.bytes));
    }
    for (auto& f : failures) f.first->fail(f.second);
    items.clear();
    failures.clear();
  }
};

Outcome error_outcome(std::exception_ptr e) {
  Outcome o;
  o.error = std::move(e);
  return o;
}

// What both engines share: the configuration, the jobs not yet fully handed out, the lock.
class EngineBase : public Engine {
 public:
  explicit EngineBase(EngineConfig config) : cfg_(std::move(config)) {}
  int processes() const noexcept final { return cfg_.processes; }
  std::uint64_t chunks_sent() const noexcept final {
    return chunks_sent_.load(std::memory_order_relaxed);
  }
  void cancel_pending() noexcept final {
    std::vector<std::shared_ptr<Job>> jobs;
    {
      std::lock_guard g(mu_);
      jobs.assign(jobs_.begin(), jobs_.end());
    }
    for (auto& j : jobs) j->cancel_pending();
  }

 protected:
  EngineConfig cfg_;
  mutable std::mutex mu_;
  std::mutex join_mu_;
  std::deque<std::shared_ptr<Job>> jobs_;
  RunState state_ = RunState::run;
  std::atomic<std::uint64_t> chunks_sent_{0};
};

// The waiting thread's spinner (one per thread and kind of wait, lib/spin.hpp).
constinit thread_local Spinner t_await_spin;

// The queues of ended pools, taken by the next ones (QueueCore::reset_if_held_alone): making a
// queue (a 64 MiB memfd, its mapping and its out-of-band socket) and unmapping it again cost a
// process pool's start and end ~25 us per queue here. At most kMax are kept (two descriptors
// each). A forked child starts with none (its parent's stay its parent's).
class SpareQueues {
 public:
  static SpareQueues& get() {
    static auto* s = new SpareQueues;  // never destroyed: a pool may end during static destruction
    return *s;
  }
  QueueCore take() {
    {
      std::lock_guard g(mu_);
      if (!queues_.empty()) {
        QueueCore q = std::move(queues_.back());
        queues_.pop_back();
        return q;
      }
    }
    return QueueCore(0, 0, true);
  }
  std::size_t size() {
    std::lock_guard g(mu_);
    return queues_.size();
  }
  // Keeps `q` if no other process can use it any more; else it is destroyed.
  void give(QueueCore&& q) noexcept {
    if (!q) return;
    {
      std::lock_guard g(mu_);
      if (queues_.size() >= kMax) return;
    }
    if (!q.reset_if_held_alone()) return;
    std::lock_guard g(mu_);
    if (queues_.capacity() < kMax) {
      try {
        queues_.reserve(kMax);
      } catch (...) {
        return;
      }
    }
    if (queues_.size() < kMax) queues_.push_back(std::move(q));  // capacity reserved
  }

 private:
  static constexpr std::size_t kMax = 8;
  SpareQueues() { platform::at_fork_in_child(&after_fork_in_child); }
  // The parent's spares are left alone: mapped and open here as every inherited heap arena is.
  // Nothing is allocated here: a forked child (a pool worker) would pay copy-on-write faults for
  // memory it may never use.
  static void after_fork_in_child() {
    SpareQueues& s = get();
    new (&s.mu_) std::mutex();
    new (&s.queues_) std::vector<QueueCore>();
  }
  std::mutex mu_;
  std::vector<QueueCore> queues_;
};

// The threads of the process pools' engines, kept for the next pools. An engine thread forks its
// pool's workers, which end with it (their parent-death signal follows the forking thread), so it
// lives until they have all been reaped; then, rather than ending, it waits here for the next
// pool's engine: a thread's start and end cost a pool's creation and join tens of microseconds
// each (Pool(4) create+close+join under fork). At most kMaxIdle wait; a forked child starts with
// none (its parent's threads are not in it).
class EngineThreads {
 public:
  // One engine's use of a thread.
  struct Run {
    std::function<void()> fn;
    std::thread::id id;
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
  };
  static EngineThreads& get() {
    static auto* s = new EngineThreads;  // never destroyed: waiting threads use it until exit
    return *s;
  }
  // Runs r->fn on a waiting thread, else on a new one. Throws std::system_error when no thread
  // can be made.
  void start(const std::shared_ptr<Run>& r) {
    {
      std::lock_guard g(mu_);
      if (!idle_.empty()) {
        Idle* t = idle_.back();
        idle_.pop_back();
        r->id = t->id;
        t->next = r;
        t->cv.notify_one();
        return;
      }
    }
    auto t = std::make_unique<Idle>();
    t->next = r;
    Idle* raw = t.get();
    std::lock_guard g(mu_);  // the thread reads its id and job under the lock
    std::thread th([this, raw] { serve(raw); });
    t.release();
    raw->id = r->id = th.get_id();
    th.detach();
  }
  static void wait(Run& r) {
    std::unique_lock g(r.mu);
    r.cv.wait(g, [&] { return r.done; });
  }

 private:
  static constexpr std::size_t kMaxIdle = 4;
  struct Idle {
    std::condition_variable cv;
    std::shared_ptr<Run> next;
    std::thread::id id;
  };
  EngineThreads() { platform::at_fork_in_child(&after_fork_in_child); }
  static void after_fork_in_child() {
    EngineThreads& s = get();
    new (&s.mu_) std::mutex();
    new (&s.idle_) std::vector<Idle*>();  // the parent's threads are not here
  }

  void serve(Idle* t) {
    std::unique_lock g(mu_);
    for (;;) {
      t->cv.wait(g, [&] { return t->next != nullptr; });
      std::shared_ptr<Run> r = std::move(t->next);
      g.unlock();
      try {
        r->fn();
      } catch (...) {  // not expected: the engine's loop reports its own errors
      }
      r->fn = nullptr;  // its captures go before the engine learns it is done
      g.lock();
      bool keep = idle_.size() < kMaxIdle;
      if (keep) {
        try {
          idle_.push_back(t);
        } catch (...) {
          keep = false;
        }
      }
      g.unlock();
      {
        std::lock_guard d(r->mu);
        r->done = true;
      }
      r->cv.notify_all();
      r.reset();
      if (!keep) {
        delete t;
        return;
      }
      g.lock();
    }
  }

  std::mutex mu_;
  std::vector<Idle*> idle_;
};

// A ProcessEngine's thread: std::thread's start, join and id over EngineThreads.
class EngineThread {
 public:
  template <class F>
  void start(F&& fn) {
    auto r = std::make_shared<EngineThreads::Run>();
    r->fn = std::forward<F>(fn);
    EngineThreads::get().start(r);
    run_ = std::move(r);
  }
  bool joinable() const noexcept { return run_ != nullptr; }
  // Waits until the function has returned (the thread itself may serve another engine next).
  // Idempotent.
  void join() { EngineThreads::wait(*run_); }
  // Whether the caller is the thread running the function now (not once it has returned: the
  // thread may then run another engine's).
  bool current() const {
    if (!run_ || run_->id != std::this_thread::get_id()) return false;
    std::lock_guard g(run_->mu);
    return !run_->done;
  }

 private:
  std::shared_ptr<EngineThreads::Run> run_;
};

class ProcessEngine final : public EngineBase {
 public:
  explicit ProcessEngine(EngineConfig config)
      : EngineBase(std::move(config)), ctx_(cfg_.context.value_or(get_context())) {
    results_ = SpareQueues::get().take();
    slots_ =
        heap::SharedBlock(sizeof(Slot) * static_cast<std::size_t>(cfg_.processes), alignof(Slot));
    if (cfg_.initializer) initializer_code_ = code_of(cfg_.initializer);
    workers_.resize(static_cast<std::size_t>(cfg_.processes));
    for (auto& w : workers_) w.tasks = SpareQueues::get().take();
    // Forked workers would each copy the page tables of this process's free heap pages.
    if (ctx_.get_start_method() == "fork") platform::release_free_heap();
    // The engine thread starts every worker (the first ones too) and outlives them all: a forked
    // worker then ends with it through the OS's parent-death signal (also when this process is
    // SIGKILLed) and needs no watch thread of its own. The workers exist when this returns.
    auto started = std::make_shared<std::promise<void>>();  // the thread keeps it to the end
    std::future<void> ready = started->get_future();
    thread_.start([this, started] {
      try {
        for (std::size_t i = 0; i < workers_.size(); ++i) start_worker(i);
      } catch (...) {
        kill_all();
        started->set_exception(std::current_exception());
        return;
      }
      started->set_value();
      loop();
    });
    try {
      ready.get();
    } catch (...) {
      thread_.join();
      throw;
    }
  }

  ~ProcessEngine() override {
    try {
      terminate();
    } catch (...) {
    }
    if (thread_.joinable()) thread_.join();
    // Every worker has ended and been reaped (its lease on the queues released).
    for (auto& w : workers_) SpareQueues::get().give(std::move(w.tasks));
    SpareQueues::get().give(std::move(results_));
  }

  void submit(std::shared_ptr<Job> job) override {
    Deliveries d(&buffers_);
    {
      std::lock_guard g(mu_);
      if (broken_) std::rethrow_exception(broken_);
      if (state_ != RunState::run) throw std::invalid_argument("Pool not running");
      jobs_.push_back(std::move(job));
      dispatch(d);
    }
    d.run();
  }

  void kick() noexcept override {
    Deliveries d(&buffers_);
    {
      std::lock_guard g(mu_);
      if (state_ == RunState::terminate) return;
      try {
        dispatch(d);
      } catch (...) {
      }
    }
    d.run();
  }

  void close() override {
    {
      std::lock_guard g(mu_);
      if (state_ == RunState::run) state_ = RunState::close;
      for (auto& j : jobs_) j->unbounded = true;
      // Idle workers are told to stop here rather than by the engine thread once it wakes:
      // they end while it does. A queue whose lock is held too long is left to the engine.
      if (state_ == RunState::close && !broken_ && idle()) {
        const Nanos limit = std::chrono::milliseconds(1);
        for (auto& w : workers_) {
          if (!w.proc || w.stop_sent) continue;
          const std::uint8_t k = kStop;
          try {
            w.stop_sent = w.tasks.put(&k, 1, &limit);
          } catch (...) {
          }
        }
      }
    }
    wake();
  }

  void terminate() override {
    {
      std::lock_guard g(mu_);
      state_ = RunState::terminate;
    }
    wake();
    if (!thread_.current()) wait_thread();
  }

  void join() override {
    {
      std::lock_guard g(mu_);
      if (state_ == RunState::run) throw std::invalid_argument("Pool is still running");
    }
    if (thread_.current()) throw std::logic_error("cannot join the pool from its own thread");
    wait_thread();
  }

  bool running() const noexcept override {
    std::lock_guard g(mu_);
    return state_ == RunState::run && !broken_;
  }
  bool threads() const noexcept override { return false; }

  // Chunks are read from views only under the engine's lock (dispatch, send).
  void release(Job& job) noexcept override {
    std::lock_guard g(mu_);
    job.abandon();
    for (auto& w : workers_)
      for (auto& f : w.inflight)
        if (f.job.get() == &job) f.p.view = nullptr;
    retry_.erase(std::remove_if(retry_.begin(), retry_.end(),
                                [&](const Retry& r) { return r.job.get() == &job && r.p.view; }),
                 retry_.end());
  }

  void awaiting(bool starts) noexcept override {
    if (starts) {
      awaiters_.fetch_add(1, std::memory_order_seq_cst);
    } else if (awaiters_.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
               outstanding_.load(std::memory_order_seq_cst) != 0) {
      unpark();  // results are due and no one else reads them
    }
  }

  // Spins while results keep coming (a map's chunks): each result read starts a new spin, so
  // a caller whose results arrive closer together than a spin reads them all itself.
  bool await(const std::atomic<bool>& done) noexcept override {
    for (;;) {
      bool progress = false;
      t_await_spin.spin([&] {
        if (done.load(std::memory_order_acquire)) return true;
        if (results_.qsize() != 0 && read_results()) progress = true;
        return progress || done.load(std::memory_order_acquire);
      });
      if (done.load(std::memory_order_acquire)) return true;
      if (!progress) return false;
    }
  }

  void signal_workers(bool kill) override {
    {
      std::lock_guard g(mu_);
      state_ = RunState::terminate;
      kill_signal_ = kill;
    }
    wake();
    if (!thread_.current()) wait_thread();
  }

 private:
  // A chunk's arguments: serialized (`args`), or `count` items at `view` in the caller's input
  // (Chunk::view; cleared by release(), after which the chunk is not sent again).
  struct Payload {
    std::string args;
    const char* view = nullptr;
    std::size_t view_bytes = 0;
    std::uint32_t count = 0;
    ChunkHandles handles;
    bool empty() const noexcept { return !view && args.empty(); }
  };
  struct InFlight {
    std::uint64_t id;
    std::shared_ptr<Job> job;
    std::uint32_t index;
    std::uint32_t fn;
    Payload p;
  };
  // The parent's end of a worker's socket for descriptors (closed with it).
  struct Socket {
    platform::Handle fd = platform::kInvalidHandle;
    Socket() = default;
    Socket(Socket&& o) noexcept : fd(std::exchange(o.fd, platform::kInvalidHandle)) {}
    Socket& operator=(Socket&& o) noexcept {
      std::swap(fd, o.fd);
      return *this;
    }
    ~Socket() {
      if (fd != platform::kInvalidHandle) platform::close_handle(fd);
    }
  };
  struct Worker {
    std::optional<Process> proc;
    int pid = 0;
    QueueCore tasks;
    std::deque<InFlight> inflight;
    Socket handles;
    std::vector<bool> defined;
    std::uint64_t sent = 0;
    bool stop_sent = false;
    bool timed_out = false;
  };
  struct Retry {
    std::shared_ptr<Job> job;
    std::uint32_t index;
    std::uint32_t fn;
    Payload p;
  };

  Slot& slot(std::size_t i) { return static_cast<Slot*>(slots_.data())[i]; }

  // No work is left to hand out or to finish. Engine lock held.
  bool idle() const {
    return jobs_.empty() && retry_.empty() &&
           std::all_of(workers_.begin(), workers_.end(),
                       [](const Worker& w) { return w.inflight.empty(); });
  }

  void wake() noexcept {
    unpark();
    // Bounded: a worker that died or stopped holding the queue's lock (a zero timeout would
    // wait for the lock without limit) costs at most this, then the engine sees the change at
    // its next tick.
    try {
      const std::uint8_t k = kWake;
      const Nanos limit = std::chrono::milliseconds(1);
      results_.put(&k, 1, &limit);
    } catch (...) {
    }
  }

  void wait_thread() {
    std::lock_guard g(join_mu_);
    if (thread_.joinable()) thread_.join();
  }

  // The engine thread, parked while threads await, goes back to reading the result queue.
  void unpark() noexcept {
    if (count_event_if_sleepers(park_)) wake_sleepers(park_);
  }

  // A waiting thread reads what is in the result queue and delivers it (await). Returns whether
  // it delivered something.
  bool read_results() noexcept {
    Deliveries d(&buffers_);
    bool delivered = false;
    std::string& msg = thread_object<std::string, struct ResultsReadTag>();
    const Nanos zero{0};
    // Each result is delivered before the next is read: its buffer then holds the next one
    // (a batch read first would fill as many fresh buffers, faulted in page by page).
    for (int i = 0; i < 256; ++i) {
      {
        std::unique_lock r(read_mu_, std::try_to_lock);
        if (!r) break;
        try {
          if (!results_.get(&copy_item, &msg, &zero)) break;
        } catch (...) {
          break;
        }
        handle_message(msg, d);
      }
      delivered |= !d.items.empty();
      d.run();
    }
    if (!delivered) return false;
    d.run();  // first: a delivery may let a job hand out more (its first chunk's time is in)
    {
      std::lock_guard g(mu_);
      try {
        dispatch(d);
      } catch (...) {
      }
    }
    d.run();
    return true;
  }

  void start_worker(std::size_t i) {
    Worker& w = workers_[i];
    const auto [parent_end, child_end] = platform::datagram_pair();
    Socket child;
    child.fd = child_end;
    w.handles = Socket();
    w.handles.fd = parent_end;
    WorkerChannels ch{w.tasks,       results_,          slots_,   static_cast<std::uint32_t>(i),
                      cfg_.maxtasks, initializer_code_, child_end};
    slot(i).task.store(0, std::memory_order_relaxed);
    Process p = cfg_.factory(ctx_, ch);
    ProcessAccess::state(p).ends_with_starter = true;  // this is the engine thread
    p.set_name(std::string(cfg_.name) + "Worker-" + std::to_string(++worker_count_));
    p.set_daemon(true);
    p.start();
    w.pid = p.pid().value_or(0);
    w.proc = std::move(p);
    w.defined.clear();
    w.sent = 0;
    w.stop_sent = false;
    w.timed_out = false;
  }

  std::uint32_t function_id(AnyFunction runner, AnyFunction function) {
    const auto key = std::make_pair(runner, function);
    auto it = fn_ids_.find(key);
    if (it != fn_ids_.end()) return it->second;
    std::string def;
    const std::string a = code_of(runner), b = code_of(function);
    const auto n = static_cast<std::uint32_t>(a.size());
    def.append(reinterpret_cast<const char*>(&n), sizeof n);
    def += a;
    def += b;
    const auto id = static_cast<std::uint32_t>(fn_defs_.size());
    fn_defs_.push_back(std::move(def));
    fn_ids_.emplace(key, id);
    return id;
  }

  bool has_room(const Worker& w) const {
    if (!w.proc || w.stop_sent || w.inflight.size() >= depth_) return false;
    return cfg_.maxtasks == 0 || w.sent < cfg_.maxtasks;
  }

  // Hands chunks to workers with room, least loaded first. Engine lock held.
  void dispatch(Deliveries& d) {
    if (broken_ || state_ == RunState::terminate) return;
    for (;;) {
      Worker* best = nullptr;
      for (auto& w : workers_)
        if (has_room(w) && (!best || w.inflight.size() < best->inflight.size())) best = &w;
      if (!best) return;
      if (!retry_.empty()) {
        Retry r = std::move(retry_.front());
        retry_.pop_front();
        send(*best, std::move(r.job), r.index, r.fn, std::move(r.p), d);
        continue;
      }
      bool sent = false;
      for (auto it = jobs_.begin(); it != jobs_.end() && !sent;) {
        Chunk c;
        c.args = buffers_.take();
        const Next n = (*it)->next(c, false, cfg_.processes);
        if (n != Next::chunk) buffers_.give(std::move(c.args));
        if (n == Next::done) {
          it = jobs_.erase(it);
          continue;
        }
        if (n == Next::wait) {
          ++it;
          continue;
        }
        if (c.local || !c.runner) {  // the arguments could not be serialized
          Outcome o;
          if (c.local) c.local(o);
          d.items.push_back({*it, c.index, std::move(o)});
          sent = true;
          break;
        }
        std::uint32_t fn = 0;
        try {
          fn = function_id(c.runner, c.function);
        } catch (...) {
          d.items.push_back({*it, c.index, error_outcome(std::current_exception())});
          sent = true;
          break;
        }
        send(*best, *it, c.index, fn,
             Payload{std::move(c.args), c.view, c.view_bytes, c.count, std::move(c.handles)}, d);
        sent = true;
      }
      if (!sent) return;
    }
  }

  void send(Worker& w, std::shared_ptr<Job> job, std::uint32_t index, std::uint32_t fn, Payload p,
            Deliveries& d) {
    if (w.defined.size() <= fn) w.defined.resize(fn + 1);
    if (!w.defined[fn]) {
      std::string msg(1, static_cast<char>(kDefine));
      msg.append(reinterpret_cast<const char*>(&fn), sizeof fn);
      msg += fn_defs_[fn];
      w.tasks.put(msg.data(), msg.size(), nullptr);
      w.defined[fn] = true;
    }
    const TaskHeader th{kTask, next_id_++, fn, static_cast<std::uint32_t>(p.handles.items.size())};
    std::vector<std::uint64_t> tokens;
    if (!p.handles.items.empty()) {
      try {
        send_handles(w, th.id, p.handles);
      } catch (...) {  // the chunk fails; its descriptors left in the socket are dropped by id
        d.items.push_back({std::move(job), index, error_outcome(std::current_exception())});
        return;
      }
      for (const auto& h : p.handles.items) tokens.push_back(h.first);
    }
    // A view goes from the caller's input straight into the ring, after its item count.
    const QueueCore::Part parts[4] = {{&th, sizeof th},
                                      {tokens.data(), tokens.size() * sizeof(std::uint64_t)},
                                      p.view ? QueueCore::Part{&p.count, sizeof p.count}
                                             : QueueCore::Part{p.args.data(), p.args.size()},
                                      {p.view, p.view_bytes}};
    w.tasks.put(parts, p.view ? 4 : 3, nullptr);
    w.inflight.push_back(InFlight{th.id, std::move(job), index, fn, std::move(p)});
    if (outstanding_.fetch_add(1, std::memory_order_seq_cst) == 0 &&
        awaiters_.load(std::memory_order_seq_cst) == 0)
      unpark();
    ++w.sent;
    chunks_sent_.fetch_add(1, std::memory_order_relaxed);
  }

  // Passes a chunk's descriptors to worker `w`, tagged with the task's id, before the task.
  void send_handles(Worker& w, std::uint64_t id, const ChunkHandles& handles) {
    for (const auto& h : handles.items) {
      const auto fd = static_cast<platform::Handle>(h.second);
      while (!platform::send_descriptor(w.handles.fd, id, fd)) {
        const Nanos limit = std::chrono::seconds(5);
        if (!platform::wait_writable(w.handles.fd, &limit))
          throw ProcessError(
              "pool: the worker does not take the descriptors of a task's arguments");
      }
    }
  }

  // ---- the engine thread

  void loop() {
    rest_queue_get_spin();  // no result is due before a task is sent
    std::string msg;
    Deliveries d(&buffers_);
    auto last_check = platform::Clock::now();
    for (;;) {
      bool got = false, woken = false;
      if (awaiters_.load(std::memory_order_seq_cst) != 0) {
        // The awaiting threads read the results: sleep elsewhere, so that a worker's result
        // does not wake this thread too (on a loaded host, that wake-up takes a CPU from them).
        const std::uint32_t seen = prepare_sleep(park_);
        if (awaiters_.load(std::memory_order_seq_cst) != 0) sleep_on(park_, seen, &kTick);
      } else {
        try {
          got = results_.get(&copy_item, &msg, &kTick);
        } catch (...) {
          got = false;
        }
      }
      if (got) woken = handle_message(msg, d);
      // Drain whatever else is there before taking the lock for bookkeeping, unless threads
      // await results: they read them (two readers would trade the queue's lock).
      const Nanos zero{0};
      for (int i = 0; got && i < 256 && awaiters_.load(std::memory_order_relaxed) == 0; ++i) {
        d.run();  // as read_results(): the delivered result's buffer takes the next one
        try {
          if (!results_.get(&copy_item, &msg, &zero)) break;
        } catch (...) {
          break;
        }
        woken |= handle_message(msg, d);
      }
      d.run();  // first: a delivery may let a job hand out more (its first chunk's time is in)
      {
        std::lock_guard g(mu_);
        try {
          dispatch(d);
        } catch (...) {
        }
      }
      d.run();
      const auto now = platform::Clock::now();
      if (!got || woken || now - last_check >= kTick) {
        last_check = now;
        if (check_workers(d)) {
          d.run();
          return;
        }
        d.run();
      }
    }
  }

  // A message from the result queue; engine thread. Returns whether it was a wake-up.
  // `msg`'s buffer goes with the outcome (a recycled one takes its place).
  bool handle_message(std::string& msg, Deliveries& d) {
    if (msg.size() < sizeof(ResultHeader) || static_cast<std::uint8_t>(msg[0]) != kResult)
      return true;
    ResultHeader rh;
    std::memcpy(&rh, msg.data(), sizeof rh);
    Outcome o;
    o.ok = rh.ok != 0;
    o.ns = rh.ns;
    if (o.ok) {
      o.bytes.swap(msg);
      o.skip = sizeof rh;
      msg = buffers_.take();
    } else {
      o.error = decode_error(std::string_view(msg.data() + sizeof rh, msg.size() - sizeof rh));
    }
    std::lock_guard g(mu_);
    chunk_ns_ = chunk_ns_ == 0 ? static_cast<double>(rh.ns)
                               : 0.9 * chunk_ns_ + 0.1 * static_cast<double>(rh.ns);
    depth_ = chunk_ns_ < kShortChunkNs ? kDeepDepth : kDepth;
    if (rh.worker >= workers_.size()) return false;
    auto& q = workers_[rh.worker].inflight;
    for (auto it = q.begin(); it != q.end(); ++it) {
      if (it->id != rh.id) continue;
      d.items.push_back({std::move(it->job), it->index, std::move(o)});
      buffers_.give(std::move(it->p.args));
      q.erase(it);
      outstanding_.fetch_sub(1, std::memory_order_seq_cst);
      return false;
    }
    return false;
  }

  // Every tick: dead workers, time limits, close and terminate. True when the engine is done.
  bool check_workers(Deliveries& d) {
    std::unique_lock g(mu_);
    if (state_ == RunState::terminate || broken_) {
      g.unlock();
      d.run();
      shut_down();
      return true;
    }
    const std::int64_t now = now_ns();
    for (std::size_t i = 0; i < workers_.size(); ++i) {
      Worker& w = workers_[i];
      if (!w.proc) continue;
      if (!w.proc->is_alive()) {
        g.unlock();
        d.run();
        drain_results(d);  // everything the dead worker sent is in the queue now
        g.lock();
        worker_ended(i, d);
        if (broken_) {
          g.unlock();
          d.run();
          shut_down();
          return true;
        }
        continue;
      }
      if (cfg_.task_timeout && !w.timed_out) {
        const std::uint64_t t = slot(i).task.load(std::memory_order_acquire);
        const std::int64_t started = slot(i).started_ns.load(std::memory_order_relaxed);
        const bool running = std::any_of(w.inflight.begin(), w.inflight.end(),
                                         [&](const InFlight& f) { return f.id == t; });
        if (running && now - started > cfg_.task_timeout->count()) {
          w.timed_out = true;
          w.proc->kill();
        }
      }
    }
    if (state_ == RunState::close) {
      if (idle()) {
        std::vector<Process> stopping;
        for (auto& w : workers_) {
          if (!w.proc) continue;
          if (!w.stop_sent) {
            const std::uint8_t k = kStop;
            w.tasks.put(&k, 1, nullptr);
            w.stop_sent = true;
          }
          stopping.push_back(*w.proc);
        }
        if (stopping.empty()) return true;
        // Idle workers told to stop end at once: wait for them here rather than a tick each.
        g.unlock();
        bool all_ended = true;
        for (auto& p : stopping) {
          p.join(std::chrono::milliseconds(100));
          all_ended = all_ended && p.exitcode().has_value();
        }
        if (all_ended) return check_workers(d);
      }
    }
    return false;
  }

  void drain_results(Deliveries& d) {
    std::lock_guard r(read_mu_);  // a message a waiting thread took is handled first
    std::string msg;
    const Nanos zero{0};
    for (;;) {
      try {
        if (!results_.get(&copy_item, &msg, &zero)) return;
      } catch (...) {
        return;
      }
      handle_message(msg, d);
    }
  }

  // Worker i has ended; its results are all read. Engine lock held.
  void worker_ended(std::size_t i, Deliveries& d) {
    Worker& w = workers_[i];
    const int code = w.proc->exitcode().value_or(0);
    const int pid = w.pid;
    w.proc->close();
    w.proc.reset();
    // Chunks still in its queue, then those it took: the one in its slot was running.
    std::vector<std::uint64_t> queued;
    {
      std::string msg;
      const Nanos zero{0};
      for (;;) {
        try {
          if (!w.tasks.get(&copy_item, &msg, &zero)) break;
        } catch (...) {
          break;
        }
        if (msg.size() >= sizeof(TaskHeader) && static_cast<std::uint8_t>(msg[0]) == kTask) {
          TaskHeader th;
          std::memcpy(&th, msg.data(), sizeof th);
          const std::uint64_t id = th.id;  // a packed field: copied, not bound to a reference
          queued.push_back(id);
        }
      }
    }
    const std::uint64_t running = slot(i).task.load(std::memory_order_acquire);
    std::deque<Retry> again;
    for (auto& f : w.inflight) {
      const bool was_queued = std::find(queued.begin(), queued.end(), f.id) != queued.end();
      if (f.id == running && !was_queued) {
        std::exception_ptr e;
        if (w.timed_out) {
          e = std::make_exception_ptr(
              TimeoutError("the task exceeded the pool's task_timeout; its worker (pid " +
                           std::to_string(pid) + ") was killed"));
        } else if (cfg_.broken_error) {
          e = cfg_.broken_error(
              "A process in the process pool was terminated abruptly while the future was running "
              "or pending.");
        } else {
          e = std::make_exception_ptr(WorkerLostError(pid, code));
        }
        if (cfg_.broken_error && !w.timed_out) broken_ = e;
        d.items.push_back({std::move(f.job), f.index, error_outcome(e)});
      } else if (f.p.empty()) {  // released: its job's result is decided
        d.items.push_back({std::move(f.job), f.index, error_outcome(terminated())});
      } else {
        again.push_back(Retry{std::move(f.job), f.index, f.fn, std::move(f.p)});
      }
    }
    outstanding_.fetch_sub(w.inflight.size(), std::memory_order_seq_cst);
    w.inflight.clear();
    retry_.insert(retry_.begin(), std::make_move_iterator(again.begin()),
                  std::make_move_iterator(again.end()));
    if (broken_) return;
    const bool needed = state_ == RunState::run || !jobs_.empty() || !retry_.empty() ||
                        std::any_of(workers_.begin(), workers_.end(),
                                    [](const Worker& x) { return !x.inflight.empty(); });
    if (!needed) return;
    try {
      start_worker(i);
    } catch (...) {
      broken_ = std::current_exception();
    }
  }

  // terminate(), or the pool broke: stop the workers, fail what is left. Engine thread.
  void shut_down() {
    Deliveries d(&buffers_);
    {
      std::lock_guard g(mu_);
      kill_all();
      const std::exception_ptr e = broken_ ? broken_
                                   : cfg_.broken_error
                                       ? cfg_.broken_error("the executor's workers were terminated")
                                       : terminated();
      for (auto& w : workers_) {
        for (auto& f : w.inflight) d.failures.emplace_back(std::move(f.job), e);
        outstanding_.fetch_sub(w.inflight.size(), std::memory_order_seq_cst);
        w.inflight.clear();
      }
      for (auto& r : retry_) d.failures.emplace_back(std::move(r.job), e);
      retry_.clear();
      for (auto& j : jobs_) d.failures.emplace_back(j, e);
      jobs_.clear();
      if (!broken_) broken_ = not_running();
      state_ = RunState::terminate;
    }
    d.run();
  }

  // SIGTERM (or SIGKILL), then SIGKILL for any worker still there after a grace period.
  void kill_all() noexcept {
    for (auto& w : workers_) {
      if (!w.proc) continue;
      try {
        if (kill_signal_) {
          w.proc->kill();
        } else {
          w.proc->terminate();
        }
      } catch (...) {
      }
    }
    for (auto& w : workers_) {
      if (!w.proc) continue;
      try {
        w.proc->join(std::chrono::seconds(1));
        if (!w.proc->exitcode()) {
          w.proc->kill();
          w.proc->join();
        }
        w.proc->close();
      } catch (...) {
      }
      w.proc.reset();
    }
  }

  Context ctx_;
  Buffers buffers_;
  std::string initializer_code_;
  QueueCore results_;
  heap::SharedBlock slots_;
  std::mutex read_mu_;            // held by a waiting thread while it reads and handles results
  std::atomic<int> awaiters_{0};  // threads in awaiting(true)
  std::atomic<std::size_t> outstanding_{0};  // chunks handed to workers whose results are unread
  std::atomic<std::uint32_t> park_{0};       // an event count: the engine thread parks on it
  std::vector<Worker> workers_;
  std::deque<Retry> retry_;
  std::map<std::pair<AnyFunction, AnyFunction>, std::uint32_t> fn_ids_;
  std::vector<std::string> fn_defs_;
  std::uint64_t next_id_ = 1;
  int worker_count_ = 0;
  bool kill_signal_ = false;
  std::exception_ptr broken_;
  double chunk_ns_ = 0;
  std::size_t depth_ = kDepth;
  EngineThread thread_;
};

// ---- threads (ThreadPool, ThreadPoolExecutor): any callable, no serialization.
class ThreadEngine final : public EngineBase {
 public:
  explicit ThreadEngine(EngineConfig config) : EngineBase(std::move(config)) {
    for (int i = 0; i < cfg_.processes; ++i) threads_.emplace_back([this] { run(); });
  }
  ~ThreadEngine() override {
    try {
      terminate();
    } catch (...) {
    }
    wait_threads();
  }

  void submit(std::shared_ptr<Job> job) override {
    {
      std::lock_guard g(mu_);
      if (state_ != RunState::run) throw std::invalid_argument("Pool not running");
      jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
  }
  void kick() noexcept override { cv_.notify_all(); }
  void close() override {
    {
      std::lock_guard g(mu_);
      if (state_ == RunState::run) state_ = RunState::close;
      for (auto& j : jobs_) j->unbounded = true;
    }
    cv_.notify_all();
  }
  void terminate() override {
    std::vector<std::shared_ptr<Job>> jobs;
    {
      std::lock_guard g(mu_);
      state_ = RunState::terminate;
      jobs.assign(jobs_.begin(), jobs_.end());
      jobs_.clear();
    }
    cv_.notify_all();
    for (auto& j : jobs) j->fail(terminated());
    if (!on_worker_thread()) wait_threads();
  }
  void join() override {
    {
      std::lock_guard g(mu_);
      if (state_ == RunState::run) throw std::invalid_argument("Pool is still running");
    }
    if (on_worker_thread()) throw std::logic_error("cannot join the pool from one of its threads");
    wait_threads();
  }
  bool running() const noexcept override {
    std::lock_guard g(mu_);
    return state_ == RunState::run;
  }
  bool threads() const noexcept override { return true; }
  void signal_workers(bool) override { terminate(); }
  // The worker thread sets the flag itself: only spin.
  bool await(const std::atomic<bool>& done) noexcept override {
    return t_await_spin.spin([&] { return done.load(std::memory_order_acquire); });
  }

 private:
  bool on_worker_thread() const {
    for (auto& t : threads_)
      if (t.get_id() == std::this_thread::get_id()) return true;
    return false;
  }
  void wait_threads() {
    std::lock_guard g(join_mu_);
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }

  void run() {
    if (cfg_.thread_initializer) {
      try {
        cfg_.thread_initializer();
      } catch (...) {
        report_callback_error("initializer", std::current_exception());
      }
    }
    std::unique_lock g(mu_);
    for (;;) {
      if (state_ == RunState::terminate) return;
      std::shared_ptr<Job> job;
      Chunk c;
      for (auto it = jobs_.begin(); it != jobs_.end();) {
        const Next n = (*it)->next(c, true, cfg_.processes);
        if (n == Next::done) {
          it = jobs_.erase(it);
          continue;
        }
        if (n == Next::chunk) {
          job = *it;
          break;
        }
        ++it;
      }
      if (!job) {
        if (state_ == RunState::close && jobs_.empty()) {
          cv_.notify_all();
          return;
        }
        cv_.wait(g);
        continue;
      }
      chunks_sent_.fetch_add(1, std::memory_order_relaxed);
      g.unlock();
      Outcome o;
      const auto start = platform::Clock::now();
      try {
        c.local(o);
        o.ok = !o.error;
      } catch (...) {
        o.ok = false;
        o.error = std::current_exception();
      }
      o.ns = static_cast<std::uint64_t>(
          std::chrono::duration_cast<Nanos>(platform::Clock::now() - start).count());
      job->deliver(c.index, o);
      g.lock();
    }
  }

  std::condition_variable cv_;
  std::vector<std::thread> threads_;
};

}  // namespace

std::size_t spare_queues() noexcept { return SpareQueues::get().size(); }

std::shared_ptr<Engine> make_process_engine(EngineConfig config) {
  return std::make_shared<ProcessEngine>(std::move(config));
}
std::shared_ptr<Engine> make_thread_engine(EngineConfig config) {
  return std::make_shared<ThreadEngine>(std::move(config));
}

}  // namespace detail::pool
}  // namespace mp
