// mp::detail::QueueCore — the shared-memory ring behind Queue, JoinableQueue and SimpleQueue
// (CPython: multiprocessing/queues.py). The design is described in include/mp/queues.hpp.
#include "mp/queues.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <tuple>
#include <utility>

#include "heap_impl.hpp"
#include "support/deadline.hpp"
#include "support/event_count.hpp"
#include "support/forced_unwind.hpp"
#include "support/futex_lock.hpp"
#include "queue_faults.hpp"
#include "queue_spin.hpp"
#include "support/spin.hpp"
#include "support/thread_object.hpp"
#include "support/unique_handle.hpp"
#include "platform/handle.hpp"
#include "platform/handle_passing.hpp"
#include "platform/io.hpp"
#include "platform/shared_memory.hpp"
#include "platform/wait.hpp"

namespace mp::detail {

void (*queue_fault)(QueueFault) = nullptr;

namespace {

void fault_point(QueueFault point) {
  if (queue_fault) queue_fault(point);
}

using Nanos = std::chrono::nanoseconds;
using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kMagic = 0x6575657571706d32;  // "2mpqueue"
constexpr std::size_t kHeaderBytes = 4096;            // the rings start on the next page
constexpr unsigned kRings = 2;
// A ring word: the count of items (24 bits, wrapping) and the byte position (40 bits, wrapping).
constexpr unsigned kPosBits = 40;
constexpr std::uint64_t kPosMask = (std::uint64_t{1} << kPosBits) - 1;
constexpr std::uint64_t kCountMask = (std::uint64_t{1} << 24) - 1;
// Switch frames are numbered modulo 2^23.
constexpr std::uint32_t kSeqMask = (std::uint32_t{1} << 23) - 1;
// Spinning before a sleep (lib/support/spin.hpp), adapted per thread and side.
constinit thread_local Spinner t_get_spin, t_put_spin;
}  // namespace

void rest_queue_get_spin() noexcept { t_get_spin.rest(); }

namespace {
// A producer past this many bytes of its ring moves to the other ring as soon as that one is
// empty, restarting it at its start: while consumers keep up, items cycle through the first few
// MiB of the two rings, whose pages stay mapped and whose bytes stay in the CPUs' caches (a byte
// of a 64 MiB ring walked end to end is a cache miss on both sides). No capacity is given up for
// it: when consumers fall behind, a producer fills its ring to the end and then the other one.
constexpr std::uint64_t kHotBytes = std::uint64_t{4} << 20;
// A producer at that point waits for the other ring to empty while consumers make progress, but
// not kProgressWindow without seeing a consumer remove something, nor kMaxHotWait in all: then it
// goes on in its ring (a queue no one reads fills up about as fast as ever, and a burst of puts is
// not held to the consumers' pace for long) and does not wait again before its next switch.
constexpr std::chrono::microseconds kProgressWindow{200};
// A recycling queue's producers switch rings past this many bytes, whenever the other ring is
// empty (never waiting for it): small items stay in the first pages of a ring, and a large item
// is followed by a switch, so memory the consumer has read is written again.
constexpr std::uint64_t kRecycleBytes = std::uint64_t{64} << 10;
constexpr std::chrono::microseconds kMaxHotWait{2000};

std::uint64_t pos_of(std::uint64_t w) { return w & kPosMask; }
std::uint64_t count_of(std::uint64_t w) { return w >> kPosBits; }
std::uint64_t make_word(std::uint64_t count, std::uint64_t pos) {
  return ((count & kCountMask) << kPosBits) | (pos & kPosMask);
}
std::size_t pad8(std::size_t n) { return (n + 7) & ~std::size_t{7}; }

// kSwitch: readers continue in the other ring (the frame's size field holds its number).
enum Kind : std::uint32_t { kInline = 1, kWrap = 2, kOutOfBand = 3, kSwitch = 4 };
struct FrameHeader {
  std::uint32_t size;
  std::uint32_t kind;
};
constexpr std::uint64_t kSwitchBytes = sizeof(FrameHeader);
struct OutOfBand {
  std::uint64_t tag;
  std::uint64_t size;
  std::uint64_t handle;  // kHandlesTravelInMemory: the memory's token (platform::hand_off)
};
// Where out-of-band items travel: a datagram socket (POSIX, SCM_RIGHTS), or the ring itself
// (Windows: the frame carries a token of a copy of the memory's handle put in flight in the
// queue's owner, the process that made it, so the item outlives its producer as on POSIX; if the
// owner has ended, in the producer, which then waits at exit until it is taken: PendingHandOffs).
constexpr bool kOutOfBandInRing = platform::kHandlesTravelInMemory;
constexpr std::uint64_t kNoSocket = ~std::uint64_t{0};

// The producers' last switch: [from ring: 1 bit][number: 23][tail position before it: 40], stored
// before the switch frame is committed. The producers' current ring and next switch number follow
// from it and the tail of `from` (the frame is committed iff that tail moved), so a producer killed
// anywhere in a switch leaves a state the next one reads right.
std::uint64_t make_switch(unsigned from, std::uint32_t seq, std::uint64_t before) {
  return (std::uint64_t{from} << 63) | (std::uint64_t{seq & kSeqMask} << kPosBits) |
         (before & kPosMask);
}
// The consumers' ring and the number of the next switch frame they expect: [ring: 1][number: 23].
std::uint64_t make_reader(unsigned ring, std::uint32_t expected) {
  return (std::uint64_t{ring} << 63) | (std::uint64_t{expected & kSeqMask} << kPosBits);
}
unsigned ring_of(std::uint64_t w) { return static_cast<unsigned>(w >> 63); }
std::uint32_t seq_of(std::uint64_t w) {
  return static_cast<std::uint32_t>(w >> kPosBits) & kSeqMask;
}

// The shared header. Producers write the first line group, consumers the second; each side's
// "someone sleeps" flag lives on the line of the side that reads it on every operation. The ring
// ends, which the other side polls while it waits, have lines of their own: a poll then pulls
// away only the line of the one store that commits an item, not the lock and event count that
// the side writes two or three times more per item (a consumer polling the tail on the lock's
// line made each put wait for that line up to four times).
struct Shared {
  std::uint64_t magic;
  std::uint64_t capacity;  // of each ring
  std::uint64_t maxsize;
  std::uint64_t type_tag;
  std::uint64_t owner_pid;  // kOutOfBandInRing: the process that made the queue
  std::uint64_t recycle;    // 1: QueueCore's recycle (kRecycleBytes)

