// bench/raw_bench.cpp — the raw OS limits: each multiprocessing metric measured with the bare
// primitive it rests on (futex, sem_t, process-shared pthread objects, atomics, pipe, Unix socket,
// a shared-memory ring, fork, posix_spawn/vfork/fork+exec of this binary), as in
// bench/results/baseline-2026-11-24.md. No mp code: these are the physical limits mp is compared with.
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <semaphore.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <poll.h>

#include <climits>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "harness.hpp"

extern char** environ;

namespace {

using bench::fork_child;
using bench::now_ns;
using bench::Params;
using bench::Shared;
using bench::Stamps;
using bench::wait_child;

// ---- primitives --------------------------------------------------------------------------

long futex(std::atomic<int>* addr, int op, int val) {
  return ::syscall(SYS_futex, reinterpret_cast<int*>(addr), op, val, nullptr, nullptr, 0);
}

// Drepper's three-state futex mutex ("Futexes Are Tricky", mutex 2), process-shared.
struct FutexMutex {
  std::atomic<int> word{0};
  void lock() {
    int c = 0;
    if (word.compare_exchange_strong(c, 1, std::memory_order_acquire)) return;
    if (c != 2) c = word.exchange(2, std::memory_order_acquire);
    while (c != 0) {
      futex(&word, FUTEX_WAIT, 2);
      c = word.exchange(2, std::memory_order_acquire);
    }
  }
  void unlock() {
    if (word.fetch_sub(1, std::memory_order_release) != 1) {
      word.store(0, std::memory_order_release);
      futex(&word, FUTEX_WAKE, 1);
    }
  }
};

struct Sem {
  sem_t s;
  explicit Sem(unsigned v) {
    if (::sem_init(&s, 1, v) != 0) throw std::runtime_error("sem_init failed");
  }
  ~Sem() { ::sem_destroy(&s); }
  void lock() {
    while (::sem_wait(&s) != 0) {
    }
  }
  void unlock() { ::sem_post(&s); }
};

struct PMutex {
  pthread_mutex_t m;
  PMutex() {
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutex_init(&m, &a);
    pthread_mutexattr_destroy(&a);
  }
  ~PMutex() { pthread_mutex_destroy(&m); }
  void lock() { pthread_mutex_lock(&m); }
  void unlock() { pthread_mutex_unlock(&m); }
};

void write_all(int fd, const void* p, std::size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n) {
    const ssize_t w = ::write(fd, c, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      bench::die("write");
    }
    c += w;
    n -= static_cast<std::size_t>(w);
  }
}
void read_all(int fd, void* p, std::size_t n) {
  char* c = static_cast<char*>(p);
  while (n) {
    const ssize_t r = ::read(fd, c, n);
    if (r < 0) {
      if (errno == EINTR) continue;
      bench::die("read");
    }
    if (r == 0) bench::die("unexpected EOF");
    c += r;
    n -= static_cast<std::size_t>(r);
  }
}

// ---- uncontended locks, 1 process (ns per acquire+release) -------------------------------

template <class L>
double uncontended_ns(L& l, long n) {
  const auto t0 = now_ns();
  for (long i = 0; i < n; ++i) {
    l.lock();
    bench::clobber();
    l.unlock();
  }
  return static_cast<double>(now_ns() - t0) / static_cast<double>(n);
}

BENCH_METRIC(sem_lock_uncontended_ns, "ns") {
  Shared<Sem> s(1);
  return uncontended_ns(*s, p.n(5'000'000, 1000));
}
BENCH_METRIC(futex_mutex_uncontended_ns, "ns") {
  Shared<FutexMutex> m;
  return uncontended_ns(*m, p.n(5'000'000, 1000));
}
BENCH_METRIC(mutex_uncontended_ns, "ns") {
  Shared<PMutex> m;
  return uncontended_ns(*m, p.n(5'000'000, 1000));
}

// ---- contended: two forked processes each do n x (lock; ++shared int; unlock) (ops/s) -----

template <class L>
struct Counted {
  L lock;
  volatile long counter = 0;
  Stamps stamps;
  template <class... A>
  explicit Counted(A&&... a) : lock(std::forward<A>(a)...) {}
};

