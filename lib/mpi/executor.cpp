// MPIPoolExecutor (mp/mpi.hpp): the pool engine interface of mp/pool_jobs.hpp over MPI ranks.
// mpi4py: mpi4py/futures/_lib.py (its client manager thread and worker loop).
//
// The jobs, chunking, argument and result serialization are the local executor's
// (mp/pool_jobs.hpp): this file only moves a chunk's bytes to a rank and its outcome back.
// - Client (rank 0, or the process that spawned the workers): callers hand chunks to workers with
//   room directly, under the engine's lock (an MPI_Isend, no thread hop). Results are received
//   (an MPI_Test of the receive kept posted, wire.hpp) by whichever thread polls, which then
//   delivers them and tops the workers up (leader/follower, no hand-off between threads):
//   - a thread waiting on a future (Engine::await) polls MPI itself while it spins
//     (lib/support/spin.hpp's policy), so a result that comes within the spin reaches its waiter
//     with no thread hop; the engine thread stays parked while any thread awaits;
//   - otherwise (map() streams, as_completed, wait, callbacks, a waiter whose spin ran out) the
//     engine thread polls.
//   Each worker holds at most `depth` chunks (2; 64 when chunks are measured to take < 50 µs).
// - Worker: tests its posted receive for the next message, runs a chunk with its Runner,
//   MPI_Sends the outcome. (A posted receive takes a message in place; MPI_Improbe + MPI_Mrecv
//   went through the unexpected queue: round trip, -n 2, chrt: 1.49 -> 1.23 µs.)
// - Both sides poll while messages are due (an MPI wait is a poll anyway in Open MPI) and back
//   off in time: continuous polls (yielding the CPU between them) for kSpinWindow after the last
//   message, then sleeps of a quarter of the time waited, at most kMaxNap. So an idle worker costs
//   ~1000 wake-ups per second, not a core, and a task that took t is seen within ~t/4 + kMaxNap.
//   An idle engine thread naps kMaxNap at a time for kIdleNaps after its last work (a submit
//   then costs no wake-up call, which would take a CPU from the worker that is about to answer),
//   then sleeps until a submit wakes it: work no thread awaits is seen within kMaxNap.
// - Every MPI call of the process is made under one lock (MPI_THREAD_SERIALIZED suffices).
#include "mp/mpi.hpp"

#include <mpi.h>

#include <condition_variable>
#include <cstdlib>
#include <optional>
#include <cstring>
#include <list>
#include <map>
#include <thread>

#include "../platform/process.hpp"
#include "../platform/system.hpp"
#include "../platform/wait.hpp"
#include "../support/remote_error.hpp"
#include "../support/spin.hpp"
#include "wire.hpp"

namespace mp::mpi {
namespace {

namespace pool = mp::detail::pool;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto kSpinWindow = 1ms;
constexpr auto kMaxNap = 1ms;
constexpr auto kIdleNaps = 100ms;
constexpr int kPollBatch = 64;  // results received per poll before the bookkeeping
constexpr std::size_t kDepth = 2;
constexpr std::size_t kDeepDepth = 64;
constexpr double kShortChunkNs = 50'000;
// The gap between two MPI polls of a spin: a sixteenth of the time waited so far, at most 1 µs
// (spin.hpp's hand-off pace is a quarter): an answer that took t is seen within ~t/16 more. A
// poll reads MPI's queues, not a line the peer writes in a loop, so closer looks cost the peer
// nothing (round trip, -n 2, chrt: 1.60 -> 1.51 µs against a quarter; no gain below 1/16).
constexpr mp::detail::LookPace kMpiPace{16, std::chrono::nanoseconds(1000)};
constexpr std::size_t kKeepBuffer = std::size_t{1} << 20;  // a larger send buffer is freed
constexpr auto kWatchEvery = 100ms;  // spawned workers' liveness, while results are due
constexpr auto kHelloTimeout = 60s;
constexpr auto kSpawnTimeout = 60s;

std::mutex g_mpi;  // every MPI call
bool g_ready = false;
int g_rank = 0, g_size = 1;
MPI_Comm g_world = MPI_COMM_NULL;  // a dup of MPI_COMM_WORLD: the mpiexec-mode executors' channel
std::atomic<bool> g_world_taken{false};
std::atomic<bool> g_broken{false};
// Spawned workers outlive their executor: the next executor that wants as many takes them
// (Open MPI 4.1's MPI_Comm_spawn is slow, ~0.4 s, and now and then stalls in PMIx after several
// spawns in one process). Ended at exit, or when an executor wants another number of workers.
struct SpawnedGroup {
  MPI_Comm comm = MPI_COMM_NULL;
  int n = 0;
  std::vector<int> pids;
  bool taken = false;
};
std::mutex g_spawn_mu;            // before g_mpi
SpawnedGroup g_spawned;           // an executor broke: MPI_Finalize could wait for a dead rank
std::vector<std::string> g_args;  // argv[1..] for spawned workers

std::string mpi_error(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, static_cast<std::size_t>(len));
}

void check(int rc, const char* call) {
  if (rc != MPI_SUCCESS) throw std::runtime_error(std::string(call) + ": " + mpi_error(rc));
}

// Backs off while polling for a message (see the banner).
class Backoff {
 public:
  void reset() { since_ = Clock::now(); }
  void pause() {
    const auto waited = Clock::now() - since_;
    if (waited < kSpinWindow) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::min<Clock::duration>(waited / 4, kMaxNap));
    }
  }

 private:
  Clock::time_point since_ = Clock::now();
};

// ---- the worker side