  alignas(64) FutexLock put_lock;
  std::atomic<std::uint32_t>
      tail_seq;  // an event count (lib/support/event_count.hpp): consumers sleep on it
  std::atomic<std::uint64_t> switched;  // make_switch(); under put_lock
  std::uint64_t oob_next;               // under put_lock
  alignas(64) std::atomic<std::uint64_t> tail[kRings];

  alignas(64) FutexLock get_lock;
  std::atomic<std::uint32_t> head_seq;   // an event count: producers sleep on it
  std::atomic<std::uint64_t> reader;     // make_reader(); under get_lock
  std::atomic<std::uint64_t> oob_taken;  // kOutOfBandInRing: the last out-of-band tag consumed
  alignas(64) std::atomic<std::uint64_t> head[kRings];

  alignas(64) std::atomic<std::uint32_t> done;  // JoinableQueue: task_done() calls, an event count
};
static_assert(sizeof(Shared) <= kHeaderBytes);

// Items put so far (modulo 2^24), from the two tails.
std::uint64_t put_count(const Shared& s) {
  return (count_of(s.tail[0].load(std::memory_order_acquire)) +
          count_of(s.tail[1].load(std::memory_order_acquire))) &
         kCountMask;
}

// Spins briefly on `ready`, then sleeps on the event count `seq` until ready() or the deadline.
// Returns ready() at the end.
template <class Ready>
bool wait_until(Ready ready, std::atomic<std::uint32_t>& seq, const Deadline& deadline,
                Spinner& spin) {
  if (ready()) return true;
  if (deadline.nonblocking()) return false;
  Nanos left;
  const Nanos* t = deadline.remaining(left);
  if ((!t || *t >= kSpinMax) && spin.spin(ready)) return true;  // a short timeout is not overrun
  for (;;) {
    const std::uint32_t s = prepare_sleep(seq);
    if (ready()) return true;
    t = deadline.remaining(left);
    if (t && *t <= Nanos::zero()) return false;
    sleep_on(seq, s, t);
  }
}

// How long a non-blocking put/get waits for its lock before it gives up with Full/Empty. The lock is
// held only while one item is copied, so a running holder releases it far sooner, and a dead one
// is taken over within 10 ms; the bound is for a holder that is alive but does not go on (stopped
// by SIGSTOP or a debugger): CPython's get_nowait gives up at once on a busy lock, and an mp
// non-blocking call never waits without limit either.
constexpr auto kNonBlockingLockWait = std::chrono::milliseconds(100);

// Takes `guard`'s lock within the deadline (a non-blocking operation: within kNonBlockingLockWait).
bool acquire_within(FutexLockGuard& guard, const Deadline& deadline) {
  if (deadline.nonblocking()) {
    const Nanos bound = kNonBlockingLockWait;
    return guard.acquire(&bound);
  }
  Nanos left;
  return guard.acquire(deadline.remaining(left));
}

// A memfd of `size` bytes filled by fill(char*), for an out-of-band item.
template <class Fill>
platform::Handle make_item_memory(std::size_t size, Fill fill) {
  const platform::Handle fd = platform::create_shared_memory(size);
  void* p = nullptr;
  try {
    p = platform::map_shared(fd, size);
  } catch (...) {
    platform::close_handle(fd);
    throw;
  }
  try {
    fill(static_cast<char*>(p));
  } catch (...) {
    platform::unmap(p, size);
    platform::close_handle(fd);
    throw;
  }
  platform::unmap(p, size);
  return fd;
}

}  // namespace

struct QueueCore::State {
  Shared* shm = nullptr;
  char* rings = nullptr;  // kRings rings of `capacity` bytes, one after the other
  std::uint64_t capacity = 0;
  // Out-of-band items: producers send them on this datagram socket, its own peer
  // (platform::datagram_loop), and consumers receive them from it.
  platform::Handle oob_fd = platform::kInvalidHandle;
  std::atomic<bool> closed{false};
  // The other side's words as last read: a head never ahead of the real one (so room is never
  // overestimated) and a tail never ahead of the real one. Reading the other side's cache line
  // only when the cached value is not enough keeps one producer and one consumer from trading
  // cache lines on every item.
  std::atomic<std::uint64_t> cached_head[kRings]{};
  std::atomic<std::uint64_t> cached_tail[kRings]{};
  // Set when consumers stopped making progress while this process waited to switch rings; cleared
  // at its next switch.
  std::atomic<bool> cold{false};

