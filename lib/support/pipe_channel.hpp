// lib/support/pipe_channel.hpp — the shared-memory transport of Pipe() (mp/connection.hpp).
//
// A Pipe is a connected socket pair plus one block of shared memory that holds a byte ring per
// direction: ring[i] carries the messages end i sends. Messages travel through the rings; the
// socket carries only what the kernel must do: sleep and wake-up (one-byte tokens), end of file
// when the peer's last copy is closed or its process dies, and fileno(). The block comes from the
// shared heap (mp/heap.hpp: no descriptor of its own, reused once no process holds it), except
// for a manager's connections, which hand theirs to a process that is no child (a memfd).
//
// Ring protocol (positions are byte counts that only grow; frames are 8-byte aligned):
//   frame = [u32 kind][u32 size] then `size` payload bytes.
//   kWhole: a whole message. kFirst: [u64 total] then the first chunk of a message too big for one
//   frame; kMore: the next chunk. kAbort: the chunked message in progress was abandoned (its sender
//   died or failed), the receiver drops what it has of it.
// - Senders of one direction are serialized by a robust FutexLock, receivers by another (a dead
//   holder is taken over). A frame is committed by one release store of `tail` after its bytes are
//   in place: a sender killed mid-send leaves no torn frame; a chunked message it left unfinished
//   is aborted by the next sender (or by a receiver waiting for it that sees it died).
// - A frame of at most kPipeCopyBytes (a small message) is also copied beside `tail`, in the line
//   the receiver polls: the look that sees the new tail brings the message with it. The copy is
//   read like a seqlock and used only for the frame at its recorded position; the ring stays the
//   reference (a sender killed while writing the copy leaves it marked invalid).
// - Frames are validated before use: a corrupt ring is OSError(EPROTO), never a crash, and sizes
//   are checked against maxlength before anything is allocated; buffers grow as chunks arrive.
// - Wake-up: a receiver that found nothing after spinning (and, when its sender last ran on its
//   CPU, after yielding to it a while) sleeps in two phases. First on the ring's `armed` word (a
//   futex): it stores kFutexArmed (seq_cst), re-checks the ring and waits while the word holds it,
//   for at most 10 ms; a sender that reads kFutexArmed after publishing clears it and wakes the
//   word (a futex wait and wake cost about half the socket's poll, token write and token read).
//   A futex is woken by no dead process, so the phase is short, and an end's close() wakes it too.
//   Then on the socket, whose end of file tells at once that the peer has gone: armed = 1
//   (seq_cst), re-check, sleep on the socket. A sender that reads 1 takes it (CAS to
//   kTaken | its pid) and writes one token. The receiver that sees the taken word settles it:
//   reads exactly that token (bounded if the sender died meanwhile), so tokens never pile up and a
//   socket is readable only for a token owed or end of file. connection::wait() and fileno() arm
//   the socket only (moving futex sleepers to it). In a tight ping-pong no system call is made.
// - A sender keeps the last `head` it read (a lower bound: head only grows) and reads the shared
//   one only when that bound leaves too little room, so in a stream the receiver's line stays put.
// - A sender finding the ring full spins, then sleeps on a futex in the mapping in slices, checking
//   the socket for a vanished peer (EPIPE) between slices.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "mp/heap.hpp"
#include "support/deadline.hpp"
#include "support/futex_lock.hpp"
#include "platform/handle.hpp"

