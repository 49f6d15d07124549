// Windows part of the cross-process wait object (platform/wait.hpp wait_on_address/wake_address;
// contract in docs/DESIGN.md). WaitOnAddress wakes only threads of the calling process, so a word
// in shared memory is waited on with a named semaphore per (section, word): a waiter counts
// itself in the section header's bucket of the word, re-checks the word, then waits on the word's
// semaphore; a waker that sees waiters in the bucket releases as many tokens as it wakes, at most
// the bucket's count (a token left when fewer waited on this word is a later spurious wake-up,
// which the contract allows). Waking one waiter wakes one process, not every waiter of the
// bucket: 50 processes taking turns on a Lock no longer wake 49 at every release. A waiter killed while
// counted (TerminateProcess) stays counted: waiters also record their process in the bucket's
// slots, and a waiter about to pass a token on to such a peer removes the dead one's count first.
// Process-private words use WaitOnAddress. Also the process and thread identities the locks
// record.
#include <climits>
#include <cstdio>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

#include "platform/wait.hpp"
#include "platform/win32.hpp"

namespace mp::platform {

namespace {

std::mutex g_sems_lock;
std::map<std::pair<std::uint64_t, std::size_t>, HANDLE>& semaphores() {
  static auto* m = new std::map<std::pair<std::uint64_t, std::size_t>, HANDLE>;
  return *m;
}

// The word's semaphore (by its offset in the section), created by the first process that needs
// it and opened by the others (by name: a Local\ name is seen by the processes of the same
// session).
HANDLE semaphore(std::uint64_t key, std::uint64_t offset) {
  std::lock_guard lock(g_sems_lock);
  auto& m = semaphores();
  const auto word = static_cast<std::size_t>(offset / sizeof(std::uint32_t));
  if (auto it = m.find({key, word}); it != m.end()) return it->second;
  wchar_t name[64];
  std::swprintf(name, 64, L"Local\\mp-wait-%016llx-%llx", static_cast<unsigned long long>(key),
                static_cast<unsigned long long>(word));
  HANDLE h = ::CreateSemaphoreW(nullptr, 0, LONG_MAX, name);
  if (!h) throw_last_error("cannot create the wait semaphore");
  m.emplace(std::make_pair(key, word), h);
  return h;
}

std::size_t bucket_of(std::uint64_t offset) noexcept {
  return static_cast<std::size_t>((offset / sizeof(std::uint32_t)) % win32::kWaitBuckets);
}

// The bucket's slots (win32::SectionHeader::waiter_slots): [pid: 32][threads of it waiting: 32].
using Slots = std::atomic<std::uint64_t>[win32::kWaiterSlots];
constexpr std::uint64_t kThreadsMask = 0xffffffffu;

// Counts a waiting thread of process `pid` in its slot, or in a free one; false if none is free.
bool count_in_slot(Slots& slots, std::uint64_t pid) noexcept {
  for (auto& slot : slots)
    for (std::uint64_t v = slot.load(std::memory_order_relaxed); (v >> 32) == pid;)
      if (slot.compare_exchange_weak(v, v + 1, std::memory_order_seq_cst)) return true;
  for (auto& slot : slots)
    if (std::uint64_t v = 0;
        slot.compare_exchange_strong(v, (pid << 32) | 1, std::memory_order_seq_cst))
      return true;
  return false;
}

void uncount_in_slot(Slots& slots, std::uint64_t pid) noexcept {
  for (auto& slot : slots)
    for (std::uint64_t v = slot.load(std::memory_order_relaxed);
         (v >> 32) == pid && (v & kThreadsMask) != 0;)
      if (slot.compare_exchange_weak(v, (v & kThreadsMask) == 1 ? 0 : v - 1,
                                     std::memory_order_seq_cst))
        return;
}

// Removes the counts of processes that ended while waiting (killed: they never uncounted).
void remove_dead_waiters(Slots& slots, std::atomic<std::uint32_t>& waiters,
                         std::uint64_t me) noexcept {
  for (auto& slot : slots) {
    std::uint64_t v = slot.load(std::memory_order_seq_cst);
    if (v == 0 || (v >> 32) == me || !process_dead(static_cast<int>(v >> 32))) continue;
    if (slot.compare_exchange_strong(v, 0, std::memory_order_seq_cst))
      waiters.fetch_sub(static_cast<std::uint32_t>(v & kThreadsMask), std::memory_order_seq_cst);
  }
}

}  // namespace

namespace win32 {
void release_wait_objects(std::uint64_t key) noexcept {
  std::lock_guard lock(g_sems_lock);
  auto& m = semaphores();
  for (auto it = m.lower_bound({key, 0}); it != m.end() && it->first.first == key;) {
    ::CloseHandle(it->second);
    it = m.erase(it);
  }
}
}  // namespace win32

bool wait_on_address(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                     const Nanos* timeout) {
  const DWORD ms = win32::wait_millis(timeout);
  const auto shared = win32::locate_shared(word);
  if (!shared) {
    if (::WaitOnAddress(word, &expected, sizeof expected, ms)) return true;
    if (::GetLastError() == ERROR_TIMEOUT) return false;
    throw_last_error("WaitOnAddress");
  }
  const std::size_t bucket = bucket_of(shared->offset);
  auto& waiters = shared->header->waiters[bucket];
  auto& gen = shared->header->wake_gen[bucket];
  Slots& slots = shared->header->waiter_slots[bucket];
  const std::uint64_t me = ::GetCurrentProcessId();
  const HANDLE sem = semaphore(shared->header->key, shared->offset);
  // Dekker with wake_address: the waker changes the word then reads `waiters`; the waiter counts
  // itself then reads the word. One of them sees the other's write (both seq_cst).
  waiters.fetch_add(1, std::memory_order_seq_cst);
  const bool slotted = count_in_slot(slots, me);
  auto leave = [&] {
    if (slotted) uncount_in_slot(slots, me);
    waiters.fetch_sub(1, std::memory_order_seq_cst);
  };
  const std::uint32_t entered = gen.load(std::memory_order_seq_cst);
  if (word->load(std::memory_order_seq_cst) != expected) {
    leave();
    return true;
  }
  const ULONGLONG end = ms == INFINITE ? 0 : ::GetTickCount64() + ms;
  for (unsigned passes = 0;; ++passes) {
    DWORD left = INFINITE;
    if (ms != INFINITE) {
      const ULONGLONG now = ::GetTickCount64();
      left = now >= end ? 0 : static_cast<DWORD>(end - now);
    }
    const DWORD r = ::WaitForSingleObject(sem, left);
    if (r == WAIT_OBJECT_0) {
      // A token released before this waiter counted itself was meant for the waiters counted
      // then (a waker that waits at once would otherwise take its own wake-up from its peer):
      // pass it on, unless the word changed or no one else is counted (a token a timed-out
      // waiter left) but the dead.
      auto others = [&] { return waiters.load(std::memory_order_seq_cst) > 1; };
      if (gen.load(std::memory_order_seq_cst) == entered &&
          word->load(std::memory_order_seq_cst) == expected && others() &&
          (remove_dead_waiters(slots, waiters, me), others())) {
        ::ReleaseSemaphore(sem, 1, nullptr);
        if (left == 0) break;  // the time is up; the token stays for the others
        // A peer that counted itself but is not yet waiting gets the CPU (one killed without a
        // slot cannot be told from it: then this wait polls until it is woken or times out).
        if (passes < 16)
          ::SwitchToThread();
        else
          ::Sleep(1);
        continue;
      }
      leave();
      return true;
    }
    leave();
    if (r == WAIT_TIMEOUT) return false;
    throw_last_error("wait on a shared word");
  }
  leave();
  return false;
}

void wake_address(std::atomic<std::uint32_t>* word, int count) {
  const auto shared = win32::locate_shared(word);
  if (!shared) {
    if (count == 1)
      ::WakeByAddressSingle(word);
    else
      ::WakeByAddressAll(word);
    return;
  }
  const std::size_t bucket = bucket_of(shared->offset);
  const std::uint32_t n = shared->header->waiters[bucket].load(std::memory_order_seq_cst);
  if (n == 0) return;
  shared->header->wake_gen[bucket].fetch_add(1, std::memory_order_seq_cst);
  // `count` tokens, at most one per counted waiter of the bucket (the waiters of this word are
  // among them). A token no waiter of this word takes (the bucket's waiters waited on other
  // words, or one timed out) is a later spurious wake-up.
  const HANDLE sem = semaphore(shared->header->key, shared->offset);
  const std::uint32_t tokens =
      std::min<std::uint32_t>(n, count <= 0 ? 0u : static_cast<std::uint32_t>(count));
  if (tokens == 0) return;
  ::ReleaseSemaphore(sem, static_cast<LONG>(std::min<std::uint32_t>(tokens, LONG_MAX / 2)),
                     nullptr);
}

bool process_dead(int pid) noexcept {
  if (pid <= 0) return false;
  HANDLE h = ::OpenProcess(SYNCHRONIZE, FALSE, static_cast<DWORD>(pid));
  if (!h) return ::GetLastError() == ERROR_INVALID_PARAMETER;  // no such process
  const bool dead = ::WaitForSingleObject(h, 0) == WAIT_OBJECT_0;
  ::CloseHandle(h);
  return dead;
}

int current_pid() noexcept { return static_cast<int>(::GetCurrentProcessId()); }
int current_tid() noexcept { return static_cast<int>(::GetCurrentThreadId()); }

void yield_cpu() noexcept { YieldProcessor(); }

void sleep_for(Nanos d) noexcept { std::this_thread::sleep_for(d); }

bool several_cpus() noexcept {
  static const bool several = [] {
    DWORD_PTR process = 0, system = 0;
    if (!::GetProcessAffinityMask(::GetCurrentProcess(), &process, &system)) return true;
    return (process & (process - 1)) != 0;
  }();
  return several;
}

// Windows has no fork: the caches are filled once and stay right.
std::atomic<int> g_pid_cache{0};
thread_local constinit int t_tid_cache = 0;
int read_pid_slow() noexcept {
  const int pid = current_pid();
  g_pid_cache.store(pid, std::memory_order_relaxed);
  return pid;
}
int read_tid_slow() noexcept {
  t_tid_cache = current_tid();
  return t_tid_cache;
}
void hold_across_fork(std::mutex&) noexcept {}  // no fork on Windows
int current_cpu() noexcept { return static_cast<int>(::GetCurrentProcessorNumber()); }

}  // namespace mp::platform