  char* ring(unsigned r) const { return rings + r * capacity; }
  // Whether a frame lies between head `h` of ring `r` and its tail.
  bool has_frame(unsigned r, std::uint64_t h) {
    auto ahead = [h](std::uint64_t t) {
      const std::uint64_t d = (pos_of(t) - pos_of(h)) & kPosMask;
      return d != 0 && d < (kPosMask >> 1);  // a stale tail behind `h` gives a huge d
    };
    if (ahead(cached_tail[r].load(std::memory_order_relaxed))) return true;
    const std::uint64_t t = shm->tail[r].load(std::memory_order_acquire);
    cached_tail[r].store(t, std::memory_order_relaxed);
    return ahead(t);
  }
  std::uint64_t head(unsigned r, bool refresh) {
    if (!refresh) return cached_head[r].load(std::memory_order_relaxed);
    const std::uint64_t h = shm->head[r].load(std::memory_order_acquire);
    cached_head[r].store(h, std::memory_order_relaxed);
    return h;
  }
  ~State() { platform::close_handle(oob_fd); }
};

namespace {

// kOutOfBandInRing: out-of-band items held in flight by this process and not yet taken by a
// consumer, by queue (the highest tag put). A consumer takes an item's memory out of the holder,
// so a producer holding its own items (the queue's owner, or any producer once the owner ended)
// waits at exit until they are taken, as CPython's queue feeder is joined at exit (there an item
// larger than the pipe's buffer also waits for a reader); cancel_join_thread() gives this up.
class PendingHandOffs {
 public:
  static PendingHandOffs& get() {
    static auto* p = new PendingHandOffs;  // never destroyed: used by the exit handler
    return *p;
  }
  void add(const heap::SharedBlock& block, Shared* shm, std::uint64_t tag) {
    std::lock_guard lock(mutex_);
    if (!registered_) {
      std::atexit(+[] { get().wait_all(); });
      registered_ = true;
    }
    for (Entry& e : entries_)
      if (e.shm == shm) {
        e.tag = std::max(e.tag, tag);
        return;
      }
    entries_.push_back({block, shm, tag});
  }
  void cancel(const Shared* shm) {
    std::lock_guard lock(mutex_);
    std::erase_if(entries_, [shm](const Entry& e) { return e.shm == shm; });
  }
  void wait_all() {
    std::vector<Entry> entries;
    {
      std::lock_guard lock(mutex_);
      entries.swap(entries_);
    }
    for (const Entry& e : entries) {
      Shared& s = *e.shm;
      for (;;) {  // consumers bump head_seq after each item they take
        const std::uint32_t seq = prepare_sleep(s.head_seq);
        if (s.oob_taken.load(std::memory_order_acquire) >= e.tag) break;
        sleep_on(s.head_seq, seq, nullptr);
      }
    }
  }

