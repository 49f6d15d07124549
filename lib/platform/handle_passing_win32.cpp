// Windows part of platform/handle_passing.hpp. A handle travels as (sender pid, handle value): the
// sender duplicates it within itself (the copy "in flight") and sends the pair; the receiver
// duplicates it out of the sender's process (DuplicateHandle with DUPLICATE_CLOSE_SOURCE, which
// also closes the in-flight copy), as CPython's reduction.DupHandle without a target pid. So the
// sender must still run when the handle is received (SCM_RIGHTS has no such limit); a message never
// received leaves its in-flight copy in the sender until it exits. The datagram pair is a
// message-mode named pipe; a stream with handles carries a header with them before its bytes.
// Descriptor numbers do not exist on Windows: the move_descriptor family is POSIX-only (a child
// gets handle values on its command line instead: process.hpp spawn_process's `inherit`).
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "mp/errors.hpp"
#include "platform/handle_passing.hpp"
#include "platform/io.hpp"
#include "platform/win32.hpp"

namespace mp::platform {

namespace {

constexpr std::uint32_t kDatagramMagic = 0x6d706831;  // "mph1"
constexpr std::uint32_t kStreamMagic = 0x6d706832;    // "mph2"

struct Datagram {
  std::uint64_t tag;
  std::uint64_t handle;  // in the sender
  std::uint32_t pid;     // the sender
  std::uint32_t magic;
};

struct StreamHeader {
  std::uint32_t magic;
  std::uint32_t count;
  std::uint32_t pid;
  std::uint32_t reserved;
};

// The in-flight copy of `h`, owned by the sender until the receiver takes it.
std::uint64_t in_flight(Handle h) {
  HANDLE dup = nullptr;
  if (!::DuplicateHandle(::GetCurrentProcess(), win32::native(h), ::GetCurrentProcess(), &dup, 0,
                         FALSE, DUPLICATE_SAME_ACCESS))
    throw_last_error("cannot pass a handle");
  return reinterpret_cast<std::uintptr_t>(dup);
}

// The receiver's copy of the handle `value` of process `pid`; `take` closes the sender's copy.
Handle take_from(std::uint32_t pid, std::uint64_t value, bool take) {
  const bool self = pid == ::GetCurrentProcessId();
  const HANDLE source =
      self ? ::GetCurrentProcess() : ::OpenProcess(PROCESS_DUP_HANDLE, FALSE, pid);
  if (!source)
    throw_last_error("cannot receive a handle from process " + std::to_string(pid) +
                     " (it must run until the handle is received)");
  HANDLE out = nullptr;
  const BOOL ok = ::DuplicateHandle(
      source, reinterpret_cast<HANDLE>(static_cast<std::uintptr_t>(value)), ::GetCurrentProcess(),
      &out, 0, FALSE, DUPLICATE_SAME_ACCESS | (take ? DUPLICATE_CLOSE_SOURCE : 0));
  const DWORD e = ::GetLastError();
  if (!self) ::CloseHandle(source);
  if (!ok)
    throw_error(static_cast<int>(e), "cannot receive a handle from process " + std::to_string(pid));
  return win32::wrap(out);
}

// Closes in-flight copies that will never be received (the send failed).
void drop_in_flight(std::uint64_t value) noexcept {
  ::CloseHandle(reinterpret_cast<HANDLE>(static_cast<std::uintptr_t>(value)));
}

}  // namespace

std::pair<Handle, Handle> datagram_pair() { return win32::pipe_pair(true, true); }

bool send_descriptor(Handle socket, std::uint64_t tag, Handle fd) {
  Datagram d{tag, in_flight(fd), static_cast<std::uint32_t>(::GetCurrentProcessId()),
             kDatagramMagic};
  DWORD error = 0;
  const DWORD n = win32::pipe_io(socket, true, &d, sizeof d, 0, error);
  if (error == 0 && n == sizeof d) return true;
  drop_in_flight(d.handle);
  if (error == ERROR_OPERATION_ABORTED && n == 0) return false;  // the pipe's buffer is full
  throw_error(static_cast<int>(error ? error : ERROR_WRITE_FAULT), "cannot pass a handle");
}

bool receive_descriptor(Handle socket, std::uint64_t& tag, Handle& fd, bool peek) {
  Datagram d{};
  DWORD got = 0, avail = 0, left = 0;
  if (!::PeekNamedPipe(win32::native(socket), &d, sizeof d, &got, &avail, &left)) {
    const DWORD e = ::GetLastError();
    if (e == ERROR_BROKEN_PIPE || e == ERROR_PIPE_NOT_CONNECTED) return false;
    throw_error(static_cast<int>(e), "cannot receive a handle");
  }
  if (avail == 0) return false;
  if (!peek) {  // take the head message (another process may have taken the peeked one)
    DWORD error = 0;
    got = win32::pipe_io(socket, false, &d, sizeof d, 0, error);
    if (error == ERROR_OPERATION_ABORTED && got == 0) return false;
    if (error == ERROR_MORE_DATA)
      left = 1;
    else if (error != 0)
      throw_error(static_cast<int>(error), "cannot receive a handle");
  }
  if (got != sizeof d || left != 0 || d.magic != kDatagramMagic)
    throw ProcessError("mp: corrupt out-of-band message in a queue");
  tag = d.tag;
  fd = take_from(d.pid, d.handle, !peek);
  return true;
}

void send_with_descriptors(Handle socket, const void* data, std::size_t size,
                           const std::vector<Handle>& fds) {
  if (size == 0 || fds.size() > kMaxDescriptors)
    throw std::invalid_argument("mp forkserver: bad message");
  const StreamHeader header{kStreamMagic, static_cast<std::uint32_t>(fds.size()),
                            static_cast<std::uint32_t>(::GetCurrentProcessId()), 0};
  std::string message(reinterpret_cast<const char*>(&header), sizeof header);
  std::vector<std::uint64_t> values;
  try {
    for (Handle h : fds) values.push_back(in_flight(h));
    message.append(reinterpret_cast<const char*>(values.data()),
                   values.size() * sizeof(std::uint64_t));
    message.append(static_cast<const char*>(data), size);
    write_all(socket, message.data(), message.size());
  } catch (...) {
    for (std::uint64_t v : values) drop_in_flight(v);
    throw;
  }
}

bool receive_with_descriptors(Handle socket, void* data, std::size_t size,
                              std::vector<Handle>& fds) {
  StreamHeader header{};
  const std::size_t first = read_some(socket, &header, sizeof header);
  if (first == 0) return false;
  try {
    recv_exact(socket, reinterpret_cast<char*>(&header) + first, sizeof header - first);
    if (header.magic != kStreamMagic) throw ProcessError("mp forkserver: corrupt message");
    if (header.count > kMaxDescriptors)
      throw ProcessError("mp forkserver: too many descriptors in a message");
    std::vector<std::uint64_t> values(header.count);
    recv_exact(socket, values.data(), values.size() * sizeof(std::uint64_t));
    for (std::uint64_t v : values) fds.push_back(take_from(header.pid, v, true));
    recv_exact(socket, data, size);
  } catch (const EOFError&) {
    throw EOFError("mp forkserver: the peer closed the connection in a message");
  }
  return true;
}

// ---- handles carried in shared memory: [pid: 32][value: 32] (kernel handle values fit in 32 bits,
// which 64-bit Windows guarantees for sharing handles with 32-bit processes)

std::uint64_t hand_off(Handle h, int holder) {
  const auto pid = static_cast<DWORD>(holder);
  if (pid == ::GetCurrentProcessId()) {
    const std::uint64_t value = in_flight(h);
    if (value > 0xffffffffu) {
      drop_in_flight(value);
      throw_error(ERROR_INVALID_HANDLE, "cannot pass a handle");
    }
    return (std::uint64_t{pid} << 32) | value;
  }
  HANDLE target = ::OpenProcess(PROCESS_DUP_HANDLE, FALSE, pid);
  if (!target) throw_last_error("cannot pass a handle through process " + std::to_string(pid));
  HANDLE dup = nullptr;
  const BOOL ok = ::DuplicateHandle(::GetCurrentProcess(), win32::native(h), target, &dup, 0, FALSE,
                                    DUPLICATE_SAME_ACCESS);
  const DWORD e = ::GetLastError();
  ::CloseHandle(target);
  if (!ok)
    throw_error(static_cast<int>(e), "cannot pass a handle through process " + std::to_string(pid));
  const auto value = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(dup));
  if (value > 0xffffffffu) {
    release_handed_off((std::uint64_t{pid} << 32) | (value & 0xffffffffu));
    throw_error(ERROR_INVALID_HANDLE, "cannot pass a handle");
  }
  return (std::uint64_t{pid} << 32) | value;
}

