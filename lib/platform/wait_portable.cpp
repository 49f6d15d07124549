// Portable POSIX implementation of what wait_linux.cpp does (MP_PLATFORM_POSIX_FALLBACKS): the
// wait object on process-shared semaphores, process liveness by kill(0)/waitid, and thread ids
// without gettid. macOS's real wait object would be os_sync_wait_on_address /
// os_sync_wake_by_address_any/all with the SHARED flags (macOS 14.4+; macOS has no unnamed
// process-shared semaphores): no header, no slots.
//
// A sleeper takes a slot of the word's table (the hidden header of the segment the word lies in,
// shared_memory_portable.cpp; a process-private table for any other word), writes the word's key
// into it, counts itself, re-checks the word and sleeps on the slot's own semaphore. A waker
// changes the word, then (the table counts sleepers) posts the semaphore of each slot holding
// that key. Both sides are seq_cst, so one sees the other's write: no lost wake-up (DESIGN.md §6,
// rule 2); a wake reaches only sleepers of its word (rule 3). Rule 5: a process killed asleep
// holds a slot, which the next sleeper that finds no free slot takes back (process_dead); nothing
// waits for it. Not pthread condition variables: glibc's broadcast waits for every sleeper of the
// previous group to leave pthread_cond_wait, which a killed sleeper never does (a hang found by
// ConnectionTest.SenderKilledMidSendLeavesTheRingUsable).
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>

#include "platform/portable.hpp"
#include "platform/process.hpp"
#include "platform/wait.hpp"

namespace mp::platform {

namespace portable {

namespace {

WaitTable g_private_table;

void init_private_table() { init_wait_table(g_private_table, false); }

// A forked child has only the forking thread: the slots other threads held are freed.
void reinit_private_table_in_child() noexcept {
  try {
    init_private_table();
  } catch (...) {
    std::abort();
  }
}

// At load time, on one thread (see wait_posix.cpp for why not lazily).
[[maybe_unused]] const bool g_private_ready =
    (init_private_table(), at_fork_in_child(&reinit_private_table_in_child), true);

struct Target {
  WaitTable* table;
  std::uint64_t key;
};

Target target_of(const void* word) noexcept {
  if (const auto shared = locate_shared(word)) return {&shared->header->waits, shared->offset};
  return {&g_private_table, reinterpret_cast<std::uintptr_t>(word)};
}

// A free slot, owned by this process from here on; null when every slot is in use by a live
// process.
// When a process last looked for dead sleepers' slots (steady clock, ns): a full table is looked
// through at most every kReclaimInterval, not by every sleeper that finds it full.
std::atomic<std::int64_t> g_last_reclaim{0};
constexpr std::int64_t kReclaimInterval = 50'000'000;

bool may_reclaim() noexcept {
  const std::int64_t now = Clock::now().time_since_epoch().count();
  std::int64_t last = g_last_reclaim.load(std::memory_order_relaxed);
  return now - last >= kReclaimInterval &&
         g_last_reclaim.compare_exchange_strong(last, now, std::memory_order_relaxed);
}

WaitSlot* claim(WaitTable& t, std::uint64_t key) noexcept {
  const auto me = static_cast<std::uint32_t>(cached_pid());
  const std::size_t start = static_cast<std::size_t>((key >> 2) % kWaitSlots);
  for (int pass = 0; pass < 2; ++pass) {
    if (pass == 1 && !may_reclaim()) break;
    for (std::size_t i = 0; i < kWaitSlots; ++i) {
      WaitSlot& s = t.slots[(start + i) % kWaitSlots];
      std::uint32_t owner = s.owner.load(std::memory_order_relaxed);
      // The second pass takes back slots of dead sleepers (a system call each: only when full).
      if (owner != 0 && (pass == 0 || owner == me || !process_dead(static_cast<int>(owner))))
        continue;
      if (s.owner.compare_exchange_strong(owner, me, std::memory_order_acquire)) {
        if (owner != 0) t.sleepers.fetch_sub(1, std::memory_order_relaxed);  // the dead one's
        while (::sem_trywait(&s.sem) == 0) {
        }  // posts meant for an earlier sleeper
        return &s;
      }
    }
  }
  return nullptr;
}

void release(WaitTable& t, WaitSlot& s) noexcept {
  s.key.store(~std::uint64_t{0}, std::memory_order_relaxed);
  t.sleepers.fetch_sub(1, std::memory_order_seq_cst);
  s.owner.store(0, std::memory_order_release);
}

timespec realtime_after(Nanos timeout) noexcept {
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);                       // sem_timedwait's clock
  constexpr std::int64_t kMaxSeconds = std::int64_t{1} << 40;  // far enough, no time_t overflow
  const std::int64_t ns = timeout < Nanos::zero() ? 0 : timeout.count();
  std::int64_t sec = ns / 1000000000;
  long nsec = now.tv_nsec + static_cast<long>(ns % 1000000000);
  if (nsec >= 1000000000) {
    nsec -= 1000000000;
    ++sec;
  }
  timespec at{};
  at.tv_sec = now.tv_sec + static_cast<time_t>(std::min(sec, kMaxSeconds));
  at.tv_nsec = nsec;
  return at;
}

}  // namespace

void init_wait_table(WaitTable& t, bool shared) {
  t.sleepers.store(0, std::memory_order_relaxed);
  for (WaitSlot& s : t.slots) {
    s.owner.store(0, std::memory_order_relaxed);
    s.key.store(~std::uint64_t{0}, std::memory_order_relaxed);
    if (::sem_init(&s.sem, shared ? 1 : 0, 0) != 0)
      throw_last_error("cannot make a process-shared semaphore");
  }
}

}  // namespace portable

bool wait_on_address(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                     const Nanos* timeout) {
  const portable::Target t = portable::target_of(word);
  portable::WaitSlot* s = portable::claim(*t.table, t.key);
  if (!s) {
    // More sleepers than slots: poll the word in short sleeps (spurious returns are allowed).
    if (word->load(std::memory_order_seq_cst) != expected) return true;
    const Nanos slice = std::chrono::milliseconds(1);
    if (timeout && *timeout <= slice) {
      sleep_for(std::max(*timeout, Nanos::zero()));
      return word->load(std::memory_order_seq_cst) != expected;
    }
    sleep_for(slice);
    return true;
  }
  s->key.store(t.key, std::memory_order_seq_cst);
  t.table->sleepers.fetch_add(1, std::memory_order_seq_cst);
  if (word->load(std::memory_order_seq_cst) != expected) {
    portable::release(*t.table, *s);
    return true;
  }
  int r;
  if (timeout) {
    const timespec at = portable::realtime_after(*timeout);
    r = ::sem_timedwait(&s->sem, &at);
  } else {
    r = ::sem_wait(&s->sem);
  }
  const int err = r == 0 ? 0 : errno;
  portable::release(*t.table, *s);
  if (err == ETIMEDOUT) return false;
  if (err != 0 && err != EINTR) throw_error(err, "wait on a shared word");
  return true;
}

void wake_address(std::atomic<std::uint32_t>* word, int count) {
  const portable::Target t = portable::target_of(word);
  // The caller's change of the word is ordered before the look at the sleepers (Dekker with the
  // sleeper's count-then-check, whatever order the caller stored the word with).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (t.table->sleepers.load(std::memory_order_seq_cst) == 0) return;
  for (portable::WaitSlot& s : t.table->slots) {
    if (count <= 0) return;
    if (s.owner.load(std::memory_order_acquire) != 0 &&
        s.key.load(std::memory_order_seq_cst) == t.key) {
      ::sem_post(&s.sem);
      --count;
    }
  }
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
