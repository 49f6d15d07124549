// mp::detail::QueueCore — the shared-memory ring behind Queue, JoinableQueue and SimpleQueue
// (CPython: multiprocessing/queues.py). The design is described in include/mp/queues.hpp.
#include "mp/queues.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>

#include "futex_lock.hpp"
#include "spin.hpp"
#include "platform/conn.hpp"
#include "platform/os.hpp"

namespace mp::detail {
namespace {

using Nanos = std::chrono::nanoseconds;
using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kMagic = 0x6575657571706d31;  // "1mpqueue"
constexpr std::size_t kHeaderBytes = 4096;          // the ring starts on the next page
// A ring word: the count of items (24 bits, wrapping) and the byte position (40 bits, wrapping).
constexpr unsigned kPosBits = 40;
constexpr std::uint64_t kPosMask = (std::uint64_t{1} << kPosBits) - 1;
constexpr std::uint64_t kCountMask = (std::uint64_t{1} << 24) - 1;
// Spinning before a sleep, adapted per thread (lib/spin.hpp): up to about the time a 1 MiB item
// takes to copy, so that a consumer keeping pace with a producer of big items never sleeps.
constexpr std::chrono::microseconds kMinSpin{2};
constexpr std::chrono::microseconds kMaxSpin{100};
constinit thread_local AdaptiveSpin t_get_spin{kMinSpin, kMaxSpin};
constinit thread_local AdaptiveSpin t_put_spin{kMinSpin, kMaxSpin};
// A producer that finds the queue empty past this many bytes moves both ends back to the ring's
// start (it takes the consumers' lock for that, without waiting), so that while consumers keep
// up, items cycle through the first kHotBytes of the ring: its pages stay mapped and its bytes stay
// in the CPUs' caches, instead of every byte of a 64 MiB ring being a cache miss (and, on the first
// pass, a page fault in each process). No capacity is skipped: when consumers fall behind, the
// whole ring still holds items (a producer joined before its items are read does not block).
constexpr std::uint64_t kHotBytes = std::uint64_t{4} << 20;

std::uint64_t pos_of(std::uint64_t w) { return w & kPosMask; }
std::uint64_t count_of(std::uint64_t w) { return w >> kPosBits; }
std::uint64_t make_word(std::uint64_t count, std::uint64_t pos) {
  return ((count & kCountMask) << kPosBits) | (pos & kPosMask);
}
std::size_t pad8(std::size_t n) { return (n + 7) & ~std::size_t{7}; }

enum Kind : std::uint32_t { kInline = 1, kWrap = 2, kOutOfBand = 3 };
struct FrameHeader {
  std::uint32_t size;
  std::uint32_t kind;
};
struct OutOfBand {
  std::uint64_t tag;
  std::uint64_t size;
};

// The shared header. Producers write the first line group, consumers the second; each side's
// "someone sleeps" flag lives on the line of the side that reads it on every operation.
struct Shared {
  std::uint64_t magic;
  std::uint64_t capacity;
  std::uint64_t maxsize;
  std::uint64_t type_tag;

  alignas(64) FutexLock put_lock;
  std::atomic<std::uint32_t> tail_seq;     // low 32 bits of tail: consumers sleep on it
  std::atomic<std::uint32_t> get_waiters;  // a consumer may sleep on tail_seq
  std::atomic<std::uint64_t> tail;
  std::uint64_t oob_next;  // under put_lock

  alignas(64) FutexLock get_lock;
  std::atomic<std::uint32_t> head_seq;     // low 32 bits of head: producers sleep on it
  std::atomic<std::uint32_t> put_waiters;  // a producer may sleep on head_seq
  std::atomic<std::uint64_t> head;