struct Function {
  pool::Runner runner = nullptr;
  mp::detail::AnyFunction function = nullptr;
  std::exception_ptr error;  // the code could not be resolved here
};

// Runs a task that came at `start`; returns when it ended (one clock read: a read costs ~30 ns,
// a fair part of a short task's round trip).
Clock::time_point run_task(std::vector<Function>& table, std::string_view msg, std::string& out,
                           Clock::time_point start) {
  out.assign(wire::kResultHeader, '\0');
  std::uint64_t id = 0;
  bool ok = true;
  try {
    const wire::Task t = wire::decode_task(msg);
    id = t.id;
    if (t.fn >= table.size() || (!table[t.fn].runner && !table[t.fn].error))
      throw ProcessError("MPI worker: a task refers to an unknown function");
    if (table[t.fn].error) std::rethrow_exception(table[t.fn].error);
    table[t.fn].runner(table[t.fn].function, t.args.data(), t.args.size(), out);
  } catch (...) {
    ok = false;
    out.resize(wire::kResultHeader);
    mp::detail::encode_error(std::current_exception(), out);
  }
  const auto end = Clock::now();
  wire::put_result_header(
      out, id, ok,
      static_cast<std::uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count()));
  return end;
}

void define(std::vector<Function>& table, std::string_view msg) {
  const wire::Define d = wire::decode_define(msg);
  if (d.fn > (1u << 20)) throw UnpicklingError("corrupt data: function id out of range");
  if (table.size() <= d.fn) table.resize(d.fn + 1);
  Function& f = table[d.fn];
  f = Function{};
  try {
    f.runner = reinterpret_cast<pool::Runner>(pool::resolve_initializer(std::string(d.runner)));
    f.function = pool::resolve_initializer(std::string(d.function));
    if (!f.runner || !f.function) throw ProcessError("MPI worker: an empty code location");
  } catch (...) {
    f.runner = nullptr;
    f.error = std::current_exception();
  }
}

// Serves the client (rank `client` of `comm`) until kExit; kRelease ends an executor's use.
void serve(MPI_Comm comm, int client) {
  std::vector<Function> table;
  std::string posted(wire::kPostedBytes, '\0'), large, out;
  Backoff backoff;
  mp::detail::Spinner spinner{kMpiPace};
  // The next message lands in `posted` (wire.hpp): a poll is an MPI_Test.
  MPI_Request request = MPI_REQUEST_NULL;
  const auto post = [&] {
    std::lock_guard g(g_mpi);
    check(MPI_Irecv(posted.data(), static_cast<int>(posted.size()), MPI_BYTE, client, MPI_ANY_TAG,
                    comm, &request),
          "MPI_Irecv");
  };
  post();
  Clock::time_point last_end{};  // when the last message handled was a task that ended then
  for (;;) {
    MPI_Status st;
    // The next message of a busy client usually comes within microseconds: spin first
    // (lib/support/spin.hpp, the client is another rank), then poll with backoff.
    const auto receive = [&] {
      std::lock_guard g(g_mpi);
      int flag = 0;
      check(MPI_Test(&request, &flag, &st), "MPI_Test");
      return flag != 0;
    };
    bool waited = false;
    while (!spinner.spin_remote(receive)) {
      backoff.pause();
      waited = true;
    }
    backoff.reset();
    // When the message came: the spin's last clock read before the look that found it; if the
    // first look found it, the end of the task just before (nothing else ran since), else now.
    const auto came = [&, look = spinner.last_read(), before = std::exchange(last_end, {})] {
      if (look != Clock::time_point{}) return look;
      return !waited && before != Clock::time_point{} ? before : Clock::now();
    };
    bool large_message = false;
    int count = 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    std::string_view msg(posted.data(), static_cast<std::size_t>(count));
    int tag = st.MPI_TAG;
    if (tag == wire::kLarge) {  // the message itself follows: received here, in order
      try {
        const wire::Large l = wire::decode_large(msg);
        large.resize(l.size);
        std::lock_guard g(g_mpi);
        check(MPI_Recv(large.data(), static_cast<int>(l.size), MPI_BYTE, client, wire::kLargeBody,
                       comm, MPI_STATUS_IGNORE),
              "MPI_Recv");
        msg = large;
        tag = l.tag;
        large_message = true;
      } catch (const UnpicklingError& e) {
        std::fprintf(stderr, "mp::mpi worker %d: %s\n", g_rank, e.what());
        tag = wire::kLarge;  // ignored below
      }
    }
    switch (tag) {
      case wire::kDefine:
        try {
          define(table, msg);
        } catch (const std::exception& e) {  // corrupt: the tasks naming it fail as unknown
          std::fprintf(stderr, "mp::mpi worker %d: %s\n", g_rank, e.what());
        }
        break;
      case wire::kTask: {
        last_end = run_task(table, msg, out, large_message ? Clock::now() : came());
        std::lock_guard g(g_mpi);
        check(MPI_Send(out.data(), static_cast<int>(out.size()), MPI_BYTE, client,
                       out.size() <= wire::kPostedBytes ? wire::kResult : wire::kResultLarge, comm),
              "MPI_Send");
        break;
      }
      case wire::kRelease:
        table.clear();
        break;
      case wire::kExit:
        return;  // (its message completed the posted receive: none is left)
      default:
        std::fprintf(stderr, "mp::mpi worker %d: unknown message tag %d ignored\n", g_rank, tag);
    }
    if (out.capacity() > (std::size_t{16} << 20)) std::string().swap(out);
    if (large.capacity() > (std::size_t{16} << 20)) std::string().swap(large);
    post();
  }
}

