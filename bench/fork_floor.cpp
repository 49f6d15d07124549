// fork_floor — Pool(4) create + close + join under fork beside the floors that bound it (Linux).
//
// One run, rounds alternating; each round measures, in a fresh process of this program:
//   bare, before mp   4 bare forks from this process before it has used mp
//   bare, threaded    the same once a thread has run (glibc's fork then takes every lock it has)
//   mp Pool(4)        mp::Pool(4) create + close + join, fork
//   bare              4 bare forks from the same process once it has made pools (the engine thread
//                     exists): the floor of any pool that forks its 4 workers from this process
//   tree              2 forks whose children fork one more each (CLONE_PARENT, so all 4 are this
//                     process's children): the floor if workers started workers
// and then CPython's multiprocessing Pool(4) create + close + join under fork, in a fresh
// interpreter. A bare fork's child blocks reading a pipe (as a worker waits for work); the 4 are
// released at once (the write end closed) and waited for, as raw_bench's fork4_live_release_wait.
//
//   fork_floor [--rounds N] [--python PATH]      prints a markdown table (ms per pool)
#include <fcntl.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "mp/pool.hpp"

namespace {

double now_ms() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

[[noreturn]] void die(const char* what) {
  std::perror(what);
  std::exit(1);
}

[[noreturn]] void bare_child(int release) {
  char c;
  while (::read(release, &c, 1) < 0 && errno == EINTR) {
  }
  ::_exit(0);
}

void wait_children(int count) {
  for (int i = 0; i < count;) {
    if (::wait(nullptr) >= 0) {
      ++i;
    } else if (errno != EINTR) {
      die("wait");
    }
  }
}

// Forks `forks` children that each run in_child(the release pipe's read end), releases them all
// (the write end closed) and waits for 4 children of this process.
void release_and_wait(int forks, void (*in_child)(int release)) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) die("pipe2");
  for (int i = 0; i < forks; ++i) {
    const pid_t pid = ::fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
      ::close(fds[1]);
      in_child(fds[0]);
    }
  }
  ::close(fds[0]);
  ::close(fds[1]);
  wait_children(4);
}

// 4 children forked from this process.
void bare4() { release_and_wait(4, bare_child); }

// 2 children forked from this process, each forking one more as this process's child.
void tree4() {
  release_and_wait(2, [](int release) {
    // A raw clone: enough for a child that only reads and exits (glibc's fork() cannot pass
    // CLONE_PARENT). The exit signal is the caller's (SIGCHLD) under CLONE_PARENT.
    if (::syscall(SYS_clone, CLONE_PARENT, 0, 0, 0, 0) < 0) {
      std::perror("clone");
      ::_exit(1);
    }
    bare_child(release);
  });
}

template <class F>
double per_call(int n, F&& f) {
  const double t0 = now_ms();
  for (int i = 0; i < n; ++i) f();
  return (now_ms() - t0) / n;
}

// One round in this fresh process: "before mp, threaded, mp, bare, tree" (ms).
void round_here(int n) {
  const double before = per_call(n, bare4);
  std::thread([] { std::free(std::malloc(64)); }).join();
  const double threaded = per_call(n, bare4);
  const mp::Context ctx = mp::get_context("fork");
  auto pool4 = [&] {
    mp::Pool pool(ctx, 4);
    pool.close();
    pool.join();
  };
  per_call(n / 5, pool4);  // warm: the engine thread and the spare queues exist from here on
  const double pool = per_call(n, pool4);
  const double bare = per_call(n, bare4);
  const double tree = per_call(n, tree4);
  std::printf("%.4f %.4f %.4f %.4f %.4f\n", before, threaded, pool, bare, tree);
}

std::string run(const std::string& cmd) {
  std::string out;
  FILE* f = ::popen(cmd.c_str(), "r");
  if (!f) die("popen");
  char buf[256];
  while (std::fgets(buf, sizeof buf, f)) out += buf;
  if (::pclose(f) != 0) {
    std::fprintf(stderr, "fork_floor: '%s' failed\n", cmd.c_str());
    std::exit(1);
  }
  return out;
}

constexpr const char* kPython =
    "import multiprocessing as m, time\n"
    "if __name__ == '__main__':\n"
    "    c = m.get_context('fork'); n = %d\n"
    "    def pool4():\n"
    "        p = c.Pool(4); p.close(); p.join()\n"
    "    for _ in range(n // 5): pool4()\n"
    "    t0 = time.perf_counter()\n"
    "    for _ in range(n): pool4()\n"
    "    print((time.perf_counter() - t0) / n * 1e3)\n";

}  // namespace

int main(int argc, char** argv) {
  int rounds = 5;
  std::string python = "python3";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--round" && i + 1 < argc) {
      round_here(std::atoi(argv[++i]));
      return 0;
    }
    if (a == "--rounds" && i + 1 < argc) {
      rounds = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--python" && i + 1 < argc) {
      python = argv[++i];
    } else {
      std::fprintf(stderr, "usage: fork_floor [--rounds N] [--python PATH]\n");
      return 2;
    }
  }
  char self[4096];
  const ssize_t len = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (len <= 0) die("readlink");
  self[len] = '\0';
  char script[1024];
  std::snprintf(script, sizeof script, kPython, 20);
  const std::string py = "'" + python + "' -c \"" + script + "\"";

  std::printf(
      "| round | bare, before mp | bare, threaded | mp Pool(4) | bare | tree | CPython Pool(4) | "
      "CPython / mp | CPython / bare | CPython / tree |\n"
      "|---|---|---|---|---|---|---|---|---|---|\n");
  for (int r = 1; r <= rounds; ++r) {
    double before = 0, threaded = 0, pool = 0, bare = 0, tree = 0;
    const std::string mine = run("'" + std::string(self) + "' --round 100");
    if (std::sscanf(mine.c_str(), "%lf %lf %lf %lf %lf", &before, &threaded, &pool, &bare, &tree) !=
        5) {
      std::fprintf(stderr, "fork_floor: unexpected round output '%s'\n", mine.c_str());
      return 1;
    }
    const double cpython = std::atof(run(py).c_str());
    std::printf("| %d | %.3f | %.3f | %.3f | %.3f | %.3f | %.2f | %.1fx | %.1fx | %.1fx |\n", r,
                before, threaded, pool, bare, tree, cpython, cpython / pool, cpython / bare,
                cpython / tree);
    std::fflush(stdout);
  }
}