namespace mp::detail {

// One direction's control words, in the shared mapping (zero-filled memory is a valid empty ring).
// Grouped by who writes them, each group on a cache line of its own: a poll of the other side then
// pulls away only the line of the store that publishes (consumes), never a lock's. `armed` sits
// beside `tail`: the sender reads it right after its store of `tail` (a line it holds then), and
// the receiver writes it only to sleep.
struct PipeRing {
  // Senders only.
  alignas(64) FutexLock send_lock;
  std::atomic<std::uint32_t> long_open{0};  // a chunked message is unfinished (under send_lock)
  // The senders' copy of `tail`, where the next frame goes (under send_lock): stored just before
  // `tail`, so a sender never reads the line the receiver polls (the receiver's look takes that
  // line from the sender's cache, and a read of it on the send path was a cross-CPU miss). Ahead
  // of `tail` only if a sender died between the two stores: its frame is whole, and the next
  // publish covers it.
  std::atomic<std::uint64_t> written{0};
  // Senders write, the receiver polls.
  alignas(64) std::atomic<std::uint64_t> tail{0};  // bytes published (written under send_lock)
  std::atomic<std::int32_t> sender_cpu{
      0};  // the CPU + 1 of the last publish (a spin hint; 0: unknown)
  // 0, kFutexArmed (a receiver may sleep on this word), 1 (on the socket), kTaken | pid.
  std::atomic<std::uint32_t> armed{0};
  // A copy of the last frame of at most kPipeCopyBytes (header included), so that the look which
  // sees the new tail brings the small message with it (one cross-CPU line, not two). copy_pos is
  // the frame's position | 1; 0 (zero-filled memory, or a sender writing the copy) for none. A
  // receiver reads the copy like a seqlock: copy_pos, the words, copy_pos again; on any mismatch
  // it reads the ring, which holds every frame whole.
  std::atomic<std::uint64_t> copy_pos{0};
  std::atomic<std::uint64_t> copy[5];
  // Receivers only.
  alignas(64) FutexLock recv_lock;
  // The receiver writes, senders read when the ring looks full.
  alignas(64) std::atomic<std::uint64_t> head{0};  // bytes consumed (written under recv_lock)
  std::atomic<std::int32_t> receiver_cpu{0};       // the CPU + 1 of the last consume (a spin hint)
  // An event count (lib/support/event_count.hpp): senders wait for room. On the head's line, which
  // the receiver writes anyway, so its check after each consume moves no line between CPUs.
  std::atomic<std::uint32_t> room_seq{0};
};

inline constexpr std::size_t kPipeCopyBytes = sizeof PipeRing::copy;
static_assert(offsetof(PipeRing, copy) + kPipeCopyBytes == offsetof(PipeRing, recv_lock),
              "the tail, its arming and the copy share one cache line");

struct PipeShared {
  PipeRing ring[2];
};

// A waiter on a Pipe end's socket sleeps in slices, 10 ms doubling up to this, and looks again:
// two threads waiting on one end (recv() and connection::wait()) share one token, which the first
// to wake reads, so the other may sleep on with a message in the ring.
inline constexpr std::chrono::nanoseconds kSocketSliceMax = std::chrono::seconds(1);
inline constexpr std::chrono::nanoseconds kSocketSliceMin = std::chrono::milliseconds(10);

inline constexpr std::size_t kPipeRingBytes = std::size_t{256} << 10;  // per direction, power of 2
inline constexpr std::size_t kPipeRingsOffset = 1024;  // the rings follow PipeShared
inline constexpr std::size_t kPipeMapBytes = kPipeRingsOffset + 2 * kPipeRingBytes;
inline constexpr std::size_t kPipeAlign = 64;
static_assert(sizeof(PipeShared) <= kPipeRingsOffset && kPipeRingsOffset % kPipeAlign == 0);

// The shared memory of one Pipe in a process, shared by its ends there: a shared-heap block, or a
// memfd mapped for this Pipe alone (a manager's connection).
struct PipeMapping {
  heap::SharedBlock block;
  platform::Handle memfd = platform::kInvalidHandle;
  void* address = nullptr;
  PipeMapping() = default;
  PipeMapping(const PipeMapping&) = delete;
  PipeMapping& operator=(const PipeMapping&) = delete;
  ~PipeMapping();
};

class PipeChannel;
// For tests and the fuzz target only: the ring an end receives from, to corrupt or inspect it.
struct PipeChannelAccess {
  static PipeRing& in_ring(const PipeChannel& ch) noexcept;
  static char* in_data(const PipeChannel& ch) noexcept;
};

class PipeChannel {
 public:
  // Both ends of a new Pipe over the socket pair {s0, s1} (not owned), in a shared-heap block
  // (Storage::heap) or a memfd of their own (Storage::memfd: for a peer that is not a child).
  enum class Storage { heap, memfd };
  static std::pair<std::unique_ptr<PipeChannel>, std::unique_ptr<PipeChannel>> create(
      platform::Handle s0, platform::Handle s1, Storage storage);
  // End `end` in a process that received `memfd` (owned from now on) and `socket` (not owned).
  static std::unique_ptr<PipeChannel> attach(platform::Handle memfd, int end,
                                             platform::Handle socket);
  // End `end` in a process that received the heap block `rings` and `socket` (not owned).
  static std::unique_ptr<PipeChannel> attach(heap::SharedBlock rings, int end,
                                             platform::Handle socket);
  ~PipeChannel();

  // The descriptor of the shared memory (a heap block's: its arena's).
  platform::Handle memfd() const noexcept;
  // The heap block of the rings; null for a memfd of their own.
  const heap::SharedBlock* block() const noexcept { return map_->block ? &map_->block : nullptr; }
  int end() const noexcept { return end_; }