int handed_off_holder(std::uint64_t token) noexcept { return static_cast<int>(token >> 32); }

Handle take_handed_off(std::uint64_t token) {
  return take_from(static_cast<std::uint32_t>(token >> 32), token & 0xffffffffu, false);
}

void release_handed_off(std::uint64_t token) noexcept {
  const auto pid = static_cast<DWORD>(token >> 32);
  const auto value = reinterpret_cast<HANDLE>(static_cast<std::uintptr_t>(token & 0xffffffffu));
  if (pid == ::GetCurrentProcessId()) {
    ::CloseHandle(value);
    return;
  }
  if (HANDLE source = ::OpenProcess(PROCESS_DUP_HANDLE, FALSE, pid)) {
    ::DuplicateHandle(source, value, nullptr, nullptr, 0, FALSE, DUPLICATE_CLOSE_SOURCE);
    ::CloseHandle(source);
  }
}

// ---- descriptor numbers: POSIX only

void move_descriptor(Handle, Handle) {
  throw std::logic_error("mp: move_descriptor: Windows handles have no numbers to move to");
}

void move_descriptor_inheritable(Handle, Handle) {
  throw std::logic_error(
      "mp: move_descriptor_inheritable: Windows handles have no numbers to move to");
}

Handle duplicate_above(Handle, Handle) {
  throw std::logic_error("mp: duplicate_above: Windows handles have no numbers to choose");
}

}  // namespace mp::platform
