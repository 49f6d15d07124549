// The forkserver start method's own guarantees (CPython: test_forkserver, and
// _TestStartMethod in Lib/test/_test_multiprocessing.py). Every StartMethodTest elsewhere also
// runs under forkserver.
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <thread>

#include "support/auth.hpp"
#include "forkserver_impl.hpp"
#include "mp/errors.hpp"
#include "mp/forkserver.hpp"
#include "mp/queues.hpp"
#include "mp_test.hpp"
#include "platform/handle.hpp"
#include "platform/io.hpp"
#include "platform/system.hpp"

using namespace mp_test;

namespace {

std::mutex g_held;  // held by a parent thread while children start

void lock_the_held_mutex() {
  std::lock_guard lk(g_held);  // a forked copy of a locked mutex never unlocks: deadlock
}

void wait_for(mp::Event e) { e.wait(kTimeout); }

int pidfd_of(int pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

bool ends_within(int pid, std::chrono::nanoseconds timeout) {
  const int fd = pidfd_of(pid);
  if (fd < 0) return true;  // gone already
  const bool ended = mp::platform::wait_readable(fd, &timeout);
  ::close(fd);
  return ended;
}

// An owner (started by the test) that starts a forkserver child, reports its server's pid, then
// waits to be killed.
void owner_of_server(mp::Queue<int> out, mp::Event child_may_end) {
  mp::Process c(mp::get_context("forkserver"), wait_for, child_may_end);
  c.start();
  out.put(mp::forkserver::server_pid().value_or(-1));
  out.put(*c.pid());
  for (;;) ::pause();
}

// An atexit handler registered while the program loads, so the forkserver's server (a spawned copy
// of it) has it too: in a process named kProbeName whose environment names a file, it creates it.
constexpr const char* kMarkEnv = "MP_TEST_ATEXIT_MARK";
constexpr const char* kProbeName = "atexit-probe";
const bool g_mark_registered = [] {
  std::atexit([] {
    const char* path = std::getenv(kMarkEnv);
    if (path && mp::current_process().name() == kProbeName)
      if (FILE* f = std::fopen(path, "w")) std::fclose(f);
  });
  return true;
}();

void do_nothing() {}

// Starts a forkserver child named kProbeName (and so this process's own server) and reports its
// exit code.
void owner_of_probe(mp::Queue<int> out) {
  mp::Process c(mp::get_context("forkserver"), do_nothing);
  c.set_name(kProbeName);
  c.start();
  c.join();
  out.put(c.exitcode().value_or(-1));
}

}  // namespace

TEST(Forkserver, ListedAndSelectable) {
  const auto all = mp::get_all_start_methods();
  EXPECT_NE(std::find(all.begin(), all.end(), "forkserver"), all.end());
  EXPECT_EQ(mp::get_context("forkserver").get_start_method(), "forkserver");
  mp::forkserver::ensure_running();
  ASSERT_TRUE(mp::forkserver::server_pid());
  const int server = *mp::forkserver::server_pid();
  mp::forkserver::ensure_running();  // idempotent
  EXPECT_EQ(mp::forkserver::server_pid(), server);
}

// The reason forkserver exists: a parent whose threads hold locks. Under fork the child inherits
// the locked mutex and deadlocks; under forkserver it is forked from the clean server.
TEST(Forkserver, ThreadsHoldingLocksDoNotDeadlockChildren) {
  std::unique_lock hold(g_held);
  std::vector<std::thread> busy;
  std::atomic<bool> stop{false};
  for (int i = 0; i < 4; ++i)
    busy.emplace_back([&] {
      while (!stop.load()) {
        std::vector<char> churn(
            1000 + static_cast<std::size_t>(std::rand() % 5000));  // malloc's locks too
        (void)churn;
      }
    });
  for (int i = 0; i < 10; ++i) {
    mp::Process p(mp::get_context("forkserver"), lock_the_held_mutex);
    p.start();
    join_or_fail(p);
    EXPECT_EQ(p.exitcode(), 0);
  }
  mp::Process f(mp::get_context("fork"), lock_the_held_mutex);
  f.start();
  f.join(300ms);
  EXPECT_FALSE(f.exitcode()) << "the fork child did not deadlock (the test shows nothing)";
  f.kill();
  f.join();
  stop = true;
  for (auto& t : busy) t.join();
}

// The server ends with its owner, even when the owner is SIGKILLed, leaving nothing in the file
// system; the owner's children run on to their end.
TEST(Forkserver, ServerEndsWithItsKilledOwner) {
#ifdef MP_PLATFORM_POSIX_FALLBACKS
  GTEST_SKIP() << "Linux-only guarantee (nothing left after SIGKILL): the portable fallbacks use "
                  "socket files (docs/DESIGN.md §6)";
#endif
  const std::string tmp = mp::platform::make_private_directory("mp-fs-test-");
  const auto old = mp::platform::get_env("TMPDIR");
  ::setenv("TMPDIR", tmp.c_str(), 1);
  mp::Queue<int> out;
  mp::Event child_may_end;
  mp::Process owner(mp::get_context("spawn"), owner_of_server, out, child_may_end);
  owner.start();
  if (old)
    ::setenv("TMPDIR", old->c_str(), 1);
  else
    ::unsetenv("TMPDIR");
  const int server = out.get(true, kTimeout), child = out.get(true, kTimeout);
  ASSERT_GT(server, 0);
  const int child_fd = pidfd_of(child);
  // Linux: the server listens on an abstract socket, so nothing of it is in the file system even
  // while it runs (and nothing can be left behind by any way it ends).
  EXPECT_TRUE(std::filesystem::is_empty(tmp)) << "the server put its socket in the file system";
  owner.kill();
  join_or_fail(owner);
  EXPECT_TRUE(ends_within(server, kTimeout)) << "the forkserver outlived its killed owner";
  EXPECT_TRUE(std::filesystem::is_empty(tmp)) << "the server left its socket directory";
  const mp::platform::Nanos zero{0};
  EXPECT_FALSE(mp::platform::wait_readable(child_fd, &zero))
      << "the owner's child was killed with it";
  child_may_end.set();
  const mp::platform::Nanos bound = kTimeout;
  EXPECT_TRUE(mp::platform::wait_readable(child_fd, &bound));
  ::close(child_fd);
  std::filesystem::remove_all(tmp);
}

// A killed server: its running child runs on, and its exit code is still known (the child reports
// it as it leaves; CPython: 255, unknown); the next start() starts a new server.
TEST(Forkserver, KilledServerIsReplaced) {
  mp::Event may_end;
  mp::Process p(mp::get_context("forkserver"), wait_for, may_end);
  p.start();
  const int server = *mp::forkserver::server_pid();
  ::kill(server, SIGKILL);
  ASSERT_TRUE(ends_within(server, kTimeout));
  EXPECT_TRUE(p.is_alive());
  may_end.set();
  join_or_fail(p);
  EXPECT_EQ(p.exitcode(), 0);
  mp::Process q(mp::get_context("forkserver"), lock_the_held_mutex);
  q.start();
  join_or_fail(q);
  EXPECT_EQ(q.exitcode(), 0);
  EXPECT_NE(mp::forkserver::server_pid().value_or(server), server);
}

// Forks a process that leaves through std::exit(7) (so through the exit handler it inherited),
// waits for it, then ends with 3.
void fork_and_exit_3() {
  const pid_t pid = ::fork();
  if (pid == 0) std::exit(7);
  int status = 0;
  ::waitpid(pid, &status, 0);
  std::exit(WIFEXITED(status) && WEXITSTATUS(status) == 7 ? 3 : 4);
}

// A forkserver child reports its own exit status as it leaves (join wakes once); a process it forks
// reports nothing in its name; a child killed by a signal gets the server's record.
TEST(Forkserver, ExitStatusComesFromTheChildItself) {
  mp::Process p(mp::get_context("forkserver"), fork_and_exit_3);
  p.start();
  join_or_fail(p);
  EXPECT_EQ(p.exitcode(), 3);
  mp::Event never;
  mp::Process q(mp::get_context("forkserver"), wait_for, never);
  q.start();
  q.kill();
  join_or_fail(q);
  EXPECT_EQ(q.exitcode(), -SIGKILL);
}

// Requests are authenticated: a peer with the wrong key is refused and runs nothing; the server
// goes on serving.
TEST(Forkserver, WrongKeyIsRefused) {
  mp::forkserver::ensure_running();
  const std::string path = mp::detail::forkserver_address();
  ASSERT_FALSE(path.empty());
  const mp::platform::Handle c = mp::platform::connect_unix(path);
  mp::auth::Channel ch;
  ch.write_all = [c](const void* p, std::size_t n) { mp::platform::write_all(c, p, n); };
  ch.read_exact = [c](void* p, std::size_t n) { mp::platform::recv_exact(c, p, n); };
  bool refused = false;
  try {
    mp::auth::client_handshake(ch, "not the key");
  } catch (const mp::AuthenticationError&) {
    refused = true;
  } catch (const mp::EOFError&) {
    refused = true;
  }
  mp::platform::close_handle(c);
  EXPECT_TRUE(refused);
  mp::Process p(mp::get_context("forkserver"), lock_the_held_mutex);
  p.start();
  join_or_fail(p);
  EXPECT_EQ(p.exitcode(), 0);
}

// A forkserver child leaves as a forked one does (exit function, then _exit): the atexit handlers
// and static destructors of the server's image do not run in it (CPython: os._exit). Its owner is
// a spawned process, so its server is new and has the marker's environment.
TEST(Forkserver, ChildLeavesWithoutTheServersAtexitHandlers) {
  ASSERT_TRUE(g_mark_registered);
  const std::string dir = mp::platform::make_private_directory("mp-fs-test-");
  const std::string mark = dir + "/mark";
  ::setenv(kMarkEnv, mark.c_str(), 1);
  mp::Queue<int> out;
  mp::Process owner(mp::get_context("spawn"), owner_of_probe, out);
  owner.start();
  ::unsetenv(kMarkEnv);
  EXPECT_EQ(out.get(true, kTimeout), 0);
  join_or_fail(owner);
  EXPECT_EQ(owner.exitcode(), 0);
  EXPECT_FALSE(std::filesystem::exists(mark)) << "the server's atexit handler ran in its child";
  std::filesystem::remove_all(dir);
}