// Ends a spawned group that is not in use (g_spawn_mu and g_mpi held).
void end_group(SpawnedGroup& group) {
  for (int r = 0; r < group.n; ++r) MPI_Send(nullptr, 0, MPI_BYTE, r, wire::kExit, group.comm);
  MPI_Comm_disconnect(&group.comm);
  group = SpawnedGroup{};
}

// Rank 0 at exit: the spawned and the world's workers end, then MPI.
void finish_root() {
  std::lock_guard s(g_spawn_mu);
  std::lock_guard g(g_mpi);
  if (g_spawned.comm != MPI_COMM_NULL && !g_spawned.taken && !g_broken.load()) end_group(g_spawned);
  for (int r = 1; r < g_size; ++r) MPI_Send(nullptr, 0, MPI_BYTE, r, wire::kExit, g_world);
  MPI_Comm_free(&g_world);
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && !g_broken.load()) MPI_Finalize();
}

// ---- the client side

enum class RunState { run, close, terminate };

struct Deliveries {
  struct D {
    std::shared_ptr<pool::Job> job;
    std::uint32_t index;
    pool::Outcome outcome;
  };
  std::vector<D> items;
  std::vector<std::pair<std::shared_ptr<pool::Job>, std::exception_ptr>> failures;
  void run() {
    for (auto& d : items) d.job->deliver(d.index, d.outcome);
    for (auto& f : failures) f.first->fail(f.second);
    items.clear();
    failures.clear();
  }
};

std::exception_ptr broken(const std::string& why) {
  return std::make_exception_ptr(futures::BrokenProcessPool("MPIPoolExecutor: " + why));
}

class MpiEngine final : public pool::Engine {
 public:
  // Workers are ranks `first`..`first + n - 1` of `comm`, told kRelease at the end; then
  // `released(broken)` runs (without any lock). `pids`: of spawned workers on this host (0 for
  // one elsewhere), watched.
  MpiEngine(MPI_Comm comm, int first, int n, std::function<void(bool)> released,
            const std::vector<int>& pids = {})
      : comm_(comm), released_(std::move(released)) {
    for (int i = 0; i < n; ++i)
      workers_.push_back(Worker{
          first + i,
          {},
          {},
          static_cast<std::size_t>(i) < pids.size() ? pids[static_cast<std::size_t>(i)] : 0});
    first_ = first;
    {
      std::lock_guard m(g_mpi);
      posted_bytes_.resize(wire::kPostedBytes);
      check(post_receive(), "MPI_Irecv");
    }
    try {
      thread_ = std::thread([this] { loop(); });
    } catch (...) {
      std::lock_guard m(g_mpi);
      cancel_receive();
      throw;
    }
  }
  ~MpiEngine() override {
    try {
      terminate();
    } catch (...) {
    }
    if (thread_.joinable()) thread_.join();
  }

  // A job handed out whole (a submit()) is left to the thread that will await it (the engine
  // thread, napping, sees it within kMaxNap if none does); one that waits for room (map(), many
  // futures) needs the engine thread now.
  void submit(std::shared_ptr<pool::Job> job) override {
    Deliveries d;
    bool waits = false;
    {
      std::lock_guard g(mu_);
      if (broken_) std::rethrow_exception(broken_);
      if (state_ != RunState::run) throw std::invalid_argument("Pool not running");
      jobs_.push_back(std::move(job));
      dispatch(d);
      waits = !jobs_.empty();
      jobs_left_.store(jobs_.size(), std::memory_order_relaxed);
    }
    wake(waits ? Wake::napping : Wake::sleeping);
    d.run();
  }
  // A map() stream's reader made room.
  void kick() noexcept override {
    Deliveries d;
    {
      std::lock_guard g(mu_);
      dispatch(d);
      jobs_left_.store(jobs_.size(), std::memory_order_relaxed);
    }
    wake(Wake::napping);
    d.run();
  }
  void close() override {
    {
      std::lock_guard g(mu_);
      if (state_ == RunState::run) state_ = RunState::close;
      for (auto& j : jobs_) j->unbounded = true;
    }
    wake(Wake::always);
  }
  // Fails every unfinished job now. Chunks already on a rank cannot be stopped: the engine thread
  // still takes (and drops) their results before it releases the workers.
  void terminate() override {
    Deliveries d;
    {
      std::lock_guard g(mu_);
      state_ = RunState::terminate;
      fail_all(std::make_exception_ptr(
                   ProcessError("the executor was shut down before the task finished")),
               d);
    }
    wake(Wake::always);
    d.run();
  }
  void join() override {
    {
      std::lock_guard g(mu_);
      if (state_ == RunState::run && !broken_) throw std::invalid_argument("Pool is still running");
    }
    if (std::this_thread::get_id() == thread_.get_id())
      throw std::logic_error("cannot join the executor from its own thread");
    std::lock_guard g(join_mu_);
    if (thread_.joinable()) thread_.join();
  }
  bool running() const noexcept override {
    std::lock_guard g(mu_);
    return state_ == RunState::run && !broken_;
  }
  int processes() const noexcept override { return static_cast<int>(workers_.size()); }
  bool threads() const noexcept override { return false; }
  std::uint64_t chunks_sent() const noexcept override {
    return chunks_sent_.load(std::memory_order_relaxed);
  }
  // The waiting thread receives and delivers results itself while it spins (lib/support/spin.hpp),
  // whoever's they are; the engine thread meanwhile stays parked (see loop()). It spins even
  // when this process is bound to one CPU (mpiexec binds each of 2 ranks to a core): the worker
  // that answers is another rank.
  bool await(const std::atomic<bool>& done) noexcept override {
    static constinit thread_local mp::detail::Spinner spinner{kMpiPace};
    static thread_local std::string buf;
    // One Deliveries per nesting level (a done callback run by poll() may await: nested poll()),
    // kept for the thread's next awaits (no allocation per result).
    static thread_local std::deque<Deliveries> deliveries;
    static thread_local std::size_t depth = 0;
    if (deliveries.size() <= depth) {
      try {
        deliveries.emplace_back();
      } catch (...) {
        return done.load(std::memory_order_acquire);  // out of memory: the engine thread polls
      }
    }
    Deliveries& d = deliveries[depth];
    ++depth;
    const bool got = spinner.spin_remote([&] {
      if (done.load(std::memory_order_acquire)) return true;
      poll(buf, d);
      return done.load(std::memory_order_acquire);
    });
    --depth;
    return got;
  }
  void awaiting(bool starts) noexcept override {
    if (starts) {
      awaiters_.fetch_add(1, std::memory_order_seq_cst);
    } else if (awaiters_.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
               outstanding_.load(std::memory_order_seq_cst) != 0) {
      wake(Wake::always);  // results are due and no thread reads them: the engine thread does
    }
  }
  void cancel_pending() noexcept override {
    std::vector<std::shared_ptr<pool::Job>> jobs;
    {
      std::lock_guard g(mu_);
      jobs.assign(jobs_.begin(), jobs_.end());
    }
    for (auto& j : jobs) j->cancel_pending();
  }
  void signal_workers(bool) override {
    throw std::logic_error("MPIPoolExecutor: an MPI rank cannot be terminated alone");
  }