 private:
  struct Entry {
    heap::SharedBlock block;  // keeps the header mapped
    Shared* shm;
    std::uint64_t tag;
  };
  std::mutex mutex_;
  bool registered_ = false;
  std::vector<Entry> entries_;
};

}  // namespace

void QueueCore::cancel_join_thread() noexcept {
  if (kOutOfBandInRing && state_) PendingHandOffs::get().cancel(state_->shm);
}

QueueCore::QueueCore(std::uint64_t maxsize, std::uint64_t type_tag, bool recycle)
    : QueueCore(maxsize, type_tag) {
  state_->shm->recycle = recycle ? 1 : 0;
}

namespace {
// An empty queue's header.
Shared* init_header(void* at, std::uint64_t maxsize, std::uint64_t type_tag,
                    std::uint64_t recycle) {
  auto* shm = new (at) Shared{};
  shm->magic = kMagic;
  shm->capacity = QueueCore::kRingCapacity / kRings;
  shm->maxsize = maxsize;
  shm->type_tag = type_tag;
  shm->owner_pid = static_cast<std::uint64_t>(platform::current_pid());
  shm->recycle = recycle;
  // As if the producers had switched from ring 1 to ring 0 (a position no tail takes) and the
  // consumers had followed.
  shm->switched.store(make_switch(1, 0, kPosMask), std::memory_order_relaxed);
  shm->reader.store(make_reader(0, 1), std::memory_order_relaxed);
  return shm;
}
}  // namespace

QueueCore::QueueCore(std::uint64_t maxsize, std::uint64_t type_tag)
    : block_(kHeaderBytes + kRingCapacity, alignof(Shared)), state_(std::make_shared<State>()) {
  Shared* shm = init_header(block_.data(), maxsize, type_tag, 0);
  state_->shm = shm;
  state_->rings = static_cast<char*>(block_.data()) + kHeaderBytes;
  state_->capacity = shm->capacity;
  if (!kOutOfBandInRing) state_->oob_fd = platform::datagram_loop();
}

bool QueueCore::reset_if_held_alone() noexcept {
  // Windows: out-of-band items travel as handles put in flight by their producer, which may
  // wait for them at exit (PendingHandOffs): not reused there.
  if (kOutOfBandInRing || !state_ || state_.use_count() != 1) return false;
  Shared* shm = state_->shm;
  if (shm->owner_pid != static_cast<std::uint64_t>(platform::current_pid()) ||
      !heap::detail::BlockAccess::held_alone(block_))
    return false;
  // Out-of-band items no one took: their memory goes with their descriptors.
  for (int i = 0;; ++i) {
    if (i == 64) return false;
    std::uint64_t tag = 0;
    platform::Handle fd = platform::kInvalidHandle;
    try {
      if (!platform::receive_descriptor(state_->oob_fd, tag, fd, false)) break;
    } catch (...) {
      return false;
    }
    platform::close_handle(fd);
  }
  // The rings' pages past their first kKeptBytes go back to the OS; the first ones, the ones a
  // recycling queue's items go through, stay mapped for the next user.
  const std::uint64_t cap = shm->capacity;
  const platform::Handle arena = heap::detail::BlockAccess::arena_handle(block_);
  const std::uint64_t rings_at = heap::detail::BlockAccess::offset(block_) + kHeaderBytes;
  constexpr std::uint64_t kKeptBytes = 2 * kRecycleBytes;
  for (unsigned r = 0; r < kRings; ++r) {
    // Positions only grow (a restart moves them to the next multiple of the capacity): a tail
    // still short of kKeptBytes never wrote past it.
    if (pos_of(shm->tail[r].load(std::memory_order_acquire)) <= kKeptBytes) continue;
    if (!platform::discard_shared_range(arena, rings_at + r * cap + kKeptBytes, cap - kKeptBytes))
      return false;
  }
  init_header(shm, shm->maxsize, shm->type_tag, shm->recycle);
  state_->closed = false;
  for (unsigned r = 0; r < kRings; ++r) {
    state_->cached_head[r].store(0, std::memory_order_relaxed);
    state_->cached_tail[r].store(0, std::memory_order_relaxed);
  }
  state_->cold = false;
  return true;
}

std::uint64_t QueueCore::send_token() const {
  if (!state_) throw std::logic_error("mp: cannot send an empty queue");
  if (kOutOfBandInRing) {
    if (!reduction::spawning())
      throw std::runtime_error(
          "Queue objects should only be shared between processes through inheritance");
    return kNoSocket;
  }
  return reduction::send_handle(state_->oob_fd, "Queue");
}

void QueueCore::attach(std::uint64_t token) {
  auto st = std::make_shared<State>();
  if (kOutOfBandInRing != (token == kNoSocket)) throw UnpicklingError("mp: corrupt queue data");
  if (!kOutOfBandInRing)
    st->oob_fd = static_cast<platform::Handle>(reduction::receive_handle(token));
  if (block_.size() < kHeaderBytes) throw UnpicklingError("mp: corrupt queue data");
  st->shm = static_cast<Shared*>(block_.data());
  const std::uint64_t cap = st->shm->capacity;
  if (st->shm->magic != kMagic || cap < 4096 || (cap & (cap - 1)) != 0 ||
      cap > (std::uint64_t{1} << 36) || kRings * cap + kHeaderBytes > block_.size())
    throw UnpicklingError("mp: corrupt queue data");
  st->rings = static_cast<char*>(block_.data()) + kHeaderBytes;
  st->capacity = cap;
  state_ = std::move(st);
}

void QueueCore::check_type(std::uint64_t type_tag) const {
  if (state_->shm->type_tag != type_tag)
    throw UnpicklingError("mp: a Queue received holds items of another type");
}

void QueueCore::close() noexcept {
  if (state_) state_->closed = true;
}
bool QueueCore::closed() const noexcept { return !state_ || state_->closed; }
void QueueCore::check_open(const char*) const {
  if (closed()) throw std::invalid_argument("Queue is closed");
}

std::uint64_t QueueCore::maxsize() const { return state_->shm->maxsize; }

std::size_t QueueCore::qsize() const {
  const Shared& s = *state_->shm;
  std::uint64_t removed = 0;
  for (const auto& h : s.head) removed += count_of(h.load(std::memory_order_acquire));
  return static_cast<std::size_t>((put_count(s) - removed) & kCountMask);
}

// ---- The producer's steps (put), each under put_lock unless said otherwise. Every store that
// another process can see leaves a state the next producer or consumer reads right, even if this
// one is killed before its next store (the QueueFault points sit between such stores).
struct QueueCore::ProducerSteps {
  State& st;
  Shared& s;
  const std::uint64_t cap;
  const std::uint64_t need;  // the frame's bytes: header and padded payload

  // The producers' ring and the number of their next switch frame (see make_switch).
  struct Current {
    unsigned ring;
    std::uint32_t seq;
  };

