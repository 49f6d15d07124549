// bench/harness.hpp — the timing harness shared by raw_bench and mp_bench.
//
// Each benchmark binary registers named metrics; `--metrics a,b --scale S --reps R` runs each
// metric R times and prints one line per metric, the median of its repetitions:
//     RESULT <name> <value> <unit>
//     ERROR <name> <message>        (the metric failed or cannot run here)
// bench/run.py parses these lines. Cross-process metrics use their own loops with a partner
// process and CLOCK_MONOTONIC stamps in shared memory (each worker stamps its own start and
// stop): Google Benchmark's adaptive iteration count cannot be told to a partner process, and
// one harness for all metrics keeps the three sides comparable. Nor do the binaries link it:
// mp_bench is also the spawned child, so it should load only what a user's program loads.
// This is benchmark code, not the library: it calls the OS directly.
#pragma once

#include <sched.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

namespace bench {

struct Params {
  double scale = 1.0;  // multiplies every iteration count (quick mode and the smoke test shrink it)
  // n iterations at scale 1, at least `min` after scaling.
  long n(long base, long min = 1) const {
    const long v = static_cast<long>(static_cast<double>(base) * scale);
    return v < min ? min : v;
  }
  // Time budget of one repetition of a loop that may stop early (process creation): `scale`
  // seconds, at least 20 ms. Such loops still run at least 3 iterations.
  double budget_s() const { return scale > 0.02 ? scale : 0.02; }
};

// Thrown by a metric that cannot run in this environment (e.g. a busy-wait on one CPU).
struct Skip : std::runtime_error {
  using std::runtime_error::runtime_error;
};

using MetricFn = double (*)(const Params&);
struct Metric {
  std::string name;
  std::string unit;
  MetricFn fn;
};

inline std::vector<Metric>& registry() {
  static std::vector<Metric> r;
  return r;
}
struct Register {
  Register(const char* name, const char* unit, MetricFn fn) {
    registry().push_back({name, unit, fn});
  }
};
#define BENCH_CAT2(a, b) a##b
#define BENCH_CAT(a, b) BENCH_CAT2(a, b)
// BENCH_METRIC(name, unit) { ... return value; }  — `p` is the Params.
#define BENCH_METRIC(name, unit)                                      \
  static double name(const ::bench::Params& p);                       \
  static ::bench::Register BENCH_CAT(reg_, name)(#name, unit, &name); \
  static double name([[maybe_unused]] const ::bench::Params& p)

// Optimization barriers for the single-process loops (what benchmark::DoNotOptimize and
// ClobberMemory do): the compiler must assume `p` is read and memory is changed.
inline void keep(const void* p) { asm volatile("" : : "r"(p) : "memory"); }
inline void clobber() { asm volatile("" : : : "memory"); }

inline std::int64_t now_ns() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

[[noreturn]] inline void die(const char* what) {
  std::perror(what);
  std::_Exit(99);
}

// An object in anonymous shared memory, inherited by forked children.
template <class T>
class Shared {
 public:
  template <class... A>
  explicit Shared(A&&... a) {
    void* m = ::mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::runtime_error("mmap failed");
    p_ = new (m) T(std::forward<A>(a)...);
  }
  Shared(const Shared&) = delete;
  Shared& operator=(const Shared&) = delete;
  ~Shared() {
    p_->~T();
    ::munmap(p_, sizeof(T));
  }
  T* operator->() const { return p_; }
  T& operator*() const { return *p_; }
  T* get() const { return p_; }

 private:
  T* p_;
};

// A shared byte buffer (rings, 1 MiB messages).
class SharedBytes {
 public:
  explicit SharedBytes(std::size_t n) : n_(n) {
    void* m = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::runtime_error("mmap failed");
    p_ = static_cast<char*>(m);
  }
  SharedBytes(const SharedBytes&) = delete;
  SharedBytes& operator=(const SharedBytes&) = delete;
  ~SharedBytes() { ::munmap(p_, n_); }
  char* data() const { return p_; }

 private:
  char* p_;
  std::size_t n_;
};

// A parent made big: `mib` MiB of private memory, touched, held while alive. fork() copies the
// page tables of all of it; vfork/posix_spawn do not.
class Ballast {
 public:
  explicit Ballast(std::size_t mib) : n_(mib << 20) {
    void* m = ::mmap(nullptr, n_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::runtime_error("mmap failed");
    p_ = static_cast<char*>(m);
    std::memset(p_, 1, n_);
  }
  Ballast(const Ballast&) = delete;
  Ballast& operator=(const Ballast&) = delete;
  ~Ballast() { ::munmap(p_, n_); }

 private:
  std::size_t n_;
  char* p_;
};
inline constexpr std::size_t kBallastMiB = 256;

// Start gate and per-worker stamps for cross-process rates.
struct Stamps {
  std::atomic<int> arrived{0};
  std::int64_t start[2] = {0, 0};
  std::int64_t stop[2] = {0, 0};
  // Blocks (yielding) until `parties` workers arrived.
  void arrive_and_wait(int parties) {
    arrived.fetch_add(1);
    while (arrived.load() < parties) ::sched_yield();
  }
  // Wall time from the earliest start to the latest stop of workers [0, k).
  double span_s(int k = 2) const {
    std::int64_t s = start[0], e = stop[0];
    for (int i = 1; i < k; ++i) {
      s = std::min(s, start[i]);
      e = std::max(e, stop[i]);
    }
    return static_cast<double>(e - s) * 1e-9;
  }
};

// Forks a child that runs f() and leaves with _exit (code 0, or 98 if f threw).
template <class F>
pid_t fork_child(F&& f) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int code = 0;
    try {
      f();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench child: %s\n", e.what());
      code = 98;
    } catch (...) {
      code = 98;
    }
    std::fflush(nullptr);
    ::_exit(code);
  }
  return pid;
}

inline void wait_child(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw std::runtime_error("waitpid failed");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error("a benchmark child failed");
}

// The number of CPUs this process may run on (1 under `taskset -c 0`).
inline int allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) != 0) return 1;
  return CPU_COUNT(&set);
}
inline void require_two_cpus() {
  if (allowed_cpus() < 2) throw Skip("busy-waits on both sides: needs 2 CPUs");
}