 private:
  struct InFlight {
    std::uint64_t id;
    std::shared_ptr<pool::Job> job;
    std::uint32_t index;
  };
  struct Worker {
    int rank;
    std::deque<InFlight> inflight;
    std::vector<bool> defined;
    int pid = 0;  // a spawned worker on this host: watched (0: not watched)
  };
  struct Send {
    MPI_Request request;
    std::string bytes;
  };

  // Wakes the engine thread: always, if it naps or sleeps (nothing on the ranks), or only if it
  // sleeps (past its naps).
  enum class Wake { always, napping, sleeping };
  void wake(Wake when) noexcept {
    const int idle = idle_.load(std::memory_order_acquire);
    if (when == Wake::always || (when == Wake::napping && idle != kPolling) || idle == kSleeping) {
      { std::lock_guard g(mu_); }
      cv_.notify_all();
    }
  }

  std::size_t depth() const { return avg_ns_ > 0 && avg_ns_ < kShortChunkNs ? kDeepDepth : kDepth; }

  // Hands chunks to workers with room, least loaded first. mu_ held.
  void dispatch(Deliveries& d) {
    if (broken_ || state_ == RunState::terminate) return;
    const std::size_t limit = depth();
    for (;;) {
      Worker* best = nullptr;
      for (auto& w : workers_)
        if (w.inflight.size() < limit && (!best || w.inflight.size() < best->inflight.size()))
          best = &w;
      if (!best) return;
      bool sent = false;
      for (auto it = jobs_.begin(); it != jobs_.end() && !sent;) {
        pool::Chunk c;
        const pool::Next n = (*it)->next(c, false, processes());
        if (n == pool::Next::done) {
          it = jobs_.erase(it);
          continue;
        }
        if (n == pool::Next::wait) {
          ++it;
          continue;
        }
        sent = true;
        if (c.local || !c.runner) {  // the arguments could not be serialized
          pool::Outcome o;
          if (c.local) c.local(o);
          d.items.push_back({*it, c.index, std::move(o)});
          break;
        }
        try {
          send(*best, *it, c);
        } catch (...) {
          pool::Outcome o;
          o.error = std::current_exception();
          d.items.push_back({*it, c.index, std::move(o)});
          if (broken_) return;
        }
      }
      if (!sent) return;
    }
  }

  std::uint32_t function_id(const pool::Chunk& c) {
    const auto key = std::make_pair(c.runner, c.function);
    auto it = fn_ids_.find(key);
    if (it != fn_ids_.end()) return it->second;
    const auto id = static_cast<std::uint32_t>(fn_defs_.size());
    fn_defs_.push_back(wire::encode_define(id, pool::code_of(c.runner), pool::code_of(c.function)));
    fn_ids_.emplace(key, id);
    return id;
  }

