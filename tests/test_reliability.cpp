// Process-level guarantees (docs/RELIABILITY.md): no orphans, zombies reaped, signals to the right
// process, EINTR never surfaces, 500-process stress, nothing left behind by crashed programs.
//
// This binary makes itself a child subreaper: the descendants a killed process leaves behind are
// re-parented to the test, which can then watch them end and reap them (and the fixture's
// leftover-child check sees any survivor). Programs for the leak test are this same binary run
// with a DISABLED_Program.* test selected (as GoogleTest death tests do).
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include "mp/heap.hpp"
#include "mp/managers.hpp"
#include "mp/queues.hpp"
#include "mp/synchronize.hpp"
#include "barrier_stress.hpp"
#include "mp_test.hpp"
#include "platform/handle.hpp"
#include "platform/io.hpp"

extern char** environ;

using namespace mp_test;
namespace fs = std::filesystem;

namespace {

// ---- helpers (test side: plain POSIX)

// A pipe whose ends are inherited by forked and spawned children (no close-on-exec).
struct InheritedPipe {
  int r = -1, w = -1;
  InheritedPipe() {
    int fds[2];
    if (::pipe(fds) != 0) throw std::runtime_error("pipe");
    r = fds[0];
    w = fds[1];
  }
  ~InheritedPipe() {
    close_write();
    if (r >= 0) ::close(r);
  }
  void close_write() {
    if (w >= 0) ::close(w);
    w = -1;
  }
};

void write_int(int fd, int v) {
  // Up to PIPE_BUF bytes are written atomically, so concurrent writers never interleave.
  while (::write(fd, &v, sizeof v) < 0 && errno == EINTR) {
  }
}

// Reads one int, waiting at most `timeout`; nullopt on timeout or EOF.
std::optional<int> read_int(int fd, std::chrono::milliseconds timeout) {
  int v = 0;
  std::size_t got = 0;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (got < sizeof v) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return std::nullopt;
    const ssize_t n = ::read(fd, reinterpret_cast<char*>(&v) + got, sizeof v - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return std::nullopt;
    got += static_cast<std::size_t>(n);
  }
  return v;
}

int pidfd_open(int pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

// Waits up to `timeout` for process `pid` to end; returns how long it took, nullopt on timeout.
std::optional<std::chrono::milliseconds> wait_end(int pidfd, std::chrono::milliseconds timeout) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto deadline = t0 + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{pidfd, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(std::max<long>(left.count(), 0)));
    if (r > 0)
      return std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now() - t0);
    if (r == 0 || errno != EINTR) return std::nullopt;
  }
}

int zombie_children() {
  int n = 0;
  for (auto [pid, state] : children_with_state()) n += state == 'Z';
  return n;
}

// Waits for every re-parented orphan (a direct child not known to mp) to end within `timeout`
// and reaps it. Returns the pids that did not end in time (they are killed and reaped).
std::vector<int> reap_orphans(std::chrono::milliseconds timeout) {
  std::set<int> mine;
  for (mp::Process& p : mp::active_children())
    if (p.pid()) mine.insert(*p.pid());
  if (const auto server = mp::forkserver::server_pid())
    mine.insert(*server);  // lives as long as we do
  std::vector<int> late;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  // Again until none is left: an orphan's own children are re-parented to us only when it ends
  // (e.g. a killed owner's forkserver, which ends after its owner, and the server's children).
  for (bool found = true; found;) {
    found = false;
    for (auto [pid, state] : children_with_state()) {
      if (mine.count(pid)) continue;
      const int fd = pidfd_open(pid);
      if (fd < 0) continue;
      found = true;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (!wait_end(fd, std::max(left, std::chrono::milliseconds(0)))) {
        late.push_back(pid);
        ::kill(pid, SIGKILL);
      }
      ::close(fd);
      ::waitpid(pid, nullptr, 0);
    }
  }
  return late;
}

// ---- targets (plain functions: usable under spawn)

