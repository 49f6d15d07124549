// Internals shared by the *_portable.cpp files (MP_PLATFORM_POSIX_FALLBACKS; never included by
// shared code): the hidden header of every anonymous segment, which holds the cross-process wait
// slots of its words (wait_portable.cpp; docs/DESIGN.md §6, "Portable POSIX fallbacks").
#pragma once

#include <semaphore.h>

#include <atomic>

#include <cstddef>
#include <cstdint>
#include <optional>

namespace mp::platform::portable {

// One sleeping thread: the word it waits on and a semaphore only it sleeps on, so a wake-up is
// never taken by a waiter of another word (wait_portable.cpp). `owner`: 0 = free, else the
// sleeper's pid (a slot whose owner died is taken back).
struct WaitSlot {
  std::atomic<std::uint32_t> owner;
  std::atomic<std::uint64_t> key;  // the word's offset in the segment (its address if private)
  sem_t sem;
};
inline constexpr std::size_t kWaitSlots = 512;  // sleepers at once per segment; more poll
struct WaitTable {
  std::atomic<std::uint32_t> sleepers;  // slots in use: a wake with none makes no call
  WaitSlot slots[kWaitSlots];
};

// At offset 0 of every segment create_shared_memory makes; the caller's view starts
// header_bytes() after it. Named segments (mp::SharedMemory, opened by other programs too)
// have no header.
struct SegmentHeader {
  std::uint64_t magic;
  std::uint64_t size;  // the caller's size
  WaitTable waits;
};
inline constexpr std::uint64_t kSegmentMagic = 0x6d702d73686d3032ull;  // "mp-shm02"

// sizeof(SegmentHeader) rounded up to whole pages (the caller's view stays page-aligned).
std::size_t header_bytes() noexcept;
// Makes the table's semaphores (`shared`: process-shared). wait_portable.cpp.
void init_wait_table(WaitTable& table, bool shared);

// For an address inside a view from map_shared() of a segment with a header: the header and the
// offset in the segment. nullopt for any other memory (process-private words).
struct SharedWord {
  SegmentHeader* header;
  std::uint64_t offset;
};
std::optional<SharedWord> locate_shared(const void* address) noexcept;

// Tests only: called between shm_open and shm_unlink of an anonymous object (the window in which
// a killed process leaves a name). Null in programs.
extern void (*anonymous_object_fault)();

}  // namespace mp::platform::portable
