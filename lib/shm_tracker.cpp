// The named shared memory tracker (lib/shm_tracker.hpp).
#include "shm_tracker.hpp"

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <new>

#include "support/futex_lock.hpp"
#include "support/load_time_global.hpp"
#include "platform/handle.hpp"
#include "platform/io.hpp"
#include "platform/process.hpp"
#include "platform/shared_memory.hpp"
#include "platform/wait.hpp"

namespace mp::detail::shm_tracker {
namespace {

struct Entry {
  // 0: free. Written last when an entry is filled and first when it is freed, so the watcher
  // (which reads after every writer has ended, possibly in the middle of an update) never sees a
  // half-written name as valid.
  std::atomic<std::uint64_t> serial;
  std::uint64_t dev;
  std::uint64_t ino;
  std::uint32_t size;
  char name[platform::kMaxShmName + 1];
};

// Capacity: names registered at once per process. The mapping is sparse: a page is touched only
// when an entry in it is first used (a few KiB for a typical program).
constexpr std::uint32_t kCapacity = 1u << 16;

struct Registry {
  FutexLock lock;
  std::uint32_t used;  // high-water mark of the slots ever used
  std::uint32_t live;
  std::uint64_t last_serial;
  Entry entries[kCapacity];
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

// In the watcher, once every writer has ended: unlink what is still listed.
void cleanup(void* context) {
  auto* r = static_cast<Registry*>(context);
  const std::uint32_t used = r->used < kCapacity ? r->used : kCapacity;
  for (std::uint32_t i = 0; i < used; ++i) {
    Entry& e = r->entries[i];
    if (e.serial.load(std::memory_order_acquire) == 0) continue;
    platform::unlink_shm_if_same(e.name, e.size < sizeof e.name ? e.size : 0, {e.dev, e.ino});
  }
}

// This process's registry, or null (also in a forked child until it registers something itself:
// it must not extend its parent's registry, whose watcher follows the parent).
// Made while the library loads (no initialization guard a fork could copy half-taken). Its mutex
// is re-made in a forked child rather than held across fork: the watcher is forked under it.
struct Local {
  Local();
  std::mutex mutex;  // guards starting a registry; re-made in a forked child
  Registry* registry = nullptr;
  int pid = 0;
};
MP_LOAD_TIME_GLOBAL(Local, g_local);
Local& local() { return g_local.get(); }
Local::Local() {
  platform::at_fork_in_child([] { new (&local().mutex) std::mutex; });
}

Registry* own_registry() {
  Local& l = local();
  std::lock_guard lk(l.mutex);
  const int pid = platform::cached_pid();
  if (l.registry && l.pid == pid) return l.registry;
  const platform::Handle fd = platform::create_shared_memory(sizeof(Registry));
  void* memory = nullptr;
  try {
    memory = platform::map_shared(fd, sizeof(Registry));
  } catch (...) {
    platform::close_handle(fd);
    throw;
  }
  platform::close_handle(fd);
  // Zero-filled memory is a valid empty registry (constructing it would touch every page).
  auto* r = static_cast<Registry*>(memory);
  auto [read_end, write_end] = platform::make_pipe();
  try {
    platform::start_shm_watcher(read_end, &cleanup, r);
  } catch (...) {
    platform::close_handle(read_end);
    platform::close_handle(write_end);
    platform::unmap(memory, sizeof(Registry));
    throw;
  }
  platform::close_handle(read_end);
  // The write end stays open (close-on-exec) for the life of this process and its forked
  // children: its last holder's end is the watcher's signal.
  (void)write_end;
  l.registry = r;
  l.pid = pid;
  return r;
}

}  // namespace

Ticket register_segment(const std::string& name, platform::ShmFileId id) {
  platform::check_shm_name(name);
  Registry* r = own_registry();
  FutexLockGuard guard(r->lock, FutexLockGuard::acquire_now);
  std::uint32_t slot = 0;
  while (slot < r->used && r->entries[slot].serial.load(std::memory_order_relaxed) != 0) ++slot;
  if (slot == kCapacity)
    platform::throw_errno(ENOSPC, "too many tracked shared memory segments in this process");
  Entry& e = r->entries[slot];
  std::memcpy(e.name, name.data(), name.size());
  e.name[name.size()] = '\0';
  e.size = static_cast<std::uint32_t>(name.size());
  e.dev = id.dev;
  e.ino = id.ino;
  const std::uint64_t serial = ++r->last_serial;
  e.serial.store(serial, std::memory_order_release);
  if (slot == r->used) ++r->used;
  ++r->live;
  return Ticket{r, slot, serial};
}

void unregister_segment(const Ticket& ticket) noexcept {
  if (!ticket.registry || ticket.serial == 0 || ticket.slot >= kCapacity) return;
  auto* r = static_cast<Registry*>(ticket.registry);
  FutexLockGuard guard(r->lock);
  try {
    guard.acquire(nullptr);
  } catch (...) {
    return;
  }
  Entry& e = r->entries[ticket.slot];
  std::uint64_t expected = ticket.serial;
  if (e.serial.compare_exchange_strong(expected, 0, std::memory_order_acq_rel)) --r->live;
}

std::size_t registered_count() noexcept {
  Local& l = local();
  std::lock_guard lk(l.mutex);
  if (!l.registry || l.pid != platform::cached_pid()) return 0;
  return l.registry->live;
}

}  // namespace mp::detail::shm_tracker
