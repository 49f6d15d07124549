// Handles sent to another process: SCM_RIGHTS over Unix sockets (handle_passing_posix.cpp), and
// the descriptor-number moves the forkserver's children need. Windows (handle_passing_win32.cpp):
// the receiver takes the handle out of the sender with DuplicateHandle, so the sender must still
// run when it is received; the descriptor-number moves are POSIX-only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "platform/handle.hpp"

namespace mp::platform {

// A connected pair of datagram sockets that keep message boundaries (for descriptor passing).
std::pair<Handle, Handle> datagram_pair();
// One datagram socket that is its own peer (handle_passing_linux.cpp): a message sent on it by any
// process holding it is received by any process holding it, and no other socket can send to it.
// Half the descriptors of a datagram_pair() used as one queue.
Handle datagram_loop();
// Sends `fd` with an 8-byte tag as one datagram without blocking; false when the socket's
// buffer is full.
bool send_descriptor(Handle socket, std::uint64_t tag, Handle fd);
// Without blocking, receives the next datagram: its tag and descriptor (the caller owns it).
// `peek` leaves the datagram queued (the descriptor is still duplicated to the caller).
// Returns false when none is queued.
bool receive_descriptor(Handle socket, std::uint64_t& tag, Handle& fd, bool peek);

// Most descriptors one stream message carries (below the kernel's SCM_MAX_FD).
inline constexpr std::size_t kMaxDescriptors = 250;
// Sends `size` bytes (at least 1) over a stream socket with `fds` attached to the first of them.
// Blocking; throws OSError (EPIPE when the peer is gone; never SIGPIPE).
void send_with_descriptors(Handle socket, const void* data, std::size_t size,
                           const std::vector<Handle>& fds);
// Receives exactly `size` bytes and the descriptors attached to them (close-on-exec, owned by
// the caller). Returns false at end of file before the first byte. Throws OSError, or
// ProcessError for a truncated message or more than kMaxDescriptors descriptors.
bool receive_with_descriptors(Handle socket, void* data, std::size_t size,
                              std::vector<Handle>& fds);

// ---- handles carried in shared memory (Windows; kHandlesTravelInMemory)
// On Windows a handle can travel as a number written anywhere (the sender's pid and the value of a
// copy in flight in the sender), so a queue hands its out-of-band items over in its ring instead of
// a datagram socket (POSIX: no such way; these throw std::logic_error there).
#ifdef _WIN32
inline constexpr bool kHandlesTravelInMemory = true;
#else
inline constexpr bool kHandlesTravelInMemory = false;
#endif
// A token for `h` that a process receives with take_handed_off() while process `holder` runs: a
// copy of `h` is put in flight in `holder` (the caller, or another process whose handle table it
// may write, e.g. its parent) until released. Throws OSError if `holder` cannot be opened.
std::uint64_t hand_off(Handle h, int holder);
// The receiver's own copy of the handle behind `token` (the holder's copy stays in flight). Throws
// OSError when the holder has ended (its copy is gone with it).
Handle take_handed_off(std::uint64_t token);
// Closes the holder's in-flight copy behind `token` (from any process; nothing if it ended).
void release_handed_off(std::uint64_t token) noexcept;
// The process holding the in-flight copy behind `token`.
int handed_off_holder(std::uint64_t token) noexcept;

// Moves `fd` to the number `target` (close-on-exec), closing whatever `target` was.
void move_descriptor(Handle fd, Handle target);
// Moves `fd` to the number `target` without close-on-exec (an inherited descriptor).
void move_descriptor_inheritable(Handle fd, Handle target);
// A duplicate of `fd` numbered at least `minimum` (close-on-exec).
Handle duplicate_above(Handle fd, Handle minimum);

}  // namespace mp::platform
