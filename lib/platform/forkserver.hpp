// Internal OS API for the forkserver start method (lib/forkserver.cpp, lib/popen_forkserver.cpp):
// bytes with descriptors attached over a Unix stream socket, and the server's signal set-up.
#pragma once

#include <cstddef>
#include <vector>

#include "platform/os.hpp"

namespace mp::platform::forkserver {

// Most descriptors one message carries (below the kernel's SCM_MAX_FD).
inline constexpr std::size_t kMaxDescriptors = 250;

// Sends `size` bytes (at least 1) with `fds` attached to the first of them. Blocking; throws
// OSError (EPIPE when the peer is gone; never SIGPIPE).
void send_with_descriptors(Handle socket, const void* data, std::size_t size, const std::vector<Handle>& fds);
// Receives exactly `size` bytes and the descriptors attached to them (close-on-exec, owned by
// the caller). Returns false at end of file before the first byte. Throws OSError, or
// ProcessError for a truncated message or more than kMaxDescriptors descriptors.
bool receive_with_descriptors(Handle socket, void* data, std::size_t size, std::vector<Handle>& fds);
// SIGINT ignored (the server: a terminal's ^C goes to its owner, which decides) or default.
void ignore_interrupts(bool ignore) noexcept;
// Moves `fd` to the number `target` (close-on-exec), closing whatever `target` was.
void move_descriptor(Handle fd, Handle target);
// A duplicate of `fd` numbered at least `minimum` (close-on-exec).
Handle duplicate_above(Handle fd, Handle minimum);
// Moves `fd` to the number `target` without close-on-exec (an inherited descriptor).
void move_descriptor_inheritable(Handle fd, Handle target);
// The calling process's descriptors without close-on-exec (stdio among them), in order: what a
// spawned child would inherit by the POSIX convention (forkserver_linux.cpp: /proc/self/fd).
std::vector<Handle> inheritable_descriptors();
// Closes every descriptor of the calling process above stderr except `keep` (the server: it
// must not hold what its owner had open when it was spawned, e.g. a pipe's write end).
void close_descriptors_except(const std::vector<Handle>& keep);

}  // namespace mp::platform::forkserver