  // The bytes a frame takes at the tail of ring `r` (with the skip to the ring's start), or 0 if
  // there is no room. The last kSwitchBytes of a ring are kept for a switch frame. Lock-free.
  std::uint64_t room(unsigned r, bool refresh) const {
    const std::uint64_t t = s.tail[r].load(std::memory_order_acquire), h = st.head(r, refresh);
    const std::uint64_t pos = pos_of(t) & (cap - 1);
    const std::uint64_t used = (pos_of(t) - pos_of(h)) & kPosMask;
    // A head cached long ago (other producers moved the tail since) can look more than a ring
    // behind: no room as far as it knows.
    if (used > cap) return 0;
    const std::uint64_t removed = count_of(h) + count_of(st.head(1 - r, refresh));
    const std::uint64_t items = (put_count(s) - removed) & kCountMask;
    if (s.maxsize != 0 && items >= s.maxsize) return 0;
    if (items == kCountMask) return 0;
    const std::uint64_t total = need + (cap - pos < need ? cap - pos : 0);
    if (cap - used < total + kSwitchBytes) return 0;
    return total;
  }
  std::uint64_t room_in(unsigned r) const {
    if (const std::uint64_t n = room(r, false)) return n;
    return room(r, true);
  }

  Current current() const {
    const std::uint64_t w = s.switched.load(std::memory_order_relaxed);
    const unsigned from = ring_of(w);
    if (pos_of(s.tail[from].load(std::memory_order_relaxed)) != pos_of(w))
      return {1 - from, seq_of(w) + 1};
    return {from, seq_of(w)};
  }

  // Whether ring `r` (not the producers') holds nothing for consumers: it is empty, or holds only
  // the wrap frame of a restart whose producer was killed before the second store.
  bool vacant(unsigned r) const {
    const std::uint64_t t = s.tail[r].load(std::memory_order_relaxed), h = st.head(r, true);
    if (t == h) return true;
    const std::uint64_t pos = pos_of(h) & (cap - 1);
    FrameHeader fh;
    std::memcpy(&fh, st.ring(r) + pos, sizeof fh);
    return fh.kind == kWrap && count_of(t) == count_of(h) &&
           ((pos_of(t) - pos_of(h)) & kPosMask) == cap - pos;
  }

  // Restarts the vacant ring `to` at its start (no consumer is in it, nor can enter it before the
  // switch frame is committed): a wrap frame, then both ends past it. A producer killed between
  // the two stores (QueueFault::producer_restart_half_done) leaves a bare wrap frame, which the
  // next restart completes and consumers pass.
  void restart_vacant(unsigned to) {
    const std::uint64_t tt = s.tail[to].load(std::memory_order_relaxed);
    const std::uint64_t tpos = pos_of(tt) & (cap - 1);
    if (vacant(to)) {
      if (s.head[to].load(std::memory_order_relaxed) != tt)
        s.head[to].store(tt, std::memory_order_release);
    }
    if (tpos != 0 && s.head[to].load(std::memory_order_relaxed) == tt) {
      const FrameHeader wrap{0, kWrap};
      std::memcpy(st.ring(to) + tpos, &wrap, sizeof wrap);
      const std::uint64_t nt = make_word(count_of(tt), pos_of(tt) + (cap - tpos));
      s.tail[to].store(nt, std::memory_order_release);
      fault_point(QueueFault::producer_restart_half_done);
      s.head[to].store(nt, std::memory_order_release);
    }
  }

  // Sends the consumers from the current ring to the other one: the switch is recorded in
  // `switched` before its frame is committed by the tail's store, so a producer killed between
  // the two (QueueFault::producer_switch_recorded) or after them (producer_switch_committed)
  // leaves a state current() reads right.
  void switch_ring(Current c) {
    restart_vacant(1 - c.ring);
    const std::uint64_t t = s.tail[c.ring].load(std::memory_order_relaxed);
    s.switched.store(make_switch(c.ring, c.seq, pos_of(t)), std::memory_order_relaxed);
    const FrameHeader sw{c.seq & kSeqMask, kSwitch};
    std::memcpy(st.ring(c.ring) + (pos_of(t) & (cap - 1)), &sw, sizeof sw);
    fault_point(QueueFault::producer_switch_recorded);
    s.tail[c.ring].store(make_word(count_of(t), pos_of(t) + kSwitchBytes),
                         std::memory_order_release);
    fault_point(QueueFault::producer_switch_committed);
  }

  // Waits (holding put_lock) until ring `r` is vacant, while consumers keep removing items: the
  // producer then stays within the rings' hot parts instead of running ahead into cold memory.
  // False when consumers made no progress for kProgressWindow, after kMaxHotWait, or at the
  // deadline.
  bool wait_for_empty(unsigned r, const Deadline& deadline) {
    if (!platform::several_cpus() || st.cold.load(std::memory_order_relaxed)) return false;
    // The ring empties only when a consumer removes something, which bumps head_seq: only that
    // word is watched (its line is written by consumers anyway), looks paced as a spin's.
    std::uint32_t seen = events(s.head_seq.load(std::memory_order_relaxed));
    const auto start = Clock::now();
    auto progress = start;
    LookPacer pacer(start, kHandoffPace);
    for (;;) {
      const auto now = pacer.wait();
      if (const std::uint32_t q = events(s.head_seq.load(std::memory_order_relaxed)); q != seen) {
        if (vacant(r)) return true;
        seen = q;
        progress = now;
      }
      if (now - progress > kProgressWindow || now - start > kMaxHotWait) {
        st.cold.store(true, std::memory_order_relaxed);
        return false;
      }
      if (deadline.passed()) return false;
    }
  }