  alignas(64) std::atomic<std::uint32_t> done;  // JoinableQueue: task_done() calls (wrapping)
  std::atomic<std::uint32_t> join_waiters;
};
static_assert(sizeof(Shared) <= kHeaderBytes);

struct Deadline {
  const Nanos* timeout;
  Clock::time_point at;
  explicit Deadline(const Nanos* t) : timeout(t), at(t ? Clock::now() + *t : Clock::time_point::max()) {}
  bool nonblocking() const { return timeout && *timeout <= Nanos::zero(); }
  // Remaining time (clamped at zero); null when unbounded.
  const Nanos* remaining(Nanos& out) const {
    if (!timeout) return nullptr;
    out = std::max(Nanos::zero(), std::chrono::duration_cast<Nanos>(at - Clock::now()));
    return &out;
  }
  bool passed() const { return timeout && Clock::now() >= at; }
};

// Sets the sleeper flag, rechecks `ready`, and sleeps on `seq` until it changes or the deadline.
// Returns ready() at the end.
template <class Ready>
bool wait_until(Ready ready, std::atomic<std::uint32_t>& seq, std::atomic<std::uint32_t>& waiters,
                const Deadline& deadline, AdaptiveSpin& spin) {
  if (ready()) return true;
  if (deadline.nonblocking()) return false;
  Nanos left;
  const Nanos* t = deadline.remaining(left);
  if ((!t || *t >= kMaxSpin) && spin.spin(ready)) return true;  // a short timeout is not overrun
  for (;;) {
    waiters.store(1, std::memory_order_seq_cst);
    const std::uint32_t s = seq.load(std::memory_order_seq_cst);
    if (ready()) return true;
    t = deadline.remaining(left);
    if (t && *t <= Nanos::zero()) return false;
    platform::wait_on_address(&seq, s, t);
  }
}

void wake_if_waiting(std::atomic<std::uint32_t>& seq, std::atomic<std::uint32_t>& waiters) {
  if (waiters.load(std::memory_order_seq_cst) != 0 && waiters.exchange(0, std::memory_order_seq_cst) != 0)
    platform::wake_address(&seq, INT_MAX);
}

// Holds a FutexLock until destroyed.
class LockGuard {
 public:
  explicit LockGuard(FutexLock& lock) : lock_(lock) {}
  LockGuard(const LockGuard&) = delete;
  LockGuard& operator=(const LockGuard&) = delete;
  ~LockGuard() {
    if (held_) lock_.release();
  }
  // A non-blocking operation still waits for the lock: it is only ever held while one item is
  // copied, so waiting is bounded (a dead holder is taken over within 10 ms).
  bool acquire(const Deadline& deadline) {
    Nanos left;
    held_ = lock_.acquire(deadline.nonblocking() ? nullptr : deadline.remaining(left)) != Acquire::timed_out;
    return held_;
  }
  void release() {
    if (held_) lock_.release();
    held_ = false;
  }

 private:
  FutexLock& lock_;
  bool held_ = false;
};

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
  char* ring = nullptr;
  std::uint64_t capacity = 0;
  platform::Handle send_fd = platform::kInvalidHandle;  // producers send out-of-band items here
  platform::Handle recv_fd = platform::kInvalidHandle;  // consumers receive them here
  std::atomic<bool> closed{false};
  // The other side's word as last read: a head never ahead of the real one (so room is never
  // overestimated) and a tail never ahead of the real one. Reading the other side's cache line
  // only when the cached value is not enough keeps one producer and one consumer from trading
  // cache lines on every item.
  std::atomic<std::uint64_t> cached_head{0};
  std::atomic<std::uint64_t> cached_tail{0};