void noop() {}
void exit_with(int code) { std::exit(code); }
void sleep_forever() {
  for (;;) ::pause();
}
void report_index(int fd, int i) { write_int(fd, i); }

// An owner that starts a daemonic child from a short-lived thread, checks that the daemon outlives
// that thread, reports the daemon's pid, then waits to be killed.
void owner_of_daemon(int fd, std::string method) {
  std::optional<mp::Process> daemon;
  std::thread([&] {
    daemon.emplace(mp::get_context(method), sleep_forever);
    daemon->set_daemon(true);
    daemon->start();
  }).join();
  // With PR_SET_PDEATHSIG the daemon would be gone already (its starting thread has ended).
  daemon->join(std::chrono::milliseconds(300));
  write_int(fd, daemon->is_alive() ? *daemon->pid() : -1);
  sleep_forever();
}

// A non-daemonic child that reports whether it saw its parent die.
void report_parent_death(int fd) {
  auto parent = mp::parent_process();
  if (!parent) std::exit(2);
  write_int(fd, parent->is_alive() ? 1 : 0);  // 1: alive at first
  parent->join(kTimeout);
  write_int(fd, parent->is_alive() ? 1 : 0);  // 0: seen dead
}

void owner_of_watcher(int fd, std::string method) {
  mp::Process child(mp::get_context(method), report_parent_death, fd);
  child.start();
  sleep_forever();
}

// ---- fixture

class ReliabilityTest : public StartMethodTest {
 public:
  static void SetUpTestSuite() { ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0); }
  void TearDown() override {
    const auto late = reap_orphans(std::chrono::milliseconds(5000));
    EXPECT_TRUE(late.empty()) << late.size() << " orphaned descendants did not end";
    StartMethodTest::TearDown();
  }
};

}  // namespace

// Guarantee: a daemonic child ends within 1 s of its owner's SIGKILL, even when it was started
// from a thread that has ended since (CPython: the daemon survives its killed parent).
TEST_P(ReliabilityTest, DaemonEndsWithinOneSecondOfOwnerSigkill) {
  InheritedPipe pipe;
  mp::Process owner(ctx(), owner_of_daemon, pipe.w, GetParam());
  owner.start();
  const auto daemon_pid = read_int(pipe.r, kTimeout);
  ASSERT_TRUE(daemon_pid);
  ASSERT_GT(*daemon_pid, 0) << "the daemon died with the thread that started it";
  const int fd = pidfd_open(*daemon_pid);
  ASSERT_GE(fd, 0);
  owner.kill();
  join_or_fail(owner);
  EXPECT_EQ(owner.exitcode(), -SIGKILL);
  const auto took = wait_end(fd, std::chrono::milliseconds(10000));
  ::close(fd);
  ASSERT_TRUE(took) << "the daemon outlived its killed owner";
  RecordProperty("daemon_end_ms", static_cast<int>(took->count()));
  EXPECT_LE(took->count(), 1000) << "the daemon took " << took->count() << " ms to end";
  ::waitpid(*daemon_pid, nullptr, 0);  // re-parented to us (subreaper)
}

// Guarantee: a non-daemonic child sees parent_process()->is_alive() turn false when its parent
// dies (it is not killed: like CPython, it decides what to do).
TEST_P(ReliabilityTest, ChildSeesParentDeath) {
  InheritedPipe pipe;
  mp::Process owner(ctx(), owner_of_watcher, pipe.w, GetParam());
  owner.start();
  const auto alive_before = read_int(pipe.r, kTimeout);
  ASSERT_TRUE(alive_before);
  EXPECT_EQ(*alive_before, 1);
  owner.kill();
  join_or_fail(owner);
  const auto alive_after = read_int(pipe.r, kTimeout);
  ASSERT_TRUE(alive_after) << "the child did not notice its parent's death";
  EXPECT_EQ(*alive_after, 0);
}