  // Picks the ring for the item, switching when past the hot part of the current one (once the
  // other is empty) or out of room where the other has some. Returns the ring and the bytes the
  // frame takes there (0: no room); `switched` says a switch frame was committed.
  std::pair<unsigned, std::uint64_t> choose_ring(const Deadline& deadline, bool& switched) {
    Current c = current();
    const std::uint64_t at = pos_of(s.tail[c.ring].load(std::memory_order_relaxed)) & (cap - 1);
    const bool hot_switch =
        s.recycle != 0 ? at >= kRecycleBytes && vacant(1 - c.ring)
                       : at >= kHotBytes &&
                             (vacant(1 - c.ring) ||
                              (!deadline.nonblocking() && wait_for_empty(1 - c.ring, deadline)));
    std::uint64_t total = hot_switch ? 0 : room_in(c.ring);
    if (hot_switch || (total == 0 && room_in(1 - c.ring) != 0)) {
      switch_ring(c);
      switched = true;
      st.cold.store(false, std::memory_order_relaxed);
      c = current();
      total = room_in(c.ring);
    }
    return {c.ring, total};
  }

  // Writes the frame (after a wrap frame when it does not fit before the ring's end) and commits
  // it with one store of the tail: consumers never see a torn item, and a producer killed before
  // that store leaves no trace but unreferenced bytes past the tail.
  template <class Fill>
  void write_and_commit(unsigned r, std::uint64_t total, const FrameHeader& fh, Fill fill) {
    const std::uint64_t t = s.tail[r].load(std::memory_order_relaxed);
    char* ring = st.ring(r);
    std::uint64_t pos = pos_of(t) & (cap - 1);
    if (total > need) {  // no room before the end: send readers back to the start
      const FrameHeader wrap{0, kWrap};
      std::memcpy(ring + pos, &wrap, sizeof wrap);
      pos = 0;
    }
    std::memcpy(ring + pos, &fh, sizeof fh);
    fill(ring + pos + sizeof fh);
    s.tail[r].store(make_word(count_of(t) + 1, pos_of(t) + total),
                    std::memory_order_release);  // the commit
  }
};

bool QueueCore::put(const Part* parts, std::size_t count, const Nanos* timeout) {
  std::size_t size = 0;
  for (std::size_t i = 0; i < count; ++i) size += parts[i].size;
  auto copy_parts = [&](char* out) {
    for (std::size_t i = 0; i < count; ++i) {
      if (parts[i].size != 0) std::memcpy(out, parts[i].data, parts[i].size);
      out += parts[i].size;
    }
  };
  State& st = *state_;
  Shared& s = *st.shm;
  const std::uint64_t cap = st.capacity;
  const bool oob = size > cap / 2;
  const std::size_t payload = oob ? sizeof(OutOfBand) : size;
  ProducerSteps producer{st, s, cap, sizeof(FrameHeader) + pad8(payload)};
  const Deadline deadline(timeout);

  UniqueHandle item_fd;
  if (oob) item_fd.reset(make_item_memory(size, copy_parts));

  FutexLockGuard guard(s.put_lock);
  bool wake_consumers = false;
  unsigned r = 0;
  std::uint64_t total = 0, oob_tag = 0, oob_token = 0;
  // The first pass takes the lock at once (room is the common case); later passes first wait
  // for room without it.
  for (bool first = true;; first = false) {
    auto ready = [&] { return producer.room_in(0) != 0 || producer.room_in(1) != 0; };
    if (!first && !wait_until(ready, s.head_seq, deadline, t_put_spin)) return false;
    if (!acquire_within(guard, deadline)) return false;
    bool switched = false;
    std::tie(r, total) = producer.choose_ring(deadline, switched);
    if (switched) wake_consumers |= count_event(s.tail_seq);
    // An out-of-band item also needs room in the socket buffer (about 250 items in flight); it is
    // sent before the commit (a producer killed in between leaves a message the next consumer
    // drops as stale).
    if (total != 0 && oob && kOutOfBandInRing) {
      oob_tag = ++s.oob_next;
      try {
        oob_token = platform::hand_off(item_fd.get(), static_cast<int>(s.owner_pid));
      } catch (const OSError&) {  // the owner has ended: this process holds it
        oob_token = platform::hand_off(item_fd.get(), platform::current_pid());
      }
      break;
    }
    if (total != 0 && oob) {
      oob_tag = ++s.oob_next;
      if (platform::send_descriptor(st.oob_fd, oob_tag, item_fd.get())) break;
      total = 0;
    }
    if (total != 0) break;
    guard.release();
    if (std::exchange(wake_consumers, false)) wake_sleepers(s.tail_seq);
    if (deadline.nonblocking() || deadline.passed()) return false;
    if (oob) {
      const Nanos slice =
          deadline.left(std::chrono::milliseconds(10));  // consumers drain it without telling
      platform::wait_writable(st.oob_fd, &slice);
    }
  }

  const FrameHeader fh{static_cast<std::uint32_t>(payload), oob ? kOutOfBand : kInline};
  if (oob) {
    producer.write_and_commit(r, total, fh, [&](char* out) {
      const OutOfBand ref{oob_tag, size, oob_token};
      std::memcpy(out, &ref, sizeof ref);
    });
  } else {
    producer.write_and_commit(r, total, fh, copy_parts);
  }
  wake_consumers |= count_event(s.tail_seq);
  guard.release();
  if (wake_consumers) wake_sleepers(s.tail_seq);
  if (oob && kOutOfBandInRing && platform::handed_off_holder(oob_token) == platform::current_pid())
    PendingHandOffs::get().add(block_, &s, oob_tag);
  return true;
}

// ---- The consumer's steps (get), under get_lock. As for producers, each store leaves a state
// the next consumer reads right if this one is killed after it.
struct QueueCore::ConsumerSteps {
  State& st;
  Shared& s;
  const std::uint64_t cap;
  bool wake_producers = false;