  // Whether an item lies between head `h` and the tail.
  bool has_item(std::uint64_t h) {
    auto ahead = [h](std::uint64_t t) {
      const std::uint64_t d = (pos_of(t) - pos_of(h)) & kPosMask;
      return d != 0 && d < (kPosMask >> 1);  // a stale tail behind `h` gives a huge d
    };
    if (ahead(cached_tail.load(std::memory_order_relaxed))) return true;
    const std::uint64_t t = shm->tail.load(std::memory_order_acquire);
    cached_tail.store(t, std::memory_order_relaxed);
    return ahead(t);
  }
  std::uint64_t head(bool refresh) {
    if (!refresh) return cached_head.load(std::memory_order_relaxed);
    const std::uint64_t h = shm->head.load(std::memory_order_acquire);
    cached_head.store(h, std::memory_order_relaxed);
    return h;
  }
  ~State() {
    platform::close_handle(send_fd);
    platform::close_handle(recv_fd);
  }
};

QueueCore::QueueCore(std::uint64_t maxsize, std::uint64_t type_tag)
    : block_(kHeaderBytes + kRingCapacity), state_(std::make_shared<State>()) {
  auto* shm = new (block_.data()) Shared{};
  shm->magic = kMagic;
  shm->capacity = kRingCapacity;
  shm->maxsize = maxsize;
  shm->type_tag = type_tag;
  state_->shm = shm;
  state_->ring = static_cast<char*>(block_.data()) + kHeaderBytes;
  state_->capacity = kRingCapacity;
  const auto [a, b] = platform::conn::datagram_pair();
  state_->send_fd = a;
  state_->recv_fd = b;
}

std::uint64_t QueueCore::send_token(int which) const {
  if (!state_) throw std::logic_error("mp: cannot send an empty queue");
  return reduction::send_handle(which == 0 ? state_->send_fd : state_->recv_fd, "Queue");
}

void QueueCore::attach(std::uint64_t send_token, std::uint64_t receive_token) {
  auto st = std::make_shared<State>();
  st->send_fd = static_cast<platform::Handle>(reduction::receive_handle(send_token));
  st->recv_fd = static_cast<platform::Handle>(reduction::receive_handle(receive_token));
  if (block_.size() < kHeaderBytes) throw UnpicklingError("mp: corrupt queue data");
  st->shm = static_cast<Shared*>(block_.data());
  const std::uint64_t cap = st->shm->capacity;
  if (st->shm->magic != kMagic || cap < 4096 || (cap & (cap - 1)) != 0 || cap + kHeaderBytes > block_.size())
    throw UnpicklingError("mp: corrupt queue data");
  st->ring = static_cast<char*>(block_.data()) + kHeaderBytes;
  st->capacity = st->shm->capacity;
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
  const std::uint64_t h = s.head.load(std::memory_order_acquire);
  const std::uint64_t t = s.tail.load(std::memory_order_acquire);
  return static_cast<std::size_t>((count_of(t) - count_of(h)) & kCountMask);
}

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
  const bool oob = size > cap / 4;
  const std::size_t payload = oob ? sizeof(OutOfBand) : size;
  const std::size_t need = sizeof(FrameHeader) + pad8(payload);
  const Deadline deadline(timeout);

  // The bytes a frame at tail `t` takes (with the skip to the ring's start), or 0 if no room.
  auto room_with = [&](std::uint64_t t, std::uint64_t h) -> std::uint64_t {
    const std::uint64_t pos = pos_of(t) % cap;
    const std::uint64_t used = (pos_of(t) - pos_of(h)) & kPosMask;
    // A head cached long ago (other producers moved the tail since) can look more than a ring
    // behind: no room as far as it knows.
    if (used > cap) return 0;
    const std::uint64_t items = (count_of(t) - count_of(h)) & kCountMask;
    if (s.maxsize != 0 && items >= s.maxsize) return 0;
    if (items == kCountMask) return 0;
    const std::uint64_t total = need + (cap - pos < need ? cap - pos : 0);
    if (cap - used < total) return 0;
    return total;
  };
  auto room = [&](std::uint64_t t) -> std::uint64_t {
    if (const std::uint64_t r = room_with(t, st.head(false))) return r;
    return room_with(t, st.head(true));
  };
  // Past the hot part with the queue empty: both ends to the ring's start. Holding both locks;
  // each store leaves a valid state (after the first, a bare wrap frame that consumers pass).
  auto restart_at_ring_start = [&](std::uint64_t& t) {
    if (pos_of(t) % cap < kHotBytes || s.head.load(std::memory_order_acquire) != t) return;
    if (s.get_lock.try_acquire() == Acquire::timed_out) return;
    struct Release {
      FutexLock& lock;
      ~Release() { lock.release(); }
    } release{s.get_lock};
    if (s.head.load(std::memory_order_relaxed) != t) return;
    const std::uint64_t pos = pos_of(t) % cap;
    const FrameHeader wrap{0, kWrap};
    std::memcpy(st.ring + pos, &wrap, sizeof wrap);
    const std::uint64_t nt = make_word(count_of(t), pos_of(t) + (cap - pos));
    s.tail.store(nt, std::memory_order_release);
    s.head.store(nt, std::memory_order_release);
    t = nt;
  };