template <class L, class... A>
double contended_2p(long n, A&&... a) {
  Shared<Counted<L>> s(std::forward<A>(a)...);
  pid_t pids[2];
  for (int w = 0; w < 2; ++w) {
    pids[w] = fork_child([&, w] {
      s->stamps.arrive_and_wait(2);
      s->stamps.start[w] = now_ns();
      for (long i = 0; i < n; ++i) {
        s->lock.lock();
        s->counter = s->counter + 1;
        s->lock.unlock();
      }
      s->stamps.stop[w] = now_ns();
    });
  }
  for (pid_t pid : pids) wait_child(pid);
  if (s->counter != 2 * n) throw std::runtime_error("lost increments: the lock is broken");
  return 2.0 * static_cast<double>(n) / s->stamps.span_s();
}

BENCH_METRIC(sem_lock_contended_2p, "ops/s") { return contended_2p<Sem>(p.n(2'000'000, 1000), 1u); }
BENCH_METRIC(futex_mutex_contended_2p, "ops/s") {
  return contended_2p<FutexMutex>(p.n(2'000'000, 1000));
}
BENCH_METRIC(mutex_contended_2p, "ops/s") { return contended_2p<PMutex>(p.n(2'000'000, 1000)); }

BENCH_METRIC(atomic_fetch_add_2p, "ops/s") {
  struct S {
    std::atomic<long> v{0};
    Stamps stamps;
  };
  Shared<S> s;
  const long n = p.n(10'000'000, 1000);
  pid_t pids[2];
  for (int w = 0; w < 2; ++w) {
    pids[w] = fork_child([&, w] {
      s->stamps.arrive_and_wait(2);
      s->stamps.start[w] = now_ns();
      for (long i = 0; i < n; ++i) s->v.fetch_add(1);
      s->stamps.stop[w] = now_ns();
    });
  }
  for (pid_t pid : pids) wait_child(pid);
  return 2.0 * static_cast<double>(n) / s->stamps.span_s();
}

BENCH_METRIC(atomic_fetch_add_1p, "ops/s") {
  Shared<std::atomic<long>> v(0);
  const long n = p.n(50'000'000, 1000);
  const auto t0 = now_ns();
  for (long i = 0; i < n; ++i) v->fetch_add(1);
  return static_cast<double>(n) / (static_cast<double>(now_ns() - t0) * 1e-9);
}

// RawValue's anchor: a plain (volatile, non-atomic) increment of an int in shared memory.
BENCH_METRIC(shared_int_inc_1p, "ops/s") {
  Shared<long> v(0);
  volatile long* x = v.get();
  const long n = p.n(200'000'000, 1000);
  const auto t0 = now_ns();
  for (long i = 0; i < n; ++i) *x = *x + 1;
  return static_cast<double>(n) / (static_cast<double>(now_ns() - t0) * 1e-9);
}

// ---- streams: a child writes n messages, the parent reads them ----------------------------

constexpr std::size_t kMiB = 1 << 20;

double pipe_stream(long n, std::size_t size) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) bench::die("pipe");
  Shared<Stamps> st;
  std::vector<char> out(size, 'x');
  const pid_t pid = fork_child([&] {
    ::close(fds[0]);
    st->arrive_and_wait(2);
    st->start[0] = now_ns();
    for (long i = 0; i < n; ++i) write_all(fds[1], out.data(), size);
    st->stop[0] = now_ns();
  });
  ::close(fds[1]);
  std::vector<char> in(size);
  st->arrive_and_wait(2);
  st->start[1] = now_ns();
  for (long i = 0; i < n; ++i) read_all(fds[0], in.data(), size);
  st->stop[1] = now_ns();
  ::close(fds[0]);
  wait_child(pid);
  return static_cast<double>(n) / st->span_s();
}

BENCH_METRIC(pipe_stream_8b_msgs, "msgs/s") { return pipe_stream(p.n(1'000'000, 100), 8); }
BENCH_METRIC(pipe_stream_1mb_MBps, "MB/s") {
  const long n = p.n(2000, 4);
  return pipe_stream(n, kMiB) * static_cast<double>(kMiB) / 1e6;
}