  // The item at the consumers' head.
  struct Frame {
    unsigned ring = 0;
    std::uint64_t head = 0;  // the head word before it
    std::uint64_t pos = 0;   // its byte position in the ring
    FrameHeader header{};
  };

  void removed() { wake_producers |= count_event(s.head_seq); }
  // Releases the consumers' lock, then wakes producers waiting for room if any.
  void finish(FutexLockGuard& guard) {
    guard.release();
    if (std::exchange(wake_producers, false)) wake_sleepers(s.head_seq);
  }

  // Follows a switch frame numbered `number` at head `h` of ring `r`: first the consumers' ring,
  // then the head past the frame. A consumer killed between the two
  // (QueueFault::consumer_switch_recorded) leaves a frame already acted on, which the next one
  // recognizes by its number (two behind: it comes back to this ring through the next switch)
  // and passes.
  void pass_switch(std::uint64_t reader, unsigned r, std::uint64_t h, std::uint32_t number) {
    if (number == seq_of(reader)) {
      s.reader.store(make_reader(1 - r, seq_of(reader) + 1), std::memory_order_relaxed);
      fault_point(QueueFault::consumer_switch_recorded);
    } else if (number != ((seq_of(reader) - 2) & kSeqMask)) {
      throw ProcessError("mp: corrupt queue (bad switch frame)");
    }
    s.head[r].store(make_word(count_of(h), pos_of(h) + kSwitchBytes), std::memory_order_release);
    removed();
  }
  // A wrap frame: the rest of the ring is unused; one store moves the head to its start.
  void pass_wrap(unsigned r, std::uint64_t h, std::uint64_t pos) {
    s.head[r].store(make_word(count_of(h), pos_of(h) + (cap - pos)), std::memory_order_release);
    removed();
  }

  // Passes the frames that are not items (switch, wrap) until an item or the tail is reached;
  // each pass is one store of the head, a state as valid as any other. True with `f` set at an
  // item; false when the queue is empty.
  bool find_item(Frame& f) {
    for (;;) {
      const std::uint64_t reader = s.reader.load(std::memory_order_relaxed);
      f.ring = ring_of(reader);
      f.head = s.head[f.ring].load(std::memory_order_relaxed);
      if (!st.has_frame(f.ring, f.head)) return false;
      f.pos = pos_of(f.head) & (cap - 1);
      std::memcpy(&f.header, st.ring(f.ring) + f.pos, sizeof f.header);
      if (f.header.kind == kSwitch) {
        pass_switch(reader, f.ring, f.head, f.header.size);
      } else if (f.header.kind == kWrap) {
        pass_wrap(f.ring, f.head, f.pos);
      } else {
        return true;
      }
    }
  }

  // Removes the item with one store of the head: until then it stays in the queue for the next
  // consumer (a consumer killed while decoding loses nothing).
  void commit(const Frame& f) {
    const FrameHeader& fh = f.header;
    s.head[f.ring].store(
        make_word(count_of(f.head) + 1, pos_of(f.head) + sizeof fh + pad8(fh.size)),
        std::memory_order_release);
    removed();
  }

  // Drops out-of-band messages of items that are gone: tags below `below` (a producer that died
  // between sending and committing, or a consumer that died between committing and dropping).
  void drop_stale(std::uint64_t below) {
    for (;;) {
      std::uint64_t tag = 0;
      platform::Handle fd = platform::kInvalidHandle;
      if (!platform::receive_descriptor(st.oob_fd, tag, fd, true)) return;
      platform::close_handle(fd);
      if (tag >= below) return;
      if (platform::receive_descriptor(st.oob_fd, tag, fd, false)) platform::close_handle(fd);
    }
  }

  // After an out-of-band item's commit: drops its message (and stale ones), or in ring mode closes
  // the producer's in-flight copy and tells a producer waiting at exit (oob_taken, head_seq).
  void taken(const OutOfBand& ref) {
    if (!kOutOfBandInRing) {
      drop_stale(ref.tag + 1);
      return;
    }
    platform::release_handed_off(ref.handle);
    s.oob_taken.store(ref.tag, std::memory_order_release);  // tags are taken in order
    removed();
  }