// Guarantee: ended children are reaped by join(), is_alive(), exitcode() and active_children(),
// also when their Process objects are gone (no zombie accumulates).
TEST_P(ReliabilityTest, ZombiesAreReaped) {
  InheritedPipe pipe;
  for (int i = 0; i < 20; ++i) {
    mp::Process p(ctx(), report_index, pipe.w, i);
    p.start();
  }  // Process objects dropped without join
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(read_int(pipe.r, kTimeout));
  for (mp::Process& p : mp::active_children()) join_or_fail(p);
  EXPECT_TRUE(mp::active_children().empty());
  EXPECT_EQ(zombie_children(), 0);

  mp::Process q(ctx(), noop);
  q.start();
  join_or_fail(q);
  EXPECT_EQ(zombie_children(), 0);
}

namespace {
std::atomic<int> g_interruptions{0};
void count_signal(int) { g_interruptions.fetch_add(1, std::memory_order_relaxed); }
}  // namespace

// Guarantee: EINTR never surfaces from the foundation's blocking calls: start (fork and spawn, with
// the bootstrap wait), join, join(timeout), is_alive, while a signal handler installed without
// SA_RESTART interrupts the calling thread about every 200 µs.
TEST_P(ReliabilityTest, SignalsDoNotSurfaceAsEintr) {
  struct sigaction sa {
  }, old{};
  sa.sa_handler = count_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: every blocking syscall returns EINTR
  ASSERT_EQ(::sigaction(SIGUSR1, &sa, &old), 0);
  g_interruptions = 0;
  const pthread_t target = ::pthread_self();
  std::atomic<bool> stop{false};
  std::thread spammer([&] {
    while (!stop.load()) {
      ::pthread_kill(target, SIGUSR1);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  try {
    for (int round = 0; round < 5; ++round) {
      mp::Process quick(ctx(), exit_with, 3);
      quick.start();
      join_or_fail(quick);
      EXPECT_EQ(quick.exitcode(), 3);
      mp::Process slow(ctx(), sleep_forever);
      slow.start();
      slow.join(std::chrono::milliseconds(50));
      EXPECT_FALSE(slow.exitcode());
      EXPECT_TRUE(slow.is_alive());
      slow.terminate();
      join_or_fail(slow);
      EXPECT_EQ(slow.exitcode(), -SIGTERM);
    }
  } catch (const std::exception& e) {
    ADD_FAILURE() << "a blocking call failed under signals: " << e.what();
  }
  stop = true;
  spammer.join();
  ::sigaction(SIGUSR1, &old, nullptr);
  EXPECT_GT(g_interruptions.load(), 0);
}

// Stress: 500 processes started and joined, with exact totals from exit codes and from a pipe.
TEST_P(ReliabilityTest, FiveHundredProcesses) {
  constexpr int kCount = 500;
  InheritedPipe pipe;
  std::vector<mp::Process> ps;
  ps.reserve(kCount);
  for (int i = 0; i < kCount; ++i) ps.emplace_back(ctx(), report_index, pipe.w, i);
  std::vector<int> seen(kCount, 0);
  long sum = 0;
  int received = 0;
  // Start in waves and drain the pipe as we go, so at most ~100 children run at once.
  for (int i = 0; i < kCount; ++i) {
    ps[i].start();
    if (i >= 100) join_or_fail(ps[i - 100]);
  }
  for (int i = std::max(0, kCount - 100); i < kCount; ++i) join_or_fail(ps[i]);
  pipe.close_write();
  while (received < kCount) {
    const auto v = read_int(pipe.r, kTimeout);
    if (!v) break;
    ASSERT_GE(*v, 0);
    ASSERT_LT(*v, kCount);
    ++seen[*v];
    sum += *v;
    ++received;
  }
  EXPECT_EQ(received, kCount);
  EXPECT_EQ(sum, static_cast<long>(kCount) * (kCount - 1) / 2);
  for (int i = 0; i < kCount; ++i) EXPECT_EQ(seen[i], 1) << "index " << i;
  int exit_sum = 0;
  for (auto& p : ps) exit_sum += p.exitcode().value_or(100);
  EXPECT_EQ(exit_sum, 0);
  EXPECT_EQ(zombie_children(), 0);
}

// Stress, synchronized: 500 live processes meet at one Barrier (501 parties with the parent), each
// puts its index before and its barrier slot after into one Queue; exact totals come back.
TEST_P(ReliabilityTest, FiveHundredProcessesThroughBarrierAndQueue) {
  processes_through_barrier_and_queue(ctx(), 500);
  EXPECT_EQ(zombie_children(), 0);
}

namespace {

// In the child: the busy queue and the manager (a proxy call and a managed queue) still work.
void use_busy_queue_and_manager(mp::Queue<int> queue, mp::managers::ValueProxy<int> value,
                                mp::managers::QueueProxy<int> results, int index) {
  queue.put(-1 - index);
  (void)queue.get(true, kTimeout);  // Empty (an exception: exit code 1) if the queue is stuck
  (void)value.get();
  results.put(index, true, kTimeout);
}

}  // namespace

// Fork safety: children are started (forked, under the fork method) while two threads of the
// parent keep a Queue busy (put/get: its locks are taken and released all the time) and a third
// keeps calling a manager's proxy; each child uses the same queue and manager without deadlock.
TEST_P(ReliabilityTest, StartWhileQueueAndManagerAreBusy) {
  constexpr int kChildren = 8;
  mp::SyncManager manager = mp::Manager(ctx());
  auto value = manager.Value<int>(0);
  auto results = manager.Queue<int>();
  mp::Queue<int> queue;
  std::atomic<bool> stop{false};
  std::atomic<long> puts{0}, gets{0}, calls{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t)
    threads.emplace_back([&] {
      for (int i = 0; !stop; ++i) {
        queue.put(i);
        ++puts;
        try {
          (void)queue.get(true, kTimeout);
          ++gets;
        } catch (const mp::Empty&) {
          ADD_FAILURE() << "the queue got stuck in the parent";
          return;
        }
      }
    });
  threads.emplace_back([&, v = value]() mutable {
    for (int i = 0; !stop; ++i) {
      v.set(i);
      ++calls;
    }
  });
  std::vector<mp::Process> ps;
  for (int i = 0; i < kChildren; ++i) {
    // Start each child while the threads are known to be mid-use.
    const long seen = puts + calls;
    while (puts + calls < seen + 50) std::this_thread::yield();
    ps.emplace_back(ctx(), use_busy_queue_and_manager, queue, value, results, i);
    ps.back().start();
  }
  for (auto& p : ps) join_or_fail(p);
  stop = true;
  for (auto& t : threads) t.join();
  for (auto& p : ps) EXPECT_EQ(p.exitcode(), 0);
  std::set<int> got;
  for (int i = 0; i < kChildren; ++i) got.insert(results.get(true, kTimeout));
  EXPECT_EQ(got.size(), static_cast<std::size_t>(kChildren));
  // Every put (the threads' and the children's) was matched by one get: nothing lost or torn.
  EXPECT_EQ(puts.load(), gets.load());
  EXPECT_TRUE(queue.empty());
  EXPECT_GT(calls.load(), 0);
}

MP_INSTANTIATE_START_METHODS(ReliabilityTest);

// ---- leak test: whole programs that end in every way, then nothing of theirs may remain.

namespace {

void use_block(mp::heap::SharedBlock block, int value) {
  static_cast<std::atomic<int>*>(block.data())->fetch_add(value);
}
void use_block_then_throw(mp::heap::SharedBlock block) {
  use_block(block, 1);
  throw std::runtime_error("planned failure");
}
void use_block_forever(mp::heap::SharedBlock block) {
  use_block(block, 1);
  sleep_forever();
}
// A well-behaved non-daemonic worker: ends when its parent does.
void use_block_until_parent_ends(mp::heap::SharedBlock block) {
  use_block(block, 1);
  mp::parent_process()->join(kTimeout);
}

int ready_fd() {
  const char* s = std::getenv("MP_REL_READY_FD");
  return s ? std::atoi(s) : -1;
}

// Every shared object kind of a program: shared memory, a lock, a queue and a manager (whose server
// is a daemonic child with a socket file under TMPDIR) with a proxy.
struct Kit {
  mp::heap::SharedBlock block{4096};
  mp::Lock lock;
  mp::Queue<int> queue;
  mp::SyncManager manager = mp::Manager();
  mp::managers::ValueProxy<int> value = manager.Value<int>(0);
};

// A child using all of them; `forever`: then sleeps until it is ended.
void use_kit(mp::heap::SharedBlock block, mp::Lock lock, mp::Queue<int> queue,
             mp::managers::ValueProxy<int> value, bool forever) {
  {
    std::lock_guard guard(lock);
    use_block(block, 1);
    value.set(value.get() + 1);
  }
  queue.put(1);
  if (forever) sleep_forever();
}
// The same, holding the lock when it is ended.
void use_kit_holding_lock(mp::heap::SharedBlock block, mp::Lock lock, mp::Queue<int> queue,
                          mp::managers::ValueProxy<int> value) {
  use_kit(block, lock, queue, value, false);
  lock.acquire();
  sleep_forever();
}

// Starts the program's children: a daemon, one of each way for a child to end, and (for programs
// that die) a non-daemonic worker that runs until its parent ends; then children using the lock,
// the queue and the manager (a daemon, one that ends, one killed holding the lock).
void start_family(Kit& kit, std::vector<mp::Process>& kids, bool worker) {
  mp::heap::SharedBlock& block = kit.block;
  // No core files from the programs that abort.
  rlimit no_core{0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core);
  kids.emplace_back(use_block_forever, block);
  kids.back().set_daemon(true);
  kids.emplace_back(worker ? use_block_until_parent_ends : use_block_then_throw, block);
  kids.emplace_back(use_block, block, 1);
  kids.emplace_back(use_block_then_throw, block);
  kids.emplace_back(use_block_forever, block);  // terminated
  kids.emplace_back(use_block_forever, block);  // killed
  for (auto& k : kids) k.start();
  kids[2].join(kTimeout);
  kids[3].join(kTimeout);
  kids[4].terminate();
  kids[5].kill();
  kids[4].join(kTimeout);
  kids[5].join(kTimeout);
  kids.emplace_back(use_kit, kit.block, kit.lock, kit.queue, kit.value, true);
  kids.back().set_daemon(true);
  kids.back().start();
  kids.emplace_back(use_kit, kit.block, kit.lock, kit.queue, kit.value, false);
  kids.back().start();
  kids.back().join(kTimeout);
  // Both have used the kit (and left the lock) before the next child takes the lock for good.
  for (int i = 0; i < 2; ++i) (void)kit.queue.get(true, kTimeout);
  // Daemonic, so that a failure below cannot leave the program joining it forever at exit.
  kids.emplace_back(use_kit_holding_lock, kit.block, kit.lock, kit.queue, kit.value);
  kids.back().set_daemon(true);
  kids.back().start();
  (void)kit.queue.get(true, kTimeout);
  kids.back().kill();
  kids.back().join(kTimeout);
}

void report_ready() {
  if (const int fd = ready_fd(); fd >= 0) write_int(fd, ::getpid());
}

}  // namespace

// The programs (run only by the leak test, through --gtest_also_run_disabled_tests).
TEST(DISABLED_Program, NormalExit) {
  Kit kit;
  std::vector<mp::Process> kids;
  start_family(kit, kids, false);
  report_ready();
  // Returning ends the program normally: the exit function terminates the daemon.
}

TEST(DISABLED_Program, UncaughtException) {
  Kit kit;
  std::vector<mp::Process> kids;
  start_family(kit, kids, true);
  report_ready();
  std::thread([] { throw std::runtime_error("uncaught"); }).join();  // std::terminate: abort
}

TEST(DISABLED_Program, KilledWhileChildrenRun) {
  Kit kit;
  std::vector<mp::Process> kids;
  start_family(kit, kids, true);
  report_ready();
  sleep_forever();  // the test SIGKILLs us
}

TEST(DISABLED_Program, TerminatedWhileChildrenRun) {
  Kit kit;
  std::vector<mp::Process> kids;
  start_family(kit, kids, true);
  report_ready();
  sleep_forever();  // the test SIGTERMs us
}

namespace {

std::set<std::string> list_dir(const fs::path& dir) {
  std::set<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) out.insert(e.path().filename().string());
  return out;
}

// Unix sockets bound to a path under `dir` (from /proc/net/unix).
int sockets_under(const std::string& dir) {
  std::ifstream f("/proc/net/unix");
  std::string line;
  int n = 0;
  while (std::getline(f, line))
    if (line.find(dir) != std::string::npos) ++n;
  return n;
}

struct LeakCase {
  const char* program;
  int kill_signal;  // 0: let it end by itself
};

// Runs this binary as the program DISABLED_Program.<program> with a private TMPDIR, the start method
// and the ready pipe's write end; `own_group`: in a new process group that it leads.
pid_t spawn_program(const std::string& program, const fs::path& tmp, const std::string& method,
                    int ready_w, bool own_group, const std::vector<std::string>& extra_env = {}) {
  const std::string exe = fs::read_symlink("/proc/self/exe");
  std::vector<std::string> args{exe, "--gtest_filter=DISABLED_Program." + program,
                                "--gtest_also_run_disabled_tests"};
  std::vector<std::string> envs;
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, "TMPDIR=", 7) && std::strncmp(*e, "MP_START_METHOD=", 16) &&
        std::strncmp(*e, "GTEST_", 6))
      envs.emplace_back(*e);
  envs.push_back("TMPDIR=" + tmp.string());
  envs.push_back("MP_START_METHOD=" + method);
  envs.push_back("MP_REL_READY_FD=" + std::to_string(ready_w));
  envs.insert(envs.end(), extra_env.begin(), extra_env.end());
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : envs) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  if (own_group) {
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
  }
  pid_t root = 0;
  const int rc = ::posix_spawn(&root, exe.c_str(), &fa, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  return rc == 0 ? root : -1;
}

// Waits (bounded) for the program `root` to end and reaps it; its wait status.
int wait_program(pid_t root) {
  const int fd = pidfd_open(root);
  EXPECT_GE(fd, 0);
  EXPECT_TRUE(wait_end(fd, std::chrono::milliseconds(30000))) << "the program did not end";
  ::close(fd);
  int status = 0;
  ::waitpid(root, &status, 0);
  return status;
}

class LeakTest : public ReliabilityTest {};

}  // namespace

