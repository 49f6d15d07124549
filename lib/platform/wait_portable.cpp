// Portable POSIX implementation of what wait_linux.cpp does (MP_PLATFORM_POSIX_FALLBACKS): the
// wait object on process-shared pthread mutex + condition variable buckets, process liveness by
// kill(0)/waitid, and thread ids without gettid. macOS's real wait object would be
// os_sync_wait_on_address / os_sync_wake_by_address_all with the SHARED flags (macOS 14.4+): no
// buckets, no header; this file is what every POSIX system can do.
//
// A word in a view from map_shared() of an anonymous segment hashes to one of the 64 buckets in
// that segment's hidden header (shared_memory_portable.cpp); a word anywhere else (private memory)
// to one of 64 process-private buckets. wait: lock the bucket, compare the word, sleep on the
// condition variable (which releases the lock atomically). wake: lock, broadcast, unlock. The
// waker changed the word before it locks, so a waiter either reads the new value under the lock
// or is asleep when the broadcast comes: no lost wake-up (DESIGN.md §6, rule 2). Broadcast, not
// signal: words sharing a bucket must not take each other's wake-ups (rule 3 allows the spurious
// ones). Rule 5: the mutex is robust where the system has robust mutexes (not macOS), so a
// process killed inside the few instructions it holds it costs nothing; a process killed while
// asleep holds nothing.
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>

#include "platform/portable.hpp"
#include "platform/process.hpp"
#include "platform/wait.hpp"

namespace mp::platform {

namespace portable {

namespace {

#if defined(_POSIX_CLOCK_SELECTION) && _POSIX_CLOCK_SELECTION > 0
constexpr clockid_t kWaitClock = CLOCK_MONOTONIC;  // immune to wall-clock steps
#else
constexpr clockid_t kWaitClock = CLOCK_REALTIME;  // no pthread_condattr_setclock (macOS)
#endif

void check(int err) {
  if (err != 0) throw_error(err, "cannot make a process-shared wait bucket");
}

WaitBucket g_private_buckets[kWaitBuckets];

void init_private_buckets() {
  for (WaitBucket& b : g_private_buckets) init_bucket(b, false);
}

// A forked child has only the forking thread: a private bucket another thread held at the fork
// is made afresh (nobody else can be using it).
void reinit_private_buckets_in_child() noexcept {
  try {
    init_private_buckets();
  } catch (...) {
    std::abort();
  }
}

// At load time, on one thread (see wait_posix.cpp for why not lazily).
[[maybe_unused]] const bool g_private_ready =
    (init_private_buckets(), at_fork_in_child(&reinit_private_buckets_in_child), true);

std::size_t bucket_index(std::uint64_t key) noexcept {
  return static_cast<std::size_t>((key * 0x9e3779b97f4a7c15ull) >> 58);  // top 6 bits: 64
}
static_assert(kWaitBuckets == 64);

WaitBucket& bucket_of(const void* word) noexcept {
  if (const auto shared = locate_shared(word))
    return shared->header->buckets[bucket_index(shared->offset >> 2)];
  return g_private_buckets[bucket_index(reinterpret_cast<std::uintptr_t>(word) >> 2)];
}

// Locks a bucket; a holder that died inside it (robust mutexes only) leaves nothing to repair.
void lock(WaitBucket& b) {
  const int r = ::pthread_mutex_lock(&b.mutex);
#ifdef EOWNERDEAD
  if (r == EOWNERDEAD) {
    ::pthread_mutex_consistent(&b.mutex);
    return;
  }
#endif
  if (r != 0) throw_error(r, "wait bucket lock");
}

timespec deadline_after(Nanos timeout) noexcept {
  timespec now{};
  ::clock_gettime(kWaitClock, &now);
  constexpr std::int64_t kMaxSeconds = std::int64_t{1} << 40;  // far enough, no time_t overflow
  const std::int64_t ns = timeout < Nanos::zero() ? 0 : timeout.count();
  std::int64_t sec = ns / 1000000000;
  long nsec = now.tv_nsec + static_cast<long>(ns % 1000000000);
  if (nsec >= 1000000000) {
    nsec -= 1000000000;
    ++sec;
  }
  timespec at{};
  at.tv_sec = sec > kMaxSeconds ? now.tv_sec + static_cast<time_t>(kMaxSeconds)
                                : now.tv_sec + static_cast<time_t>(sec);
  at.tv_nsec = nsec;
  return at;
}

}  // namespace

void init_bucket(WaitBucket& b, bool shared) {
  pthread_mutexattr_t ma;
  check(::pthread_mutexattr_init(&ma));
  int err = 0;
  if (shared) {
    err = ::pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
#if defined(PTHREAD_MUTEX_ROBUST) || defined(__GLIBC__)
    if (err == 0) err = ::pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
#endif
  }
  if (err == 0) err = ::pthread_mutex_init(&b.mutex, &ma);
  ::pthread_mutexattr_destroy(&ma);
  check(err);
  pthread_condattr_t ca;
  check(::pthread_condattr_init(&ca));
  if (shared) err = ::pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
#if defined(_POSIX_CLOCK_SELECTION) && _POSIX_CLOCK_SELECTION > 0
  if (err == 0) err = ::pthread_condattr_setclock(&ca, kWaitClock);
#endif
  if (err == 0) err = ::pthread_cond_init(&b.cond, &ca);
  ::pthread_condattr_destroy(&ca);
  check(err);
}

}  // namespace portable

bool wait_on_address(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                     const Nanos* timeout) {
  portable::WaitBucket& b = portable::bucket_of(word);
  const timespec at = timeout ? portable::deadline_after(*timeout) : timespec{};
  portable::lock(b);
  if (word->load(std::memory_order_seq_cst) != expected) {
    ::pthread_mutex_unlock(&b.mutex);
    return true;
  }
  const int r = timeout ? ::pthread_cond_timedwait(&b.cond, &b.mutex, &at)
                        : ::pthread_cond_wait(&b.cond, &b.mutex);
#ifdef EOWNERDEAD
  if (r == EOWNERDEAD) ::pthread_mutex_consistent(&b.mutex);
#endif
  ::pthread_mutex_unlock(&b.mutex);
  return r != ETIMEDOUT;
}

void wake_address(std::atomic<std::uint32_t>* word, int) {
  portable::WaitBucket& b = portable::bucket_of(word);
  portable::lock(b);
  ::pthread_cond_broadcast(&b.cond);
  ::pthread_mutex_unlock(&b.mutex);
}

bool process_dead(int pid) noexcept {
  if (pid <= 0) return false;
  if (::kill(static_cast<pid_t>(pid), 0) != 0) return errno == ESRCH;  // EPERM: alive
  // kill() succeeds on a zombie. Our own child is seen as ended without being reaped (WNOWAIT);
  // another process's zombie looks alive until its parent reaps it (pidfds and /proc see it as
  // ended: wait_linux.cpp).
  siginfo_t info{};
  if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0)
    return info.si_pid == static_cast<pid_t>(pid);
  return false;
}

namespace {
// Thread ids numbered in this process from 1 (POSIX has no gettid): unique among the live
// threads of the process, which is all lock ownership needs.
constinit std::atomic<int> g_next_tid{1};
}  // namespace

int current_tid() noexcept { return g_next_tid.fetch_add(1, std::memory_order_relaxed); }

int current_cpu() noexcept { return -1; }  // unknown: spinners then never assume a shared CPU

}  // namespace mp::platform