  // An item in the ring: decoded in place, then committed; one that does not decode is dropped
  // (committed), not retried forever.
  void take_inline(const Frame& f, Consumer consume, void* context, FutexLockGuard& guard) {
    const char* payload = st.ring(f.ring) + f.pos + sizeof f.header;
    try {
      consume(context, payload, f.header.size);
    } catch (...) {
      commit(f);
      finish(guard);
      throw;
    }
    commit(f);
  }

  // An out-of-band item: its memory arrives on the socket, tagged; stale messages before it are
  // dropped first. It is committed whether or not it decodes, then its message is dropped.
  MP_CATCHES_FORCED_UNWIND void take_out_of_band(const Frame& f, Consumer consume, void* context,
                                                 FutexLockGuard& guard) {
    OutOfBand ref;
    std::memcpy(&ref, st.ring(f.ring) + f.pos + sizeof f.header, sizeof ref);
    std::uint64_t tag = 0;
    platform::Handle fd = platform::kInvalidHandle;
    bool found = false;
    if (kOutOfBandInRing) {
      try {
        fd = platform::take_handed_off(ref.handle);
        tag = ref.tag;
        found = true;
      } catch (const OSError&) {  // the producer ended before the item was taken
      }
    } else {
      drop_stale(ref.tag);
      found = platform::receive_descriptor(st.oob_fd, tag, fd, true);
    }
    const UniqueHandle item(found ? fd : platform::kInvalidHandle);
    if (!found || tag != ref.tag || platform::shared_memory_size(item.get()) < ref.size) {
      commit(f);
      taken(ref);
      finish(guard);
      throw ProcessError("mp: an out-of-band queue item is missing");
    }
    struct Mapping {
      void* at = nullptr;
      std::size_t size = 0;
      ~Mapping() {
        if (at) platform::unmap(at, size);
      }
    } mapping;
    std::exception_ptr error;
    try {
      mapping.at = platform::map_shared(item.get(), ref.size);
      mapping.size = ref.size;
      consume(context, static_cast<const char*>(mapping.at), ref.size);
    } catch (const ForcedUnwind&) {  // the decoder ended its thread: the item is consumed
      commit(f);
      taken(ref);
      finish(guard);
      throw;
    } catch (...) {
      error = std::current_exception();
    }
    commit(f);
    taken(ref);
    if (error) {
      finish(guard);
      std::rethrow_exception(error);
    }
  }
};

MP_CATCHES_FORCED_UNWIND bool QueueCore::get(Consumer consume, void* context,
                                             const Nanos* timeout) {
  State& st = *state_;
  Shared& s = *st.shm;
  const std::uint64_t cap = st.capacity;
  auto available = [&] {
    const unsigned r = ring_of(s.reader.load(std::memory_order_acquire));
    return st.has_frame(r, s.head[r].load(std::memory_order_acquire));
  };
  ConsumerSteps consumer{st, s, cap};

  FutexLockGuard guard(s.get_lock);
  ConsumerSteps::Frame f;
  // An item waiting under a free lock is taken without reading the clock (a timed get's deadline
  // starts when it first has to wait: clock reads are costly on some systems, e.g. under Wine).
  bool found = false, looked = false;
  if (guard.try_acquire_uncontended()) {
    found = consumer.find_item(f);
    if (!found) {
      consumer.finish(guard);
      if (timeout && *timeout <= Nanos::zero()) return false;
      looked = true;
    }
  }
  if (!found) {
    const Deadline deadline(timeout);
    // The first pass takes the lock at once; later passes first wait for a frame without it.
    for (bool first = !looked;; first = false) {
      if (!first && !wait_until(available, s.tail_seq, deadline, t_get_spin)) return false;
      if (!acquire_within(guard, deadline)) return false;
      if (consumer.find_item(f)) break;
      consumer.finish(guard);
      if (deadline.nonblocking() || deadline.passed()) return false;
    }
  }

  const FrameHeader& fh = f.header;
  const bool valid =
      (fh.kind == kInline || (fh.kind == kOutOfBand && fh.size == sizeof(OutOfBand))) &&
      sizeof fh + pad8(fh.size) <= cap - f.pos;
  if (!valid) throw ProcessError("mp: corrupt queue (bad frame header)");
  if (fh.kind == kInline)
    consumer.take_inline(f, consume, context, guard);
  else
    consumer.take_out_of_band(f, consume, context, guard);
  consumer.finish(guard);
  return true;
}

void QueueCore::task_done() {
  Shared& s = *state_->shm;
  std::uint32_t d = s.done.load(std::memory_order_acquire);
  for (;;) {
    if ((d & kCountMask) == put_count(s))
      throw std::invalid_argument("task_done() called too many times");
    if (s.done.compare_exchange_weak(d, events(events(d) + 1), std::memory_order_seq_cst)) break;
  }
  if (d & kSleepers) wake_sleepers(s.done);
}

void QueueCore::join() {
  Shared& s = *state_->shm;
  for (;;) {
    const std::uint32_t d = prepare_sleep(s.done);
    if ((d & kCountMask) == put_count(s)) return;
    sleep_on(s.done, d, nullptr);
  }
}

std::string& thread_buffer() { return thread_object<std::string, struct QueueBufferTag>(); }

}  // namespace mp::detail