// Single-producer single-consumer ring in shared memory; both sides busy-wait (2 CPUs only).
struct RingHeader {
  alignas(64) std::atomic<std::uint64_t> head{0};  // next slot to write
  alignas(64) std::atomic<std::uint64_t> tail{0};  // next slot to read
  alignas(64) Stamps stamps;
};

double spsc_ring(long n, std::size_t size, std::size_t slots) {
  bench::require_two_cpus();
  Shared<RingHeader> h;
  bench::SharedBytes ring(size * slots);
  std::vector<char> out(size, 'x'), in(size);
  const pid_t pid = fork_child([&] {
    h->stamps.arrive_and_wait(2);
    h->stamps.start[0] = now_ns();
    for (long i = 0; i < n; ++i) {
      const std::uint64_t head = h->head.load(std::memory_order_relaxed);
      while (head - h->tail.load(std::memory_order_acquire) == slots) {
      }
      out[0] = static_cast<char>(i);
      std::memcpy(ring.data() + (head % slots) * size, out.data(), size);
      h->head.store(head + 1, std::memory_order_release);
    }
    h->stamps.stop[0] = now_ns();
  });
  h->stamps.arrive_and_wait(2);
  h->stamps.start[1] = now_ns();
  for (long i = 0; i < n; ++i) {
    const std::uint64_t tail = h->tail.load(std::memory_order_relaxed);
    while (h->head.load(std::memory_order_acquire) == tail) {
    }
    std::memcpy(in.data(), ring.data() + (tail % slots) * size, size);
    bench::keep(in.data());
    h->tail.store(tail + 1, std::memory_order_release);
  }
  h->stamps.stop[1] = now_ns();
  wait_child(pid);
  return static_cast<double>(n) / h->stamps.span_s();
}

BENCH_METRIC(spsc_ring_8b_msgs, "msgs/s") { return spsc_ring(p.n(1'000'000, 1000), 8, 1024); }
BENCH_METRIC(spsc_ring_1mb_MBps, "MB/s") {
  return spsc_ring(p.n(1000, 8), kMiB, 8) * static_cast<double>(kMiB) / 1e6;
}

BENCH_METRIC(memcpy_1mb_MBps, "MB/s") {
  std::vector<char> a(kMiB, 'a'), b(kMiB);
  const long n = p.n(20000, 10);
  const auto t0 = now_ns();
  for (long i = 0; i < n; ++i) {
    a[0] = static_cast<char>(i);
    std::memcpy(b.data(), a.data(), kMiB);
    bench::keep(b.data());
  }
  return static_cast<double>(n) * static_cast<double>(kMiB) / 1e6 /
         (static_cast<double>(now_ns() - t0) * 1e-9);
}

// The cost of one pause instruction (the spin-wait hint), which varies ~10x between CPU models:
// a spin bounded by a count of pauses lasts that much longer or shorter (lib/support/spin.hpp).
BENCH_METRIC(pause_ns, "ns") {
  const long n = p.n(2'000'000, 1000);
  const auto t0 = now_ns();
  for (long i = 0; i < n; ++i) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }
  return static_cast<double>(now_ns() - t0) / static_cast<double>(n);
}

// ---- named shared memory: shm_open + ftruncate + mmap, no tracking -------------------------

std::string raw_shm_name() { return "/raw_bench_" + std::to_string(::getpid()); }

BENCH_METRIC(raw_shm_attach_close_us, "us") {
  const std::string name = raw_shm_name();
  const int fd = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0 || ::ftruncate(fd, kMiB) != 0) bench::die("shm_open");
  ::close(fd);
  const long n = p.n(100000, 20);
  const auto t0 = now_ns();
  for (long i = 0; i < n; ++i) {
    const int f = ::shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0);
    struct stat st {};
    if (f < 0 || ::fstat(f, &st) != 0) bench::die("shm_open");
    void* m = ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ | PROT_WRITE,
                     MAP_SHARED, f, 0);
    if (m == MAP_FAILED) bench::die("mmap");
    ::close(f);
    bench::keep(m);
    ::munmap(m, static_cast<std::size_t>(st.st_size));
  }
  const double r = static_cast<double>(now_ns() - t0) / 1e3 / static_cast<double>(n);
  ::shm_unlink(name.c_str());
  return r;
}