// Guarantee: whatever way a program ends, nothing of it remains: no process, no /dev/shm entry,
// no temporary file or socket (shared memory is anonymous: the OS frees it with the last process).
TEST_P(LeakTest, ProgramsLeaveNothingBehind) {
  const fs::path tmp = fs::temp_directory_path() / ("mp-leaktest-" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  const auto shm_before = list_dir("/dev/shm");
  const LeakCase cases[] = {{"NormalExit", 0},
                            {"UncaughtException", 0},
                            {"KilledWhileChildrenRun", SIGKILL},
                            {"TerminatedWhileChildrenRun", SIGTERM}};
  for (const LeakCase& c : cases) {
    SCOPED_TRACE(c.program);
    InheritedPipe ready;
    const pid_t root = spawn_program(c.program, tmp, GetParam(), ready.w, false);
    ASSERT_GT(root, 0);
    ready.close_write();
    const auto reported = read_int(ready.r, kTimeout);
    EXPECT_EQ(reported, root) << "the program did not get ready";
    if (c.kill_signal) ::kill(root, c.kill_signal);
    wait_program(root);
    // Its descendants re-parent to us: all must end by themselves, daemons within 1 s.
    const auto late = reap_orphans(std::chrono::milliseconds(5000));
    EXPECT_TRUE(late.empty()) << late.size() << " processes of the program did not end";
    EXPECT_TRUE(live_children().empty());
  }
  EXPECT_TRUE(list_dir(tmp).empty()) << "temporary files were left in " << tmp;
  EXPECT_EQ(sockets_under(tmp.string()), 0);
  // Other programs may create /dev/shm entries meanwhile: a leak is an entry that appeared during
  // the run and is still there at both later looks.
  std::set<std::string> appeared;
  for (const auto& n : list_dir("/dev/shm"))
    if (!shm_before.count(n) && (n.rfind("mp", 0) == 0 || n.find("sem.mp") == 0))
      appeared.insert(n);
  reap_orphans(std::chrono::milliseconds(100));
  std::set<std::string> still;
  const auto shm_now = list_dir("/dev/shm");
  for (const auto& n : appeared)
    if (shm_now.count(n)) still.insert(n);
  EXPECT_TRUE(still.empty()) << still.size() << " /dev/shm entries were left, first: "
                             << (still.empty() ? "" : *still.begin());
  fs::remove_all(tmp);
}

MP_INSTANTIATE_START_METHODS(LeakTest);

// A program with a started manager, stopped by a signal to its whole process group (Ctrl-C,
// `timeout`, a service manager's stop). With MP_REL_PATH_MANAGER, also one at a socket path in
// TMPDIR (the kind of address without an abstract namespace).
TEST(DISABLED_Program, ManagerUntilGroupSignal) {
  auto manager = mp::Manager();
  auto value = manager.Value<int>(0);
  value.set(1);
  std::optional<mp::SyncManager> at_path;
  if (std::getenv("MP_REL_PATH_MANAGER")) {
    at_path.emplace(mp::managers::Address((fs::temp_directory_path() / "manager.sock").string()));
    at_path->start();
    at_path->Value<int>(2).set(3);
  }
  report_ready();
  sleep_forever();
}

namespace {
std::atomic<bool> g_interrupted{false};
void on_sigint(int) { g_interrupted = true; }
}  // namespace

// A program that handles Ctrl-C itself (Python: catches KeyboardInterrupt) and then still uses its
// manager, as CPython allows since bpo-36368.
TEST(DISABLED_Program, ManagerSurvivesCtrlC) {
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  ::sigaction(SIGINT, &sa, nullptr);
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  ::pthread_sigmask(SIG_BLOCK, &block, &old);
  auto manager = mp::Manager();
  auto value = manager.Value<int>(0);
  report_ready();
  while (!g_interrupted) ::sigsuspend(&old);
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  value.set(41);
  EXPECT_EQ(value.get(), 41);
}

namespace {
class GroupSignalTest : public ReliabilityTest {};
}  // namespace

// Guarantee: the manager's server ignores SIGINT (as CPython's, bpo-36368): a program that handles
// Ctrl-C to its process group keeps a working manager (before: the server died of it).
TEST_P(GroupSignalTest, ManagerSurvivesCtrlCHandledByTheProgram) {
  const fs::path tmp = fs::temp_directory_path() / ("mp-ctrlc-" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  InheritedPipe ready;
  const pid_t root = spawn_program("ManagerSurvivesCtrlC", tmp, GetParam(), ready.w, true);
  ASSERT_GT(root, 0);
  ready.close_write();
  EXPECT_EQ(read_int(ready.r, kTimeout), root) << "the program did not get ready";
  ASSERT_EQ(::kill(-root, SIGINT), 0);
  const int status = wait_program(root);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  EXPECT_TRUE(reap_orphans(std::chrono::milliseconds(5000)).empty());
  EXPECT_TRUE(list_dir(tmp).empty());
  fs::remove_all(tmp);
}

// Guarantee: a program with a manager ended by any signal to its process group leaves no file,
// socket, directory or process behind (before: SIGINT, SIGTERM and SIGHUP reached the server
// directly and killed it before it could remove $TMPDIR/mp-XXXXXX/listener, 12 of 12 runs). A
// manager at a socket path the program chose is removed too, except after SIGKILL (nothing can
// run then: the reason the default address is an abstract socket).
TEST_P(GroupSignalTest, ProgramWithManagerLeavesNothingBehind) {
#ifdef MP_PLATFORM_POSIX_FALLBACKS
  GTEST_SKIP() << "Linux-only guarantee (nothing left after SIGKILL): the portable fallbacks use "
                  "socket files (docs/DESIGN.md §6)";
#endif
  const fs::path tmp = fs::temp_directory_path() / ("mp-groupsig-" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  for (const int sig : {SIGINT, SIGTERM, SIGHUP, SIGKILL}) {
    SCOPED_TRACE(::strsignal(sig));
    InheritedPipe ready;
    std::vector<std::string> env;
    if (sig != SIGKILL) env.push_back("MP_REL_PATH_MANAGER=1");
    const pid_t root =
        spawn_program("ManagerUntilGroupSignal", tmp, GetParam(), ready.w, true, env);
    ASSERT_GT(root, 0);
    ready.close_write();
    EXPECT_EQ(read_int(ready.r, kTimeout), root) << "the program did not get ready";
    ASSERT_EQ(::kill(-root, sig), 0);
    const int status = wait_program(root);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == sig) << "status " << status;
    // The server re-parents to us (subreaper): it must end by itself, within 1 s of its owner.
    const auto late = reap_orphans(std::chrono::milliseconds(5000));
    EXPECT_TRUE(late.empty()) << late.size() << " processes of the program did not end";
    EXPECT_NE(::kill(-root, 0), 0) << "a process of the group remains";
    EXPECT_TRUE(list_dir(tmp).empty()) << "left in " << tmp << ": " << *list_dir(tmp).begin();
    EXPECT_EQ(sockets_under(tmp.string()), 0);
    for (const auto& e : fs::directory_iterator(tmp))
      fs::remove_all(e.path());  // next signal starts clean
  }
  fs::remove_all(tmp);
}

MP_INSTANTIATE_START_METHODS(GroupSignalTest);

// ---- single-process guarantees of the foundation

// Guarantee: a write to a pipe whose reader is gone is an OSError (EPIPE), not a SIGPIPE death,
// whatever the program's SIGPIPE disposition (here: the default, which kills).
TEST(ReliabilitySignals, WriteToClosedPipeIsOSErrorNotSigpipe) {
  auto [r, w] = mp::platform::make_pipe();
  mp::platform::close_handle(r);
  const char byte = 1;
  try {
    mp::platform::write_all(w, &byte, 1);
    ADD_FAILURE() << "the write succeeded";
  } catch (const mp::OSError& e) {
    EXPECT_EQ(e.code().value(), EPIPE);
  }
  mp::platform::close_handle(w);
  sigset_t pending;
  sigemptyset(&pending);
  sigpending(&pending);
  EXPECT_FALSE(sigismember(&pending, SIGPIPE)) << "a SIGPIPE was left pending";
}

// Guarantee: corrupt bytes are an UnpicklingError, never undefined behaviour or another exception
// type (found by fuzz_reduction: a bool byte of 2; a variant index out of range).
TEST(ReliabilityDecoding, CorruptValuesAreUnpicklingError) {
  std::string b = mp::reduction::dumps(true);
  b.back() = 2;
  EXPECT_THROW(mp::reduction::loads<bool>(b), mp::UnpicklingError);
  using V = std::variant<int, std::string>;
  std::string v = mp::reduction::dumps(V{5});
  const std::int32_t bad_index = 7;
  std::memcpy(v.data() + sizeof(std::uint64_t), &bad_index, sizeof bad_index);
  EXPECT_THROW(mp::reduction::loads<V>(v), mp::UnpicklingError);
  std::int32_t negative = -1;
  std::memcpy(v.data() + sizeof(std::uint64_t), &negative, sizeof negative);
  EXPECT_THROW(mp::reduction::loads<V>(v), mp::UnpicklingError);
}