  // One message. Blocks while the ring is full. Throws OSError (EPIPE when the peer is gone,
  // EPROTO for a corrupt ring).
  void send(const char* data, std::size_t size);
  // The next message, at most `maxlength` bytes. Throws EOFError (peer closed, ring empty),
  // OSError EMSGSIZE "bad message length" (the message is dropped), OSError EPROTO (corrupt ring,
  // or end of file in the middle of a chunked message).
  std::string recv(std::size_t maxlength);
  // Whether a message or EOF is available, waiting up to `timeout` (null: forever).
  bool poll(const platform::Nanos* timeout);

  // connection::wait(): ready_now() looks without a system call (messages only); arm() makes a
  // sender wake the socket; after the sleep, disarm(socket_was_ready) and then ready() tells.
  // arm() returns whether this call set the word (else another waiter's arming is left alone).
  bool ready_now() const noexcept;
  bool arm();
  void disarm(bool socket_was_ready, bool armed_here);
  void finish_wait(bool socket_was_ready, bool armed_here) {
    disarm(socket_was_ready, armed_here);
    if (descriptor_mode()) leave();
  }
  bool ready();
  platform::Handle socket() const noexcept { return sock_; }

  // fileno(): a descriptor readable exactly when a message or EOF is available (descriptor mode).
  platform::Handle fileno();
  // Wakes a receiver of the peer end asleep on the ring's word, to look at the socket (after this
  // process closed its socket: end of file, if it held the last copy).
  void wake_peer() noexcept;
  // Closes this process's descriptor-mode handles. The memfd and mapping go with the object.
  void close() noexcept;

 private:
  friend struct PipeChannelAccess;
  // The ring this end receives from and its bytes.
  PipeRing& in_ring() const noexcept { return shared()->ring[1 - end_]; }
  char* in_data() const noexcept { return data(1 - end_); }
  enum class Wait { data, eof, timeout };
  PipeChannel(std::shared_ptr<PipeMapping> map, int end, platform::Handle socket)
      : map_(std::move(map)), end_(end), sock_(socket) {}
  PipeShared* shared() const noexcept { return static_cast<PipeShared*>(map_->address); }
  char* data(int ring) const noexcept {
    return static_cast<char*>(map_->address) + kPipeRingsOffset +
           static_cast<std::size_t>(ring) * kPipeRingBytes;
  }
  PipeRing& out_ring() const noexcept { return shared()->ring[end_]; }
  char* out_data() const noexcept { return data(end_); }

  void put_frame(std::uint32_t kind, const void* prefix, std::size_t prefix_size,
                 const char* payload, std::size_t size);
  void wait_room(std::uint64_t tail, std::uint64_t need);
  void publish(std::uint64_t tail);
  Wait wait_data(const Deadline& deadline, bool mid_message);
  std::optional<Wait> sleep_on_word(const Deadline& deadline);
  void settle(std::uint32_t taken);
  void after_sleep(bool socket_was_ready);
  void rescue_dead_sender();
  void consume(std::uint64_t head);
  bool descriptor_mode() const noexcept;
  void leave() noexcept;  // descriptor mode: re-arm, and set the event while messages remain
  void close_descriptors() noexcept;
  friend struct LeaveGuard;

  std::shared_ptr<PipeMapping> map_;
  int end_ = 0;
  platform::Handle sock_ = platform::kInvalidHandle;
  // Descriptor mode (process-local: the pid that created the handles; a forked child starts over).
  // desc_mutex_ serializes this process's threads over the handles and the event's state.
  std::atomic<int> desc_pid_{0};
  std::mutex desc_mutex_;
  platform::Handle event_ = platform::kInvalidHandle;
  platform::Handle ready_set_ = platform::kInvalidHandle;
  bool event_on_ = false;
  // The out ring's head as last read by this process's senders (under send_lock).
  std::uint64_t head_seen_ = 0;
};

inline PipeRing& PipeChannelAccess::in_ring(const PipeChannel& ch) noexcept { return ch.in_ring(); }
inline char* PipeChannelAccess::in_data(const PipeChannel& ch) noexcept { return ch.in_data(); }

}  // namespace mp::detail

namespace mp {
class Connection;
namespace detail {
// Access to a Connection's internals for the library, its tests and fuzz targets.
struct ConnectionAccess {
  // The shared-memory channel of a Pipe end; null for other connections and closed ones.
  static PipeChannel* pipe(const Connection& c) noexcept;
  static platform::Handle socket(const Connection& c) noexcept;
  static void set_pipe(Connection& c, std::unique_ptr<PipeChannel> pipe) noexcept;
};
}  // namespace detail
}  // namespace mp
