// Windows-only internals shared by the *_win32.cpp files (never included by shared code).
#pragma once

#ifndef WIN32_LEAN_AND_MEAN
#  define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#  define NOMINMAX
#endif
#include <windows.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "platform/handle.hpp"
#include "platform/shared_memory.hpp"

namespace mp::platform::win32 {

inline HANDLE native(Handle h) noexcept { return reinterpret_cast<HANDLE>(h); }
inline Handle wrap(HANDLE h) noexcept { return reinterpret_cast<Handle>(h); }

// UTF-8 <-> UTF-16 (the library's strings are UTF-8; Win32 takes UTF-16).
std::wstring widen(const std::string& s);
std::string narrow(const std::wstring& s);
// GetLastError's text.
std::string error_text(DWORD code);
// The path a module was loaded from (GetModuleFileNameW; null: the executable), any length.
std::string module_path(HMODULE module);
// Milliseconds for a Win32 wait: rounded up, INFINITE for null, never INFINITE for a finite one.
DWORD wait_millis(const Nanos* timeout) noexcept;

// Every section created by create_shared_memory starts with one allocation granule (64 KiB of
// address space, one committed page) that the caller never sees: the segment's size, a key
// unique on the machine, and the wait buckets' waiter counts (wait_win32.cpp).
inline constexpr std::size_t kWaitBuckets = 64;
inline constexpr std::size_t kWaiterSlots = 4;
struct SectionHeader {
  std::uint64_t magic;
  std::uint64_t size;  // the caller's size
  std::uint64_t key;   // random: names the section's wait semaphores
  std::atomic<std::uint32_t> waiters[kWaitBuckets];
  // Bumped by each waker before it releases tokens: a waiter that counted itself after a release
  // takes no token of it (wait_win32.cpp).
  std::atomic<std::uint32_t> wake_gen[kWaitBuckets];
  // Who is counted in `waiters`: [pid: 32][waiting threads: 32] per slot, a process per slot (one
  // that finds no free slot is counted only in `waiters`). A process killed while waiting leaves
  // its count behind; a waiter that would pass a token on to it finds it dead here and removes it.
  std::atomic<std::uint64_t> waiter_slots[kWaitBuckets][kWaiterSlots];
};
static_assert(sizeof(SectionHeader) <= 4096, "the header fits the granule's committed page");
inline constexpr std::uint64_t kSectionMagic = 0x6d702d7365637431ull;  // "mp-sect1"
// A named section (create_named_shm): each view holds a handle to it, as CPython's mmap does,
// since the name goes with the last handle (views do not keep it).
inline constexpr std::uint64_t kNamedSectionMagic = 0x6d702d736563744eull;  // "mp-sectN"

// For an address inside a view from map_shared: the view's header and the offset in the section
// (what names a word for every process mapping it). nullopt for process-private memory.
struct SharedWord {
  SectionHeader* header;
  std::uint64_t offset;
};
std::optional<SharedWord> locate_shared(const void* address) noexcept;
// Called when a process maps / unmaps its last view of the section `key` (wait_win32.cpp closes
// its cached semaphores).
void release_wait_objects(std::uint64_t key) noexcept;

// ---- io_win32.cpp, for handle_passing_win32.cpp and close_handle
// A connected pair of overlapped named-pipe ends {server, client}: duplex or {read, write};
// `messages`: message mode (each write one message), else bytes. Non-inheritable.
std::pair<Handle, Handle> pipe_pair(bool duplex, bool messages);
// One overlapped ReadFile/WriteFile of at most `size` bytes, waited for at most `ms` and then
// cancelled. Returns the bytes moved; `error` is the call's error: 0 on success,
// ERROR_OPERATION_ABORTED when the time ran out first, ERROR_MORE_DATA for part of a message.
DWORD pipe_io(Handle h, bool write, void* data, std::size_t size, DWORD ms, DWORD& error);
// Closes `h` if it is a socket (closesocket) or an object io_win32.cpp keeps state for (a pipe
// listener, a ready set); false for any other handle.
bool close_io_object(HANDLE h) noexcept;

}  // namespace mp::platform::win32