  // Sends `size` bytes that `fill(char*)` writes, as message `tag`; one larger than the worker's
  // posted receive is announced first (wire.hpp). mu_ held.
  template <class Fill>
  void isend(int rank, int tag, std::size_t size, Fill fill) {
    if (size <= wire::kPostedBytes) return post_send(rank, tag, size, fill);
    post_send(rank, wire::kLarge, wire::kLargeHeader,
              [&](char* p) { wire::put_large(p, tag, size); });
    post_send(rank, wire::kLargeBody, size, fill);
  }
  // The send, from a buffer of spare_ (no allocation once the engine has run a while): a small
  // message is usually sent at once (eager) and its buffer goes back to spare_ now, else when
  // reap_sends() sees it complete.
  template <class Fill>
  void post_send(int rank, int tag, std::size_t size, const Fill& fill) {
    if (spare_.empty()) spare_.emplace_back();
    sends_.splice(sends_.end(), spare_, spare_.begin());
    Send& s = sends_.back();
    s.request = MPI_REQUEST_NULL;
    s.bytes.resize(size);
    fill(s.bytes.data());
    int rc = MPI_SUCCESS, done = 0;
    bool posted = false;
    {
      std::lock_guard g(g_mpi);
      rc = MPI_Isend(s.bytes.data(), static_cast<int>(s.bytes.size()), MPI_BYTE, rank, tag, comm_,
                     &s.request);
      posted = rc == MPI_SUCCESS;
      // A small message is usually sent at once (eager): its buffer is freed now.
      if (posted) rc = MPI_Test(&s.request, &done, MPI_STATUS_IGNORE);
    }
    if (rc != MPI_SUCCESS) {
      // Not posted: its buffer is spare again; else it stays with the engine (broken).
      if (!posted) sends_.splice(spare_.begin(), sends_, std::prev(sends_.end()));
      break_pool("MPI_Isend to rank " + std::to_string(rank) + ": " + mpi_error(rc));
      std::rethrow_exception(broken_);
    }
    if (done) recycle(std::prev(sends_.end()));
    sends_left_.store(sends_.size(), std::memory_order_relaxed);
  }
  // A completed send's buffer back to spare_ (a large one is freed). mu_ held.
  void recycle(std::list<Send>::iterator it) {
    if (it->bytes.capacity() > kKeepBuffer) std::string().swap(it->bytes);
    spare_.splice(spare_.begin(), sends_, it);
  }

  void send(Worker& w, const std::shared_ptr<pool::Job>& job, pool::Chunk& c) {
    const std::uint32_t fn = function_id(c);
    if (c.args.size() > static_cast<std::size_t>(INT_MAX) - 16)
      throw std::invalid_argument(
          "MPIPoolExecutor: a chunk's arguments exceed 2 GiB (use a smaller chunksize)");
    if (w.defined.size() <= fn) w.defined.resize(fn + 1);
    if (!w.defined[fn]) {
      const std::string& def = fn_defs_[fn];
      isend(w.rank, wire::kDefine, def.size(),
            [&](char* p) { std::memcpy(p, def.data(), def.size()); });
      w.defined[fn] = true;
    }
    const std::uint64_t id = next_id_++;
    isend(w.rank, wire::kTask, wire::kTaskHeader + c.args.size(), [&](char* p) {
      wire::put_task_header(p, id, fn);
      if (!c.args.empty()) std::memcpy(p + wire::kTaskHeader, c.args.data(), c.args.size());
    });
    w.inflight.push_back(InFlight{id, job, c.index});
    outstanding_.fetch_add(1, std::memory_order_relaxed);
    chunks_sent_.fetch_add(1, std::memory_order_relaxed);
  }

  // Completed sends free their buffers. mu_ held.
  void reap_sends() {
    for (auto it = sends_.begin(); it != sends_.end();) {
      int done = 0;
      int rc = MPI_SUCCESS;
      {
        std::lock_guard g(g_mpi);
        rc = MPI_Test(&it->request, &done, MPI_STATUS_IGNORE);
      }
      if (rc != MPI_SUCCESS) {
        break_pool("MPI_Test: " + mpi_error(rc));
        break;
      }
      if (!done) break;  // sends complete in order enough: look again later
      recycle(it++);
    }
    sends_left_.store(sends_.size(), std::memory_order_relaxed);
  }

  void break_pool(const std::string& why) {
    if (!broken_) broken_ = broken(why);
    is_broken_.store(true, std::memory_order_release);
  }

  void fail_all(std::exception_ptr e, Deliveries& d) {
    for (auto& w : workers_)
      for (auto& f : w.inflight)
        if (f.job) d.failures.emplace_back(std::exchange(f.job, nullptr), e);
    for (auto& j : jobs_) d.failures.emplace_back(j, e);
    jobs_.clear();
    jobs_left_.store(0, std::memory_order_relaxed);
  }

  bool anything_due() const {
    for (const auto& w : workers_)
      if (!w.inflight.empty()) return true;
    return !sends_.empty();
  }

  // A spawned worker that died does not end this process (Open MPI ends the spawned job only):
  // the executor breaks, as the local one does. mu_ held.
  void watch_workers() {
    for (const auto& w : workers_)
      if (w.pid != 0 && platform::process_dead(w.pid)) {
        break_pool("worker rank " + std::to_string(w.rank) + " (pid " + std::to_string(w.pid) +
                   ") died; the executor is broken");
        return;
      }
  }

  // A result from `source`. mu_ held.
  void take_result(int source, std::string_view bytes, Deliveries& d) {
    const std::size_t wi = static_cast<std::size_t>(source - first_);
    if (source < first_ || wi >= workers_.size()) {
      break_pool("a result from rank " + std::to_string(source) +
                 ", which is not a worker of this executor");
      return;
    }
    Worker& w = workers_[wi];
    wire::Result r;
    try {
      r = wire::decode_result(bytes);
    } catch (const std::exception& e) {
      break_pool(std::string("a corrupt message from rank ") + std::to_string(source) + ": " +
                 e.what());
      return;
    }
    auto it = std::find_if(w.inflight.begin(), w.inflight.end(),
                           [&](const InFlight& f) { return f.id == r.id; });
    if (it == w.inflight.end()) {
      break_pool("rank " + std::to_string(source) + " answered a task it was not given");
      return;
    }
    InFlight f = std::move(*it);
    w.inflight.erase(it);
    outstanding_.fetch_sub(1, std::memory_order_relaxed);
    avg_ns_ = avg_ns_ == 0 ? static_cast<double>(r.ns)
                           : 0.875 * avg_ns_ + 0.125 * static_cast<double>(r.ns);
    if (!f.job) return;  // terminated: dropped
    pool::Outcome o;
    o.ok = r.ok;
    o.ns = r.ns;
    if (r.ok) {
      o.bytes.assign(r.body);
    } else {
      o.error = mp::detail::decode_error(r.body);
    }
    d.items.push_back({std::move(f.job), f.index, std::move(o)});
  }

