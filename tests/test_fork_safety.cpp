// Fork safety of the library's own process-wide state (issue 13, bug 8): a program whose threads
// enter the library for the first time while its main thread forks never hands the child a lock
// or a one-time initialization that a thread it does not have was in the middle of.
#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <string>
#include <thread>

#include "mp_test.hpp"

namespace {

// Runs tests/programs/fork_first_entry once (a fresh process, so every first use happens in it);
// its exit status: 0 the forked child ended, 1 it hung (the program kills it after 5 s).
int run_fork_first_entry() {
  const std::string cmd =
      std::string("timeout 60 ") + MP_FORK_FIRST_ENTRY_PATH + " >/dev/null 2>&1";
  const int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

}  // namespace

// Without the fix about 1 run in 60 hung here (a function-local static's guard, taken by a thread
// registering the fork handler, copied "in progress" into the child), so 300 runs almost surely
// see one.
TEST(ForkSafety, ForkWhileThreadsEnterTheLibraryForTheFirstTime) {
  int hung = 0, failed = 0;
  for (int i = 0; i < 300; ++i) {
    const int status = run_fork_first_entry();
    if (status == 1)
      ++hung;
    else if (status != 0)
      ++failed;
  }
  EXPECT_EQ(hung, 0) << "forked children hung";
  EXPECT_EQ(failed, 0) << "runs failed otherwise";
}

// The program's own fork() (not mp's) while another thread is inside the library's process table:
// the fork handlers hold its lock across the fork, so the child finds it free and consistent.
TEST(ForkSafety, ProgramsOwnForkWhileAThreadUsesTheProcessTable) {
  std::atomic<bool> stop{false};
  std::thread busy([&] {
    while (!stop.load(std::memory_order_relaxed)) (void)mp::active_children();
  });
  int hung = 0;
  for (int i = 0; i < 200; ++i) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      (void)mp::active_children();
      ::_exit(0);
    }
    const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    ASSERT_GE(fd, 0);
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 5000) != 1) {
      ++hung;
      ::kill(pid, SIGKILL);
    }
    ::close(fd);
    int status = 0;
    ::waitpid(pid, &status, 0);
  }
  stop = true;
  busy.join();
  EXPECT_EQ(hung, 0) << "children of fork() hung on the process table's lock";
}