// One anonymous shared page per object (mmap, kept mapped), per object: what a small shared object
// costs when each has its own mapping.
BENCH_METRIC(mmap_page_us, "us") {
  const long n = p.n(20'000, 100);
  std::vector<void*> pages;
  pages.reserve(static_cast<std::size_t>(n));
  const auto t0 = now_ns();
  for (long i = 0; i < n; ++i) {
    void* m = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) bench::die("mmap");
    static_cast<int*>(m)[0] = 0;
    pages.push_back(m);
  }
  const double r = static_cast<double>(now_ns() - t0) / 1e3 / static_cast<double>(n);
  for (void* m : pages) ::munmap(m, 4096);
  return r;
}

BENCH_METRIC(raw_shm_create_unlink_us, "us") {
  const std::string name = raw_shm_name();
  const long n = p.n(50000, 20);
  const auto t0 = now_ns();
  for (long i = 0; i < n; ++i) {
    const int f = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (f < 0 || ::ftruncate(f, 4096) != 0) bench::die("shm_open");
    void* m = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
    if (m == MAP_FAILED) bench::die("mmap");
    ::close(f);
    bench::keep(m);
    ::munmap(m, 4096);
    ::shm_unlink(name.c_str());
  }
  return static_cast<double>(now_ns() - t0) / 1e3 / static_cast<double>(n);
}

BENCH_METRIC(raw_shm_1mb_MBps, "MB/s") {
  const std::string name = raw_shm_name();
  const int fd = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0 || ::ftruncate(fd, kMiB) != 0) bench::die("shm_open");
  auto* seg = static_cast<char*>(::mmap(nullptr, kMiB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  ::close(fd);
  const long n = p.n(5000, 4);
  int to_child[2], to_parent[2];
  if (::pipe(to_child) != 0 || ::pipe(to_parent) != 0) bench::die("pipe");
  const pid_t pid = fork_child([&] {
    const int f = ::shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0);
    auto* s = static_cast<char*>(::mmap(nullptr, kMiB, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0));
    std::vector<char> out(kMiB);
    char c;
    for (long i = 0; i < n; ++i) {
      read_all(to_child[0], &c, 1);
      std::memcpy(out.data(), s, kMiB);
      bench::keep(out.data());
      write_all(to_parent[1], &c, 1);
    }
  });
  std::vector<char> src(kMiB, 1);
  char c = 'x';
  const auto t0 = now_ns();
  for (long i = 0; i < n; ++i) {
    src[0] = static_cast<char>(i);
    std::memcpy(seg, src.data(), kMiB);
    write_all(to_child[1], &c, 1);
    read_all(to_parent[0], &c, 1);
  }
  const auto t1 = now_ns();
  wait_child(pid);
  for (int f : {to_child[0], to_child[1], to_parent[0], to_parent[1]}) ::close(f);
  ::munmap(seg, kMiB);
  ::shm_unlink(name.c_str());
  return static_cast<double>(n) * static_cast<double>(kMiB) / 1e6 /
         (static_cast<double>(t1 - t0) * 1e-9);
}

// ---- blocking round trips (us per round trip); the child echoes ----------------------------

template <class Ping, class Pong>
double pingpong_us(long n, Ping&& ping, Pong&& pong) {
  const pid_t pid = fork_child([&] {
    for (long i = 0; i < n; ++i) pong();
  });
  ping();  // warm-up: the child is running
  const auto t0 = now_ns();
  for (long i = 1; i < n; ++i) ping();
  const auto t1 = now_ns();
  wait_child(pid);
  return static_cast<double>(t1 - t0) / 1e3 / static_cast<double>(n - 1);
}

BENCH_METRIC(unix_socket_pingpong_us, "us") {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) bench::die("socketpair");
  std::uint64_t x = 0;
  const double r = pingpong_us(
      p.n(50000, 50),
      [&] {
        write_all(sv[0], &x, 8);
        read_all(sv[0], &x, 8);
      },
      [&] {
        read_all(sv[1], &x, 8);
        write_all(sv[1], &x, 8);
      });
  ::close(sv[0]);
  ::close(sv[1]);
  return r;
}