  // The receive for the next result (g_mpi held).
  int post_receive() {
    return MPI_Irecv(posted_bytes_.data(), static_cast<int>(posted_bytes_.size()), MPI_BYTE,
                     MPI_ANY_SOURCE, wire::kResult, comm_, &posted_);
  }
  // The workers are released or gone: the posted receive is cancelled (a cancel is local) so it
  // cannot take a message meant for the next executor on the same communicator. g_mpi held.
  void cancel_receive() noexcept {
    if (posted_ == MPI_REQUEST_NULL) return;
    MPI_Cancel(&posted_);
    int done = 0;
    for (int i = 0; i < 1000 && !done; ++i)
      if (MPI_Test(&posted_, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) break;
    if (!done && posted_ != MPI_REQUEST_NULL) MPI_Request_free(&posted_);  // (not seen to happen)
  }

  // Receives the results that have come (up to kPollBatch), delivers them and hands out more
  // work. Any thread, without mu_; never throws (an error breaks the executor). Returns whether
  // a result came.
  bool poll(std::string& buf, Deliveries& d) noexcept {
    bool got = false;
    if (is_broken_.load(std::memory_order_acquire)) return false;
    try {
      for (int i = 0; i < kPollBatch; ++i) {
        int flag = 0, rc = MPI_SUCCESS, count = 0;
        MPI_Status st;
        {
          std::lock_guard m(g_mpi);
          if (!open_) break;  // the workers were released (or the executor broke)
          // A result in the posted receive (wire.hpp): taken with its buffer, which `buf`'s
          // replaces (both stay kPostedBytes long: no allocation). The receive is posted again
          // by the next look, not now: a waiter's result is delivered first (a result that
          // comes meanwhile waits in MPI's queue for it).
          if (posted_ == MPI_REQUEST_NULL) rc = post_receive();
          if (rc == MPI_SUCCESS) rc = MPI_Test(&posted_, &flag, &st);
          if (rc == MPI_SUCCESS && flag) {
            MPI_Get_count(&st, MPI_BYTE, &count);
            buf.swap(posted_bytes_);
            posted_bytes_.resize(wire::kPostedBytes);
          } else if (rc == MPI_SUCCESS) {  // a result too large for it
            MPI_Message message;
            rc = MPI_Improbe(MPI_ANY_SOURCE, wire::kResultLarge, comm_, &flag, &message, &st);
            if (rc == MPI_SUCCESS && flag) {
              MPI_Get_count(&st, MPI_BYTE, &count);
              buf.resize(static_cast<std::size_t>(count));
              rc = MPI_Mrecv(buf.data(), count, MPI_BYTE, &message, MPI_STATUS_IGNORE);
            }
          }
        }
        if (rc != MPI_SUCCESS) {
          std::lock_guard g(mu_);
          break_pool("receiving a result: " + mpi_error(rc));
          break;
        }
        if (!flag) break;
        got = true;
        std::lock_guard g(mu_);
        take_result(st.MPI_SOURCE, std::string_view(buf.data(), static_cast<std::size_t>(count)),
                    d);
        if (outstanding_.load(std::memory_order_relaxed) == 0) break;  // no other result is due
      }
      d.run();  // first: a delivery may let a job hand out more (its first chunk's time is in)
      // (A job added meanwhile was dispatched by its submit().)
      if ((got && jobs_left_.load(std::memory_order_relaxed) != 0) ||
          sends_left_.load(std::memory_order_relaxed) != 0) {
        std::lock_guard g(mu_);
        if (!sends_.empty()) reap_sends();
        if (got) dispatch(d);
        jobs_left_.store(jobs_.size(), std::memory_order_relaxed);
      }
    } catch (...) {  // out of memory
      std::lock_guard g(mu_);
      if (!broken_) broken_ = std::current_exception();
      is_broken_.store(true, std::memory_order_release);
    }
    d.run();
    if (is_broken_.load(std::memory_order_acquire))
      wake(Wake::always);  // the engine thread fails the jobs
    return got;
  }

  // The engine thread. It polls only while results are due and no thread awaits them.
  void loop() {
    std::string buf;
    Deliveries d;
    Backoff backoff;
    auto active = Clock::now();  // when it last had work
    for (;;) {
      {
        std::unique_lock g(mu_);
        if (broken_) break;
        const bool due = anything_due();
        if (!due && (state_ == RunState::terminate || (state_ == RunState::close && jobs_.empty())))
          break;
        const auto now = Clock::now();
        if (due) active = now;
        if (due && now - last_watch_ >= kWatchEvery) {
          last_watch_ = now;
          watch_workers();
          if (broken_) break;
        }
        if (due && state_ == RunState::run && awaiters_.load(std::memory_order_seq_cst) != 0) {
          // The awaiting threads receive the results. Woken when the last stops with results
          // due (awaiting()); a submit made meanwhile that no thread awaits is seen within kMaxNap.
          cv_.wait_for(g, kMaxNap, [&] {
            return awaiters_.load(std::memory_order_seq_cst) == 0 || state_ != RunState::run ||
                   broken_;
          });
          backoff.reset();
          continue;
        }
        if (!due) {
          // Nothing on the ranks: nap (a submit soon after costs no wake-up), then sleep until a
          // submit or close wakes it.
          auto ready = [&] { return anything_due() || state_ != RunState::run || broken_; };
          if (now - active < kIdleNaps) {
            idle_.store(kNapping, std::memory_order_release);
            cv_.wait_for(g, kMaxNap, ready);
          } else {
            idle_.store(kSleeping, std::memory_order_release);
            cv_.wait(g, ready);
          }
          idle_.store(kPolling, std::memory_order_release);
          backoff.reset();
          continue;
        }
      }
      if (poll(buf, d)) {
        backoff.reset();
      } else {
        backoff.pause();
      }
    }
    // Broken: every job fails; else the workers are released (or ended, when spawned).
    std::unique_lock g(mu_);
    if (broken_) {  // no release: a disconnect would wait for a dead rank; the comm is left as is
      g_broken.store(true);
      fail_all(broken_, d);
      g.unlock();
      {
        std::lock_guard m(g_mpi);
        open_ = false;
        cancel_receive();
      }
      released_(true);
      d.run();
      return;
    }
    g.unlock();
    {
      std::lock_guard m(g_mpi);
      open_ = false;
      cancel_receive();
      for (const auto& w : workers_) MPI_Send(nullptr, 0, MPI_BYTE, w.rank, wire::kRelease, comm_);
    }
    released_(false);
  }

  MPI_Comm comm_;
  std::function<void(bool)> released_;
  int first_ = 0;
  mutable std::mutex mu_;
  std::mutex join_mu_;
  std::condition_variable cv_;
  RunState state_ = RunState::run;
  std::exception_ptr broken_;
  std::deque<std::shared_ptr<pool::Job>> jobs_;
  std::vector<Worker> workers_;
  std::map<std::pair<mp::detail::AnyFunction, mp::detail::AnyFunction>, std::uint32_t> fn_ids_;
  std::vector<std::string> fn_defs_;
  std::list<Send> sends_;  // posted, in order
  std::list<Send> spare_;  // buffers for the next sends
  std::uint64_t next_id_ = 1;
  double avg_ns_ = 0;
  Clock::time_point last_watch_ = Clock::now();
  std::atomic<std::uint64_t> outstanding_{0};
  std::atomic<std::uint64_t> chunks_sent_{0};
  // The engine thread's state when nothing is on the ranks (written under mu_).
  static constexpr int kPolling = 0, kNapping = 1, kSleeping = 2;
  std::atomic<int> idle_{kPolling};
  std::atomic<int> awaiters_{0};            // threads in awaiting(true)
  std::atomic<std::size_t> sends_left_{0};  // sends_.size(), read without mu_
  std::atomic<std::size_t> jobs_left_{0};   // jobs_.size() after the last dispatch
  std::atomic<bool> is_broken_{false};      // broken_ is set
  bool open_ = true;  // (g_mpi) the workers are not released: results may be polled
  MPI_Request posted_ = MPI_REQUEST_NULL;  // (g_mpi) the receive of the next result
  std::string posted_bytes_;               // (g_mpi) its buffer
  std::thread thread_;
};

SpawnedGroup spawn_group(int n) {
  const std::string exe = platform::executable_display_path();
  std::vector<char*> argv;
  for (auto& a : g_args) argv.push_back(a.data());
  argv.push_back(nullptr);
  MPI_Comm inter = MPI_COMM_NULL;
  std::vector<int> errcodes(static_cast<std::size_t>(n));
  std::lock_guard g(g_mpi);
  // MPI_Comm_spawn has no timeout: if it has not returned within kSpawnTimeout, the process ends
  // with a message (exit code 1) rather than hang.
  struct Watchdog {
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
    std::thread t;
    Watchdog()
        : t([this] {
            std::unique_lock l(m);
            if (!cv.wait_for(l, kSpawnTimeout, [this] { return done; })) {
              std::fprintf(
                  stderr,
                  "mp::mpi: MPI_Comm_spawn did not return within %lld s; ending the process\n",
                  static_cast<long long>(
                      std::chrono::duration_cast<std::chrono::seconds>(kSpawnTimeout).count()));
              std::_Exit(1);
            }
          }) {}
    ~Watchdog() {
      {
        std::lock_guard l(m);
        done = true;
      }
      cv.notify_all();
      t.join();
    }
  };
  std::optional<Watchdog> watchdog(std::in_place);
  const int rc = MPI_Comm_spawn(exe.c_str(), argv.data(), n, MPI_INFO_NULL, 0, MPI_COMM_SELF,
                                &inter, errcodes.data());
  if (rc != MPI_SUCCESS)
    throw std::runtime_error("MPIPoolExecutor: MPI_Comm_spawn of " + std::to_string(n) +
                             " workers failed: " + mpi_error(rc));
  watchdog.reset();
  MPI_Comm_set_errhandler(inter, MPI_ERRORS_RETURN);
  // Each worker says who it is; those on this host are watched (see watch_workers).
  std::vector<int> pids(static_cast<std::size_t>(n), 0);
  char name[MPI_MAX_PROCESSOR_NAME];
  int len = 0;
  MPI_Get_processor_name(name, &len);
  const std::string_view here(name, static_cast<std::size_t>(len));
  const auto deadline = Clock::now() + kHelloTimeout;
  std::string buf;
  for (int got = 0; got < n;) {
    int flag = 0;
    MPI_Status st;
    check(MPI_Iprobe(MPI_ANY_SOURCE, wire::kHello, inter, &flag, &st), "MPI_Iprobe");
    if (!flag) {
      if (Clock::now() > deadline)
        throw std::runtime_error("MPIPoolExecutor: the spawned workers did not start within 60 s");
      std::this_thread::sleep_for(100us);
      continue;
    }
    int count = 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    buf.resize(static_cast<std::size_t>(count));
    check(MPI_Recv(buf.data(), count, MPI_BYTE, st.MPI_SOURCE, wire::kHello, inter,
                   MPI_STATUS_IGNORE),
          "MPI_Recv");
    const wire::Hello h = wire::decode_hello(buf);
    if (st.MPI_SOURCE >= 0 && st.MPI_SOURCE < n && h.host == here)
      pids[static_cast<std::size_t>(st.MPI_SOURCE)] = h.pid;
    ++got;
  }
  return SpawnedGroup{inter, n, pids, true};
}

std::shared_ptr<pool::Engine> spawn_engine(int n) {
  std::lock_guard s(g_spawn_mu);
  if (g_spawned.comm != MPI_COMM_NULL && !g_spawned.taken && g_spawned.n != n) {
    std::lock_guard g(g_mpi);
    end_group(g_spawned);
  }
  if (g_spawned.comm == MPI_COMM_NULL) {
    g_spawned = spawn_group(n);
  } else if (!g_spawned.taken) {
    g_spawned.taken = true;
  } else {  // another executor holds the group: a group of this executor's own
    SpawnedGroup own = spawn_group(n);
    return std::make_shared<MpiEngine>(
        own.comm, 0, n,
        [comm = own.comm, n](bool broken) mutable {
          if (broken) return;  // a disconnect would wait for a dead rank
          SpawnedGroup g{comm, n, {}, false};
          std::lock_guard m(g_mpi);
          end_group(g);
        },
        own.pids);
  }
  const MPI_Comm comm = g_spawned.comm;
  return std::make_shared<MpiEngine>(
      comm, 0, n,
      [comm](bool broken) {
        std::lock_guard l(g_spawn_mu);
        if (g_spawned.comm != comm) return;
        if (broken) {
          g_spawned = SpawnedGroup{};  // left as is (see the broken path)
        } else {
          g_spawned.taken = false;
        }
      },
      g_spawned.pids);
}

}  // namespace