  platform::Handle item_fd = platform::kInvalidHandle;
  struct FdCloser {
    platform::Handle& fd;
    ~FdCloser() { platform::close_handle(fd); }
  } closer{item_fd};
  if (oob) item_fd = make_item_memory(size, copy_parts);

  LockGuard guard(s.put_lock);
  std::uint64_t t = 0, total = 0, oob_tag = 0;
  for (;;) {
    auto ready = [&] { return room(s.tail.load(std::memory_order_acquire)) != 0; };
    if (!wait_until(ready, s.head_seq, s.put_waiters, deadline, t_put_spin)) return false;
    if (!guard.acquire(deadline)) return false;
    t = s.tail.load(std::memory_order_relaxed);
    restart_at_ring_start(t);
    total = room(t);
    // An out-of-band item also needs room in the socket buffer (about 250 items in flight).
    if (total != 0 && oob) {
      oob_tag = ++s.oob_next;
      if (platform::conn::send_descriptor(st.send_fd, oob_tag, item_fd)) break;  // before the commit
      total = 0;
    }
    if (total != 0) break;
    guard.release();
    if (deadline.nonblocking() || deadline.passed()) return false;
    if (oob) {
      Nanos left;
      const Nanos* wait = deadline.remaining(left);
      Nanos slice = std::chrono::milliseconds(10);  // consumers drain it without telling
      if (wait) slice = std::min(slice, *wait);
      platform::conn::wait_writable(st.send_fd, &slice);
    }
  }

  std::uint64_t pos = pos_of(t) % cap;
  if (total > need) {  // no room before the end: send readers back to the start
    const FrameHeader wrap{0, kWrap};
    std::memcpy(st.ring + pos, &wrap, sizeof wrap);
    pos = 0;
  }
  const FrameHeader fh{static_cast<std::uint32_t>(payload), oob ? kOutOfBand : kInline};
  std::memcpy(st.ring + pos, &fh, sizeof fh);
  if (oob) {
    const OutOfBand ref{oob_tag, size};
    std::memcpy(st.ring + pos + sizeof fh, &ref, sizeof ref);
  } else {
    copy_parts(st.ring + pos + sizeof fh);
  }
  const std::uint64_t nt = make_word(count_of(t) + 1, pos_of(t) + total);
  s.tail.store(nt, std::memory_order_release);  // the commit
  s.tail_seq.store(static_cast<std::uint32_t>(nt), std::memory_order_seq_cst);
  guard.release();
  wake_if_waiting(s.tail_seq, s.get_waiters);
  return true;
}

