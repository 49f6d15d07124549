// The shared-memory transport of Pipe() (lib/support/pipe_channel.hpp).
#include "support/pipe_channel.hpp"

#include <bit>
#include <cerrno>
#include <climits>
#include <cstring>
#include <new>

#include "heap_impl.hpp"
#include "support/event_count.hpp"
#include "mp/errors.hpp"
#include "support/spin.hpp"
#include "platform/handle.hpp"
#include "platform/io.hpp"
#include "platform/shared_memory.hpp"
#include "platform/wait.hpp"

namespace mp::detail {
namespace {

using platform::Nanos;

constexpr std::uint32_t kWhole = 1, kFirst = 2, kMore = 3, kAbort = 4;
constexpr std::uint32_t kTaken = 0x8000'0000u;
// PipeRing::armed: a receiver sleeps on the word itself (futex), not on the socket.
constexpr std::uint32_t kFutexArmed = 2;
constexpr std::size_t kHeader = 8;
constexpr std::size_t kMaxFrame = kPipeRingBytes / 4;  // payload bytes in one frame
constexpr Nanos kRoomSlice = std::chrono::milliseconds(10);
constexpr Nanos kMidMessageSlice = std::chrono::milliseconds(50);
constexpr auto kTokenPatience = std::chrono::milliseconds(100);
// How long a receiver sleeps on the armed word before it sleeps on the socket, whose end of file
// tells at once that the peer has gone (a futex cannot): a killed peer is noticed within this.
constexpr Nanos kFutexPhase = std::chrono::milliseconds(10);
// A receiver, or a sender with a full ring, spins before it sleeps (lib/support/spin.hpp), adapted per
// thread; the peer's CPU, published in the ring, tells whether to pause or yield between looks.
constinit thread_local Spinner t_data_spin, t_room_spin, t_yield_spin;
// A receiver whose sender shares its CPU yields to it before sleeping (a yield costs about half a
// futex sleep and wake). A yield-wait that fails, or is answered only after kSpinMax, means that
// another thread holds the CPU (a yield hands it a whole time slice: 1.4 ms a round trip against
// 13 us sleeping, with one busy loop on the CPU) or that the peer is busy elsewhere: the receiver
// then sleeps at once for a while, 1 ms doubling with each such wait up to 1 s (so a busy CPU
// costs at most a slice a second), back to 1 ms after a quick answer.
constexpr Nanos kNoYieldMin = std::chrono::milliseconds(1), kNoYieldMax = std::chrono::seconds(1);
constinit thread_local Nanos t_no_yield_for = kNoYieldMin;
constinit thread_local platform::Clock::time_point t_no_yield_until{};

constexpr std::uint64_t align8(std::uint64_t n) { return (n + 7) & ~std::uint64_t{7}; }

[[noreturn]] void corrupt() {
  throw OSError(EPROTO, "corrupt message in the pipe's shared memory");
}

void copy_in(char* ring, std::uint64_t pos, const void* src, std::size_t n) {
  const std::size_t off = static_cast<std::size_t>(pos & (kPipeRingBytes - 1));
  const std::size_t first = std::min(n, kPipeRingBytes - off);
  std::memcpy(ring + off, src, first);
  std::memcpy(ring, static_cast<const char*>(src) + first, n - first);
}

void copy_out(const char* ring, std::uint64_t pos, void* dst, std::size_t n) {
  const std::size_t off = static_cast<std::size_t>(pos & (kPipeRingBytes - 1));
  const std::size_t first = std::min(n, kPipeRingBytes - off);
  std::memcpy(dst, ring + off, first);
  std::memcpy(static_cast<char*>(dst) + first, ring, n - first);
}

// CPU hints (PipeRing::sender_cpu, receiver_cpu): the CPU + 1, 0 when unknown.
void note_cpu(std::atomic<std::int32_t>& hint) noexcept {
  const std::int32_t cpu = platform::current_cpu() + 1;
  if (hint.load(std::memory_order_relaxed) != cpu) hint.store(cpu, std::memory_order_relaxed);
}
int peer_cpu(const std::atomic<std::int32_t>& hint) noexcept {
  return hint.load(std::memory_order_relaxed) - 1;
}

// The words of a small frame: its header, then `size` payload bytes (zero-padded). Each read
// is one load no wider than the stores that wrote its bytes, so none waits for a store to drain
// (a word loaded from bytes just stored piecewise did: a third of a send's time in one process).
void frame_words(const std::uint32_t (&header)[2], const char* payload, std::size_t size,
                 std::uint64_t* words) noexcept {
  if constexpr (std::endian::native == std::endian::little)
    words[0] = header[0] | std::uint64_t{header[1]} << 32;
  else
    words[0] = std::uint64_t{header[0]} << 32 | header[1];
  std::size_t i = 0;
  for (; 8 * i + 8 <= size; ++i) std::memcpy(&words[1 + i], payload + 8 * i, 8);
  if (8 * i == size) return;
  std::uint64_t last = 0;  // the bytes in memory order, in a register
  for (std::size_t j = 0; 8 * i + j < size; ++j) {
    const std::uint64_t byte = static_cast<std::uint8_t>(payload[8 * i + j]);
    last |= std::endian::native == std::endian::little ? byte << (8 * j) : byte << (56 - 8 * j);
  }
  words[1 + i] = last;
}

// Reads PipeRing::copy into `words` if it holds the frame at `pos` (a seqlock's read side).
bool read_copy(const PipeRing& r, std::uint64_t pos, std::uint64_t* words) noexcept {
  if (r.copy_pos.load(std::memory_order_acquire) != (pos | 1)) return false;
  for (std::size_t i = 0; i < kPipeCopyBytes / 8; ++i)
    words[i] = r.copy[i].load(std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_acquire);
  return r.copy_pos.load(std::memory_order_relaxed) == (pos | 1);
}

bool nonempty(const PipeRing& r) noexcept {
  return r.tail.load(std::memory_order_seq_cst) != r.head.load(std::memory_order_seq_cst);
}

// Clears a futex arming (kFutexArmed), waking whoever sleeps on it: the word is never cleared
// without a wake-up, and a receiver sleeps only while it holds kFutexArmed.
void clear_futex_arm(std::atomic<std::uint32_t>& armed) noexcept {
  std::uint32_t v = kFutexArmed;
  if (armed.compare_exchange_strong(v, 0)) platform::wake_address(&armed, INT_MAX);
}

}  // namespace

PipeMapping::~PipeMapping() {
  if (memfd == platform::kInvalidHandle) return;  // a heap block: it goes with `block`
  platform::unmap(address, kPipeMapBytes);
  platform::close_handle(memfd);
}

// Ends the descriptor mode's receive call: re-arms, and sets the event while messages remain.
struct LeaveGuard {
  PipeChannel& c;
  ~LeaveGuard() {
    if (c.descriptor_mode()) c.leave();
  }
};

std::pair<std::unique_ptr<PipeChannel>, std::unique_ptr<PipeChannel>> PipeChannel::create(
    platform::Handle s0, platform::Handle s1, Storage storage) {
  auto map = std::make_shared<PipeMapping>();
  if (storage == Storage::heap) {
    map->block = heap::SharedBlock(kPipeMapBytes, kPipeAlign);  // zero-filled
    map->address = map->block.data();
  } else {
    map->memfd = platform::create_shared_memory(kPipeMapBytes);
    map->address = platform::map_shared(map->memfd, kPipeMapBytes);
  }
  new (map->address) PipeShared();
  return {std::unique_ptr<PipeChannel>(new PipeChannel(map, 0, s0)),
          std::unique_ptr<PipeChannel>(new PipeChannel(map, 1, s1))};
}

std::unique_ptr<PipeChannel> PipeChannel::attach(platform::Handle memfd, int end,
                                                 platform::Handle socket) {
  auto map = std::make_shared<PipeMapping>();
  map->memfd = memfd;
  if ((end != 0 && end != 1) || platform::shared_memory_size(memfd) < kPipeMapBytes)
    throw UnpicklingError("mp: the shared memory of a Pipe received is not one");
  map->address = platform::map_shared(memfd, kPipeMapBytes);
  return std::unique_ptr<PipeChannel>(new PipeChannel(std::move(map), end, socket));
}

std::unique_ptr<PipeChannel> PipeChannel::attach(heap::SharedBlock rings, int end,
                                                 platform::Handle socket) {
  if ((end != 0 && end != 1) || rings.size() != kPipeMapBytes ||
      reinterpret_cast<std::uintptr_t>(rings.data()) % kPipeAlign != 0)
    throw UnpicklingError("mp: the shared memory of a Pipe received is not one");
  auto map = std::make_shared<PipeMapping>();
  map->address = rings.data();
  map->block = std::move(rings);
  return std::unique_ptr<PipeChannel>(new PipeChannel(std::move(map), end, socket));
}

platform::Handle PipeChannel::memfd() const noexcept {
  return map_->block ? heap::detail::BlockAccess::arena_handle(map_->block) : map_->memfd;
}

PipeChannel::~PipeChannel() { close(); }

void PipeChannel::close() noexcept {
  if (descriptor_mode()) {  // stop asking senders for tokens nobody here will read
    std::uint32_t one = 1;
    in_ring().armed.compare_exchange_strong(one, 0);
  }
  std::lock_guard lock(desc_mutex_);
  close_descriptors();
}

void PipeChannel::close_descriptors() noexcept {
  platform::close_handle(ready_set_);
  platform::close_handle(event_);
  ready_set_ = event_ = platform::kInvalidHandle;
  desc_pid_ = 0;
}

// ---- sending

void PipeChannel::send(const char* data, std::size_t size) {
  PipeRing& r = out_ring();
  FutexLockGuard guard(r.send_lock, FutexLockGuard::acquire_now);
  if (r.long_open.load(std::memory_order_relaxed)) {  // a sender died or failed mid-message
    put_frame(kAbort, nullptr, 0, nullptr, 0);
    r.long_open.store(0, std::memory_order_relaxed);
  }
  if (size <= kMaxFrame) {
    put_frame(kWhole, nullptr, 0, data, size);
    return;
  }
  r.long_open.store(1, std::memory_order_relaxed);
  const std::uint64_t total = size;
  std::size_t off = kMaxFrame - sizeof total;
  put_frame(kFirst, &total, sizeof total, data, off);
  while (off < size) {
    const std::size_t n = std::min(kMaxFrame, size - off);
    put_frame(kMore, nullptr, 0, data + off, n);
    off += n;
  }
  r.long_open.store(0, std::memory_order_relaxed);
}

void PipeChannel::put_frame(std::uint32_t kind, const void* prefix, std::size_t prefix_size,
                            const char* payload, std::size_t size) {
  PipeRing& r = out_ring();
  char* ring = out_data();
  const auto len = static_cast<std::uint32_t>(prefix_size + size);
  const std::uint64_t tail = r.written.load(std::memory_order_relaxed);
  const std::uint64_t need = align8(kHeader + len);
  wait_room(tail, need);
  const std::uint32_t header[2] = {kind, len};
  if (need <= kPipeCopyBytes && prefix_size == 0) {  // a small frame: copied beside the tail too
    std::uint64_t words[kPipeCopyBytes / 8];
    const std::size_t n = need / 8;
    frame_words(header, payload, size, words);
    r.copy_pos.store(0, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    for (std::size_t i = 0; i < n; ++i) r.copy[i].store(words[i], std::memory_order_relaxed);
    r.copy_pos.store(tail | 1, std::memory_order_release);
    for (std::size_t i = 0; i < n; ++i)  // 8-aligned: no word wraps around the ring's end
      std::memcpy(ring + ((tail + 8 * i) & (kPipeRingBytes - 1)), &words[i], 8);
  } else {
    copy_in(ring, tail, header, kHeader);
    if (prefix_size) copy_in(ring, tail + kHeader, prefix, prefix_size);
    if (size) copy_in(ring, tail + kHeader + prefix_size, payload, size);
  }
  publish(tail + need);
}

void PipeChannel::wait_room(std::uint64_t tail, std::uint64_t need) {
  PipeRing& r = out_ring();
  // tail - head_seen_ may exceed the ring when head_seen_ is old (a new attach starts at 0).
  if (tail - head_seen_ <= kPipeRingBytes - need) return;
  const auto room = [&] {
    head_seen_ = r.head.load(std::memory_order_seq_cst);
    const std::uint64_t used = tail - head_seen_;
    if (used > kPipeRingBytes || (used & 7)) corrupt();
    return kPipeRingBytes - used >= need;
  };
  if (room() || t_room_spin.spin(room, peer_cpu(r.receiver_cpu))) return;
  for (;;) {
    const std::uint32_t seq = prepare_sleep(r.room_seq);
    if (room()) return;
    sleep_on(r.room_seq, seq, &kRoomSlice);
    if (room()) return;
    if (platform::peer_closed(sock_))
      platform::throw_errno(EPIPE, "cannot write to the connection");
  }
}

void PipeChannel::publish(std::uint64_t tail) {
  PipeRing& r = out_ring();
  r.written.store(tail, std::memory_order_relaxed);
  // Stored without a look first (a look would miss: the receiver's polls take the line away).
  r.sender_cpu.store(platform::current_cpu() + 1, std::memory_order_relaxed);
  r.tail.store(tail, std::memory_order_seq_cst);
  std::uint32_t v = r.armed.load(std::memory_order_seq_cst);
  while (v == kFutexArmed || v == 1) {
    if (v == kFutexArmed) {  // a receiver sleeps on the word: clearing it is its wake-up
      if (!r.armed.compare_exchange_strong(v, 0)) continue;
      platform::wake_address(&r.armed, INT_MAX);
      return;
    }
    if (r.armed.compare_exchange_strong(
            v, kTaken | static_cast<std::uint32_t>(platform::cached_pid()))) {
      if (!platform::write_token(sock_) && platform::peer_closed(sock_))
        platform::throw_errno(EPIPE, "cannot write to the connection");
      return;
    }
  }
}

void PipeChannel::wake_peer() noexcept { clear_futex_arm(out_ring().armed); }

// ---- receiving

void PipeChannel::consume(std::uint64_t head) {
  PipeRing& r = in_ring();
  note_cpu(r.receiver_cpu);
  r.head.store(head, std::memory_order_seq_cst);
  if (count_event_if_sleepers(r.room_seq)) wake_sleepers(r.room_seq);
}

std::string PipeChannel::recv(std::size_t maxlength) {
  LeaveGuard leave{*this};
  PipeRing& r = in_ring();
  const char* ring = in_data();
  FutexLockGuard guard(r.recv_lock, FutexLockGuard::acquire_now);
  std::string out;
  bool in_long = false;
  std::uint64_t total = 0;
  for (;;) {
    if (wait_data(Deadline::none(), in_long) == Wait::eof) {
      if (in_long) throw OSError(EPROTO, "got end of file during message");
      throw EOFError();
    }
    const std::uint64_t head = r.head.load(std::memory_order_relaxed);
    const std::uint64_t avail = r.tail.load(std::memory_order_acquire) - head;
    if (avail > kPipeRingBytes || avail < kHeader || (head & 7)) corrupt();
    // The frame's bytes: from the copy beside the tail when it holds this frame, else the ring.
    std::uint64_t words[kPipeCopyBytes / 8];
    const bool copied = read_copy(r, head, words);
    const auto read = [&](std::uint64_t pos, void* dst, std::size_t n) {
      if (copied && pos - head + n <= kPipeCopyBytes)
        std::memcpy(dst, reinterpret_cast<const char*>(words) + (pos - head), n);
      else
        copy_out(ring, pos, dst, n);
    };
    std::uint32_t h[2];
    read(head, h, kHeader);
    const std::uint32_t kind = h[0], size = h[1];
    if (size > kMaxFrame || align8(kHeader + size) > avail) corrupt();
    const std::uint64_t next = head + align8(kHeader + size);
    switch (kind) {
      case kWhole:
        if (in_long) corrupt();
        if (size > maxlength) {
          consume(next);
          throw OSError(EMSGSIZE, "bad message length");
        }
        out.resize(size);
        read(head + kHeader, out.data(), size);
        consume(next);
        return out;
      case kFirst: {
        if (in_long || size < sizeof total) corrupt();
        read(head + kHeader, &total, sizeof total);
        const std::size_t chunk = size - sizeof total;
        if (total <= chunk) corrupt();
        if (total > maxlength) {
          consume(next);  // the rest is skipped as a remnant
          throw OSError(EMSGSIZE, "bad message length");
        }
        out.resize(chunk);
        read(head + kHeader + sizeof total, out.data(), chunk);
        in_long = true;
        consume(next);
        break;
      }
      case kMore: {
        if (!in_long) {  // the rest of a message whose receiver died or refused it: skipped
          consume(next);
          break;
        }
        if (total - out.size() < size) corrupt();
        const std::size_t old = out.size();
        out.resize(old + size);  // grows geometrically: at most twice what arrived
        read(head + kHeader, out.data() + old, size);
        consume(next);
        if (out.size() == total) return out;
        break;
      }
      case kAbort:
        consume(next);
        in_long = false;
        out.clear();
        break;
      default:
        corrupt();
    }
  }
}

bool PipeChannel::poll(const Nanos* timeout) {
  LeaveGuard leave{*this};
  if (nonempty(in_ring())) return true;
  const Deadline deadline(timeout);
  if (deadline.nonblocking()) return platform::peer_closed(sock_) || nonempty(in_ring());
  return wait_data(deadline, false) != Wait::timeout;
}

PipeChannel::Wait PipeChannel::wait_data(const Deadline& deadline, bool mid_message) {
  PipeRing& r = in_ring();
  if (nonempty(r)) return Wait::data;
  // Each look also asks for the line the next frame will be in, so that the look which sees the
  // new tail has that line on its way too (one cross-CPU miss instead of two in a row).
  const char* next = in_data() + (r.head.load(std::memory_order_relaxed) & (kPipeRingBytes - 1));
  const auto look = [&] {
    __builtin_prefetch(next);
    return nonempty(r);
  };
  if (t_data_spin.spin(look, peer_cpu(r.sender_cpu))) return Wait::data;
  // A sender that last ran on this CPU needs it to answer: yield to it a while before sleeping.
  const int sender = peer_cpu(r.sender_cpu);
  if ((!platform::several_cpus() || (sender >= 0 && sender == platform::current_cpu())) &&
      platform::Clock::now() >= t_no_yield_until) {
    const auto start = platform::Clock::now();
    const bool answered = t_yield_spin.yield_to_peer(look);
    const auto end = platform::Clock::now();
    // An answer later than a spin's whole budget came after another thread's time slice.
    if (!answered || end - start > kSpinMax) {
      t_no_yield_until = end + t_no_yield_for;
      t_no_yield_for = std::min(2 * t_no_yield_for, kNoYieldMax);
    } else {
      t_no_yield_for = std::max(t_no_yield_for / 2, kNoYieldMin);
    }
    if (answered) return Wait::data;
  }
  if (const auto w = sleep_on_word(deadline)) return *w;
  Nanos socket_slice = kSocketSliceMin;
  for (;;) {
    const bool mine = arm();
    if (nonempty(r)) {
      disarm(false, mine);
      return Wait::data;
    }
    // No peer_closed() look before sleeping: a socket whose peer has gone is readable (EOF), so
    // the sleep below ends at once then, and the look after it answers (one system call fewer
    // per sleeping receive).
    // In slices (see kSocketSliceMax): another thread waiting on this end may take the token.
    const Nanos slice = deadline.left(mid_message ? kMidMessageSlice : socket_slice);
    socket_slice = std::min(2 * socket_slice, kSocketSliceMax);
    const bool woke = platform::wait_readable(sock_, slice == Nanos::max() ? nullptr : &slice);
    after_sleep(woke);
    if (nonempty(r)) {
      disarm(false, mine);
      return Wait::data;
    }
    if (woke && platform::peer_closed(sock_)) {
      disarm(false, mine);
      return nonempty(r) ? Wait::data : Wait::eof;
    }
    if (!woke) {
      if (deadline.passed()) {
        disarm(false, mine);
        return Wait::timeout;
      }
      if (mid_message) rescue_dead_sender();
    }
  }
}

// The first kFutexPhase of a sleep: on the armed word (a futex wait and wake cost about half the
// socket's poll, token write and token read). Returns nothing when the socket must be slept on:
// the phase passed, or a waiter for the socket (connection::wait, fileno) armed it.
std::optional<PipeChannel::Wait> PipeChannel::sleep_on_word(const Deadline& deadline) {
  PipeRing& r = in_ring();
  const Deadline phase = Deadline::after(kFutexPhase);
  for (;;) {
    std::uint32_t v = r.armed.load(std::memory_order_seq_cst);
    if (v == 0 && !r.armed.compare_exchange_strong(v, kFutexArmed)) continue;
    if (v != 0 && v != kFutexArmed) return std::nullopt;
    if (nonempty(r)) {
      clear_futex_arm(r.armed);
      return Wait::data;
    }
    const Nanos slice = std::min(phase.left(), deadline.left());
    const bool woke =
        slice > Nanos::zero() && platform::wait_on_address(&r.armed, kFutexArmed, &slice);
    if (nonempty(r)) {
      clear_futex_arm(r.armed);
      return Wait::data;
    }
    if (woke && r.armed.load(std::memory_order_seq_cst) != kFutexArmed &&
        platform::peer_closed(sock_))  // no data: maybe woken by the peer's close
      return nonempty(r) ? Wait::data : Wait::eof;
    if (deadline.passed()) {
      clear_futex_arm(r.armed);
      return Wait::timeout;
    }
    if (phase.passed()) {
      clear_futex_arm(r.armed);
      return std::nullopt;
    }
  }
}

bool PipeChannel::ready_now() const noexcept { return nonempty(in_ring()); }

bool PipeChannel::arm() {
  PipeRing& r = in_ring();
  for (;;) {
    std::uint32_t v = r.armed.load(std::memory_order_seq_cst);
    if (v == 1) return false;
    if (v == 0 || v == kFutexArmed) {
      if (!r.armed.compare_exchange_strong(v, 1, std::memory_order_seq_cst)) continue;
      // Receivers asleep on the word move to the socket.
      if (v == kFutexArmed) platform::wake_address(&r.armed, INT_MAX);
      return true;
    }
    settle(v);  // a token is owed from an earlier arming: collect it first
  }
}

void PipeChannel::disarm(bool socket_was_ready, bool armed_here) {
  after_sleep(socket_was_ready);
  std::uint32_t one = 1;
  if (armed_here) in_ring().armed.compare_exchange_strong(one, 0);
}

bool PipeChannel::ready() {
  return nonempty(in_ring()) || platform::peer_closed(sock_) || nonempty(in_ring());
}

void PipeChannel::after_sleep(bool socket_was_ready) {
  PipeRing& r = in_ring();
  const std::uint32_t v = r.armed.load(std::memory_order_seq_cst);
  if (v & kTaken) {
    settle(v);
  } else if (socket_was_ready && !nonempty(r) && !platform::peer_closed(sock_)) {
    (void)platform::read_token(sock_);  // a token given up for lost arrived late: drop it
  }
}

// Reads the one token the sender that took `taken` owes. Only the thread that clears the word
// reads it; if the sender died before writing it (or it is very late) the wait gives up.
void PipeChannel::settle(std::uint32_t taken) {
  if (!in_ring().armed.compare_exchange_strong(taken, 0)) return;
  const Deadline give_up = Deadline::after(kTokenPatience);
  const Nanos slice = std::chrono::milliseconds(1);
  for (;;) {
    if (platform::read_token(sock_) >= 0) return;
    if (platform::process_dead(static_cast<int>(taken & ~kTaken)) || give_up.passed()) {
      (void)platform::read_token(sock_);
      return;
    }
    platform::wait_readable(sock_, &slice);
  }
}

// A receiver waiting for the rest of a chunked message whose sender died: aborts it in the ring
// (as the next sender would), so the receiver does not wait for a sender that is gone.
void PipeChannel::rescue_dead_sender() {
  PipeRing& r = in_ring();
  const int owner = r.send_lock.owner_pid();
  if (owner == 0 || !platform::process_dead(owner) ||
      r.send_lock.try_acquire() == Acquire::timed_out)
    return;
  if (r.long_open.load(std::memory_order_relaxed)) {
    const std::uint64_t tail = r.written.load(std::memory_order_relaxed);
    const std::uint64_t used = tail - r.head.load(std::memory_order_seq_cst);
    if (used <= kPipeRingBytes - kHeader) {
      const std::uint32_t header[2] = {kAbort, 0};
      copy_in(in_data(), tail, header, kHeader);
      r.written.store(tail + kHeader, std::memory_order_relaxed);
      r.tail.store(tail + kHeader, std::memory_order_seq_cst);
      r.long_open.store(0, std::memory_order_relaxed);
    }
  }
  r.send_lock.release();
}

// ---- descriptor mode

bool PipeChannel::descriptor_mode() const noexcept {
  return desc_pid_ != 0 && desc_pid_ == platform::cached_pid();
}

platform::Handle PipeChannel::fileno() {
  {
    std::lock_guard lock(desc_mutex_);
    if (descriptor_mode()) return ready_set_;
    close_descriptors();  // handles inherited from the parent are not this process's to use
    event_ = platform::make_event();
    ready_set_ = platform::make_ready_set(sock_, event_);
    event_on_ = false;
    desc_pid_ = platform::cached_pid();
  }
  leave();
  return ready_set_;
}

void PipeChannel::leave() noexcept {
  try {
    std::lock_guard lock(desc_mutex_);
    PipeRing& r = in_ring();
    const std::uint32_t v = r.armed.load(std::memory_order_seq_cst);
    if (v & kTaken) settle(v);
    (void)arm();
    const bool on = nonempty(r);
    if (on != event_on_) {
      platform::set_event(event_, on);
      event_on_ = on;
    }
  } catch (...) {
  }
}

}  // namespace mp::detail