BENCH_METRIC(pipe_pingpong_us, "us") {
  int a[2], b[2];
  if (::pipe2(a, O_CLOEXEC) != 0 || ::pipe2(b, O_CLOEXEC) != 0) bench::die("pipe");
  std::uint64_t x = 0;
  const double r = pingpong_us(
      p.n(50000, 50),
      [&] {
        write_all(a[1], &x, 8);
        read_all(b[0], &x, 8);
      },
      [&] {
        read_all(a[0], &x, 8);
        write_all(b[1], &x, 8);
      });
  for (int fd : {a[0], a[1], b[0], b[1]}) ::close(fd);
  return r;
}

BENCH_METRIC(sem_pingpong_us, "us") {
  struct S {
    Sem ping{0}, pong{0};
  };
  Shared<S> s;
  return pingpong_us(
      p.n(50000, 50),
      [&] {
        s->ping.unlock();
        s->pong.lock();
      },
      [&] {
        s->ping.lock();
        s->pong.unlock();
      });
}

BENCH_METRIC(condvar_pingpong_us, "us") {
  struct S {
    pthread_mutex_t m;
    pthread_cond_t c;
    int turn = 0;  // 0: parent's move, 1: child's
  };
  Shared<S> s;
  pthread_mutexattr_t ma;
  pthread_mutexattr_init(&ma);
  pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
  pthread_mutex_init(&s->m, &ma);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
  pthread_cond_init(&s->c, &ca);
  auto move = [&](int mine) {
    pthread_mutex_lock(&s->m);
    while (s->turn != mine) pthread_cond_wait(&s->c, &s->m);
    s->turn = 1 - mine;
    pthread_cond_signal(&s->c);
    pthread_mutex_unlock(&s->m);
  };
  const double r = pingpong_us(
      p.n(50000, 50),
      [&] {
        move(0);
        // wait for the child's answer
        pthread_mutex_lock(&s->m);
        while (s->turn != 0) pthread_cond_wait(&s->c, &s->m);
        pthread_mutex_unlock(&s->m);
      },
      [&] { move(1); });
  pthread_cond_destroy(&s->c);
  pthread_mutex_destroy(&s->m);
  return r;
}

BENCH_METRIC(barrier_2p_us, "us") {
  struct S {
    pthread_barrier_t b;
  };
  Shared<S> s;
  pthread_barrierattr_t a;
  pthread_barrierattr_init(&a);
  pthread_barrierattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  pthread_barrier_init(&s->b, &a, 2);
  const double r = pingpong_us(
      p.n(50000, 50), [&] { pthread_barrier_wait(&s->b); }, [&] { pthread_barrier_wait(&s->b); });
  pthread_barrier_destroy(&s->b);
  return r;
}