void init(int& argc, char**& argv) {
  if (g_ready) return;
  int inited = 0, provided = 0;
  MPI_Initialized(&inited);
  if (!inited) {
    check(MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided), "MPI_Init_thread");
  } else {
    MPI_Query_thread(&provided);
  }
  if (provided < MPI_THREAD_SERIALIZED)
    throw std::runtime_error(
        "mp::mpi::init: the MPI library does not provide MPI_THREAD_SERIALIZED");
  MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
  g_args.assign(argv + (argc > 0 ? 1 : 0), argv + argc);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  MPI_Comm parent = MPI_COMM_NULL;
  MPI_Comm_get_parent(&parent);
  if (parent !=
      MPI_COMM_NULL) {  // spawned by an MPIPoolExecutor: rank 0 of its group is the client
    int code = 0;
    try {
      const std::string hello = wire::encode_hello(platform::current_pid(), processor_name());
      check(
          MPI_Send(hello.data(), static_cast<int>(hello.size()), MPI_BYTE, 0, wire::kHello, parent),
          "MPI_Send");
      serve(parent, 0);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "mp::mpi worker: %s\n", e.what());
      code = 1;
    }
    MPI_Comm_disconnect(&parent);
    MPI_Finalize();
    std::exit(code);
  }
  check(MPI_Comm_dup(MPI_COMM_WORLD, &g_world), "MPI_Comm_dup");
  MPI_Comm_set_errhandler(g_world, MPI_ERRORS_RETURN);
  if (g_rank != 0) {
    int code = 0;
    try {
      serve(g_world, 0);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "mp::mpi worker %d: %s\n", g_rank, e.what());
      code = 1;
    }
    MPI_Comm_free(&g_world);
    MPI_Finalize();
    std::exit(code);
  }
  g_ready = true;
  std::atexit(&finish_root);
}