bool QueueCore::get(Consumer consume, void* context, const Nanos* timeout) {
  State& st = *state_;
  Shared& s = *st.shm;
  const std::uint64_t cap = st.capacity;
  const Deadline deadline(timeout);
  auto available = [&] { return st.has_item(s.head.load(std::memory_order_acquire)); };
  // A wrap frame with nothing after it (a producer died between the two stores of
  // restart_at_ring_start): passed without an item. Under the consumers' lock.
  auto pass_bare_wrap = [&](std::uint64_t h) {
    const std::uint64_t pos = pos_of(h) % cap;
    FrameHeader fh;
    std::memcpy(&fh, st.ring + pos, sizeof fh);
    if (fh.kind != kWrap || ((pos_of(s.tail.load(std::memory_order_acquire)) - pos_of(h)) & kPosMask) != cap - pos)
      return false;
    s.head.store(make_word(count_of(h), pos_of(h) + (cap - pos)), std::memory_order_release);
    return true;
  };

  LockGuard guard(s.get_lock);
  std::uint64_t h = 0;
  for (;;) {
    if (!wait_until(available, s.tail_seq, s.get_waiters, deadline, t_get_spin)) return false;
    if (!guard.acquire(deadline)) return false;
    h = s.head.load(std::memory_order_relaxed);
    if (st.has_item(h) && !pass_bare_wrap(h)) break;
    guard.release();
    if (deadline.nonblocking() || deadline.passed()) return false;
  }

  std::uint64_t pos = pos_of(h) % cap;
  std::uint64_t advance = 0;
  FrameHeader fh;
  std::memcpy(&fh, st.ring + pos, sizeof fh);
  if (fh.kind == kWrap) {
    advance = cap - pos;
    pos = 0;
    std::memcpy(&fh, st.ring, sizeof fh);
  }
  const bool valid = (fh.kind == kInline || (fh.kind == kOutOfBand && fh.size == sizeof(OutOfBand))) &&
                     sizeof fh + pad8(fh.size) <= cap - pos;
  if (!valid) throw ProcessError("mp: corrupt queue (bad frame header)");
  advance += sizeof fh + pad8(fh.size);
  const std::uint64_t nh = make_word(count_of(h) + 1, pos_of(h) + advance);
  const char* payload = st.ring + pos + sizeof fh;

  auto commit = [&] {
    s.head.store(nh, std::memory_order_release);
    s.head_seq.store(static_cast<std::uint32_t>(nh), std::memory_order_seq_cst);
  };
  // Drops out-of-band messages of items that are gone: tags below `below` (a producer that died
  // between sending and committing, or a consumer that died between committing and dropping).
  auto drop_stale = [&](std::uint64_t below) {
    for (;;) {
      std::uint64_t tag = 0;
      platform::Handle fd = platform::kInvalidHandle;
      if (!platform::conn::receive_descriptor(st.recv_fd, tag, fd, true)) return;
      platform::close_handle(fd);
      if (tag >= below) return;
      if (platform::conn::receive_descriptor(st.recv_fd, tag, fd, false)) platform::close_handle(fd);
    }
  };

  if (fh.kind == kInline) {
    try {
      consume(context, payload, fh.size);
    } catch (...) {
      commit();  // an item that does not decode is dropped, not retried forever
      guard.release();
      wake_if_waiting(s.head_seq, s.put_waiters);
      throw;
    }
    commit();
  } else {
    OutOfBand ref;
    std::memcpy(&ref, payload, sizeof ref);
    drop_stale(ref.tag);
    std::uint64_t tag = 0;
    platform::Handle fd = platform::kInvalidHandle;
    const bool found = platform::conn::receive_descriptor(st.recv_fd, tag, fd, true);
    if (found && tag != ref.tag) platform::close_handle(fd);
    if (!found || tag != ref.tag || platform::shared_memory_size(fd) < ref.size) {
      if (found && tag == ref.tag) platform::close_handle(fd);
      commit();
      guard.release();
      wake_if_waiting(s.head_seq, s.put_waiters);
      throw ProcessError("mp: an out-of-band queue item is missing");
    }
    struct Cleanup {
      platform::Handle fd;
      void* map = nullptr;
      std::size_t size = 0;
      ~Cleanup() {
        if (map) platform::unmap(map, size);
        platform::close_handle(fd);
      }
    } cleanup{fd};
    std::exception_ptr error;
    try {
      cleanup.map = platform::map_shared(fd, ref.size);
      cleanup.size = ref.size;
      consume(context, static_cast<const char*>(cleanup.map), ref.size);
    } catch (...) {
      error = std::current_exception();
    }
    commit();
    drop_stale(ref.tag + 1);
    if (error) {
      guard.release();
      wake_if_waiting(s.head_seq, s.put_waiters);
      std::rethrow_exception(error);
    }
  }
  guard.release();
  wake_if_waiting(s.head_seq, s.put_waiters);
  return true;
}

void QueueCore::task_done() {
  Shared& s = *state_->shm;
  std::uint32_t d = s.done.load(std::memory_order_acquire);
  for (;;) {
    const std::uint64_t t = count_of(s.tail.load(std::memory_order_acquire));
    if ((d & kCountMask) == t) throw std::invalid_argument("task_done() called too many times");
    if (s.done.compare_exchange_weak(d, d + 1, std::memory_order_acq_rel)) break;
  }
  wake_if_waiting(s.done, s.join_waiters);
}

void QueueCore::join() {
  Shared& s = *state_->shm;
  for (;;) {
    s.join_waiters.store(1, std::memory_order_seq_cst);
    const std::uint32_t d = s.done.load(std::memory_order_seq_cst);
    if ((d & kCountMask) == count_of(s.tail.load(std::memory_order_seq_cst))) return;
    platform::wait_on_address(&s.done, d, nullptr);
  }
}

}  // namespace mp::detail