// The floor of any cross-process round trip: both sides spin on a shared word (2 CPUs only).
BENCH_METRIC(spin_pingpong_us, "us") {
  bench::require_two_cpus();
  Shared<std::atomic<long>> turn(0);
  const long n = p.n(100'000, 1000);
  return pingpong_us(
      n,
      [&, i = 0L]() mutable {
        turn->store(2 * i + 1, std::memory_order_release);
        while (turn->load(std::memory_order_acquire) != 2 * i + 2) {
        }
        ++i;
      },
      [&, i = 0L]() mutable {
        while (turn->load(std::memory_order_acquire) != 2 * i + 1) {
        }
        turn->store(2 * i + 2, std::memory_order_release);
        ++i;
      });
}

// ---- a 2-worker pipe pool: the floor of Pool.map (tasks/s) ----------------------------------
// Like CPython's Pool without pickling: a writer thread sends chunks of tasks round-robin to the
// workers' task pipes; each worker squares its chunk and writes the results back as one message;
// the main thread collects both result pipes with poll(). A message is [count][count x int64].

double pipe_pool_tasks(long ntasks, long chunk) {
  int task[2][2], result[2][2];
  for (int w = 0; w < 2; ++w) {
    if (::pipe2(task[w], O_CLOEXEC) != 0 || ::pipe2(result[w], O_CLOEXEC) != 0) bench::die("pipe");
  }
  pid_t pids[2];
  for (int w = 0; w < 2; ++w) {
    pids[w] = fork_child([&, w] {
      std::vector<std::int64_t> buf;
      for (;;) {
        std::int64_t count = 0;
        read_all(task[w][0], &count, sizeof count);
        if (count == 0) return;
        buf.resize(static_cast<std::size_t>(count) + 1);
        read_all(task[w][0], buf.data() + 1, static_cast<std::size_t>(count) * 8);
        buf[0] = count;
        for (std::int64_t i = 1; i <= count; ++i) buf[i] *= buf[i];
        write_all(result[w][1], buf.data(), buf.size() * 8);
      }
    });
  }
  for (int w = 0; w < 2; ++w) {
    ::close(task[w][0]);
    ::close(result[w][1]);
  }
  const auto t0 = now_ns();
  std::thread writer([&] {
    std::vector<std::int64_t> msg;
    int w = 0;
    for (long first = 0; first < ntasks; first += chunk, w ^= 1) {
      const long count = std::min(chunk, ntasks - first);
      msg.assign(static_cast<std::size_t>(count) + 1, 0);
      msg[0] = count;
      for (long i = 0; i < count; ++i) msg[static_cast<std::size_t>(i) + 1] = first + i;
      write_all(task[w][1], msg.data(), msg.size() * 8);
    }
    const std::int64_t stop = 0;
    for (int k = 0; k < 2; ++k) write_all(task[k][1], &stop, sizeof stop);
  });
  long got = 0;
  std::int64_t sum = 0;
  std::vector<std::int64_t> buf;
  pollfd fds[2] = {{result[0][0], POLLIN, 0}, {result[1][0], POLLIN, 0}};
  while (got < ntasks) {
    if (fds[0].fd < 0 && fds[1].fd < 0) throw std::runtime_error("a pool worker ended early");
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) bench::die("poll");
    for (int w = 0; w < 2; ++w) {
      if (fds[w].revents & POLLIN) {
        // a message follows
      } else if (fds[w].revents & (POLLHUP | POLLERR)) {
        fds[w].fd = -1;  // that worker is done; the other may still have results buffered
        continue;
      } else {
        continue;
      }
      std::int64_t count = 0;
      read_all(result[w][0], &count, sizeof count);
      buf.resize(static_cast<std::size_t>(count));
      read_all(result[w][0], buf.data(), buf.size() * 8);
      for (std::int64_t v : buf) sum += v;
      got += count;
    }
  }
  const auto t1 = now_ns();
  writer.join();
  for (int w = 0; w < 2; ++w) {
    ::close(task[w][1]);
    ::close(result[w][0]);
    wait_child(pids[w]);
  }
  bench::keep(&sum);
  return static_cast<double>(ntasks) / (static_cast<double>(t1 - t0) * 1e-9);
}

// 100k tasks in CPython's default chunks for 2 workers (ceil(100000 / (2 * 4)) = 12500).
BENCH_METRIC(pipe_pool_tasks_chunked, "tasks/s") {
  const long n = p.n(100'000, 100'000);  // always 100k: the metric is defined for that size
  return pipe_pool_tasks(n, (n + 7) / 8);
}
BENCH_METRIC(pipe_pool_tasks_chunksize1, "tasks/s") {
  return pipe_pool_tasks(p.n(100'000, 1000), 1);
}

// ---- process creation (ms per create + exit + wait) -----------------------------------------

std::string self_exe() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) bench::die("readlink");
  return std::string(buf, static_cast<std::size_t>(n));
}

// The binary that posix_spawn_mpbin_wait_ms runs: mp_bench (set by run.py), else this one.
std::string mp_exe() {
  const char* e = std::getenv("MP_BENCH_EXE");
  return e && *e ? e : self_exe();
}

// n sequential start + wait, or fewer (at least 3) when the time budget runs out.
template <class Start>
double per_process_ms(const Params& p, long n, Start&& start) {
  const auto t0 = now_ns();
  const auto budget = static_cast<std::int64_t>(p.budget_s() * 1e9);
  long done = 0;
  while (done < n && (done < 3 || now_ns() - t0 < budget)) {
    const pid_t pid = start();
    int status = 0;
    if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
      throw std::runtime_error("the child did not exit cleanly");
    ++done;
  }
  return static_cast<double>(now_ns() - t0) / 1e6 / static_cast<double>(done);
}