int world_rank() { return g_rank; }
int world_size() { return g_size; }
std::string processor_name() {
  char name[MPI_MAX_PROCESSOR_NAME];
  int len = 0;
  std::lock_guard g(g_mpi);
  MPI_Get_processor_name(name, &len);
  return std::string(name, static_cast<std::size_t>(len));
}

namespace detail {

std::shared_ptr<mp::detail::pool::Engine> make_engine(const MPIPoolExecutorOptions& options) {
  if (!g_ready)
    throw std::logic_error("MPIPoolExecutor: call mp::mpi::init(argc, argv) first in main");
  if (options.max_workers && *options.max_workers < 1)
    throw std::invalid_argument("max_workers must be greater than 0");
  if (g_size == 1) return spawn_engine(options.max_workers.value_or(1));
  const int available = g_size - 1;
  const int n = options.max_workers.value_or(available);
  if (n > available)
    throw std::invalid_argument("max_workers (" + std::to_string(n) + ") is more than the " +
                                std::to_string(available) + " worker ranks of this MPI job");
  if (g_world_taken.exchange(true))
    throw std::runtime_error(
        "MPIPoolExecutor: the worker ranks are in use by another MPIPoolExecutor (shut it down "
        "first)");
  try {
    return std::make_shared<MpiEngine>(g_world, 1, n, [](bool) { g_world_taken.store(false); });
  } catch (...) {
    g_world_taken.store(false);
    throw;
  }
}

}  // namespace detail
}  // namespace mp::mpi