inline std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == sep) {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

// Parses the command line and runs the selected metrics. Returns the exit code.
inline int run_main(int argc, char** argv) {
  Params p;
  int reps = 3;
  std::vector<std::string> only;
  bool list = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--list") {
      list = true;
    } else if (a == "--metrics") {
      only = split(value(), ',');
    } else if (a == "--scale") {
      p.scale = std::atof(value().c_str());
    } else if (a == "--reps") {
      reps = std::max(1, std::atoi(value().c_str()));
    } else {
      std::fprintf(
          stderr,
          "usage: %s [--list] [--metrics a,b,...] [--scale S] [--reps R]\nunknown argument: %s\n",
          argv[0], a.c_str());
      return 2;
    }
  }
  if (!(p.scale > 0)) {
    std::fprintf(stderr, "--scale must be positive\n");
    return 2;
  }
  if (list) {
    for (const Metric& m : registry()) std::printf("%s %s\n", m.name.c_str(), m.unit.c_str());
    return 0;
  }
  std::vector<const Metric*> todo;
  if (only.empty()) {
    for (const Metric& m : registry()) todo.push_back(&m);
  } else {
    for (const std::string& name : only) {
      auto it = std::find_if(registry().begin(), registry().end(),
                             [&](const Metric& m) { return m.name == name; });
      if (it == registry().end()) {
        std::printf("ERROR %s unknown metric\n", name.c_str());
      } else {
        todo.push_back(&*it);
      }
    }
  }
  for (const Metric* m : todo) {
    std::vector<double> values;
    try {
      for (int r = 0; r < reps; ++r) values.push_back(m->fn(p));
      std::sort(values.begin(), values.end());
      const std::size_t k = values.size();
      const double median = k % 2 ? values[k / 2] : (values[k / 2 - 1] + values[k / 2]) / 2;
      std::printf("RESULT %s %.6g %s\n", m->name.c_str(), median, m->unit.c_str());
    } catch (const std::exception& e) {
      std::printf("ERROR %s %s\n", m->name.c_str(), e.what());
    }
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace bench