BENCH_METRIC(fork_exit_wait_ms, "ms") {
  return per_process_ms(p, p.n(1000, 5), [] {
    const pid_t pid = ::fork();
    if (pid == 0) ::_exit(0);
    if (pid < 0) bench::die("fork");
    return pid;
  });
}

// The floor of Pool(4) create + close + join under fork: 4 forked children that live until all 4
// exist (each blocks reading a pipe, as a pool's workers wait for work), then are told to end at
// once (the pipe's write end closed) and are waited for. Unlike fork_exit_wait_ms, the parent's
// pages stay shared with living children while it forks the next ones, so its writes between
// forks are copy-on-write faults, as in a pool.
BENCH_METRIC(fork4_live_release_wait_ms, "ms") {
  const long n = p.n(100, 3);
  const auto budget = static_cast<std::int64_t>(p.budget_s() * 1e9);
  const auto t0 = bench::now_ns();
  long done = 0;
  while (done < n && (done < 3 || bench::now_ns() - t0 < budget)) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) bench::die("pipe2");
    pid_t pids[4];
    for (pid_t& pid : pids) {
      pid = ::fork();
      if (pid < 0) bench::die("fork");
      if (pid == 0) {
        ::close(fds[1]);
        char c;
        while (::read(fds[0], &c, 1) < 0 && errno == EINTR) {
        }
        ::_exit(0);
      }
    }
    ::close(fds[0]);
    ::close(fds[1]);
    for (pid_t pid : pids) bench::wait_child(pid);
    ++done;
  }
  return static_cast<double>(bench::now_ns() - t0) / 1e6 / static_cast<double>(done);
}

pid_t spawn_exit_now(const std::string& exe) {
  char* argv[] = {const_cast<char*>(exe.c_str()), const_cast<char*>("--exit-now"), nullptr};
  pid_t pid = 0;
  if (const int e = ::posix_spawn(&pid, exe.c_str(), nullptr, nullptr, argv, environ)) {
    errno = e;
    bench::die("posix_spawn");
  }
  return pid;
}

BENCH_METRIC(posix_spawn_wait_ms, "ms") {
  const std::string exe = self_exe();
  return per_process_ms(p, p.n(300, 3), [&] { return spawn_exit_now(exe); });
}
BENCH_METRIC(posix_spawn_mpbin_wait_ms, "ms") {
  const std::string exe = mp_exe();
  return per_process_ms(p, p.n(300, 3), [&] { return spawn_exit_now(exe); });
}
// The same from a parent holding 256 MiB (posix_spawn does not copy the parent's page tables).
BENCH_METRIC(posix_spawn_mpbin_big_ms, "ms") {
  const std::string exe = mp_exe();
  bench::Ballast ballast(bench::kBallastMiB);
  return per_process_ms(p, p.n(300, 3), [&] { return spawn_exit_now(exe); });
}
BENCH_METRIC(fork_exit_wait_big_ms, "ms") {
  bench::Ballast ballast(bench::kBallastMiB);
  return per_process_ms(p, p.n(300, 3), [] {
    const pid_t pid = ::fork();
    if (pid == 0) ::_exit(0);
    if (pid < 0) bench::die("fork");
    return pid;
  });
}
BENCH_METRIC(vfork_exec_wait_ms, "ms") {
  const std::string exe = self_exe();
  char* argv[] = {const_cast<char*>(exe.c_str()), const_cast<char*>("--exit-now"), nullptr};
  return per_process_ms(p, p.n(300, 3), [&] {
    const pid_t pid = ::vfork();
    if (pid == 0) {
      ::execv(argv[0], argv);
      ::_exit(127);
    }
    if (pid < 0) bench::die("vfork");
    return pid;
  });
}
BENCH_METRIC(fork_exec_wait_ms, "ms") {
  const std::string exe = self_exe();
  char* argv[] = {const_cast<char*>(exe.c_str()), const_cast<char*>("--exit-now"), nullptr};
  return per_process_ms(p, p.n(300, 3), [&] {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::execv(argv[0], argv);
      ::_exit(127);
    }
    if (pid < 0) bench::die("fork");
    return pid;
  });
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--exit-now") == 0) return 0;
  return bench::run_main(argc, argv);
}
