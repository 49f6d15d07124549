// Internals shared by the *_portable.cpp files (MP_PLATFORM_POSIX_FALLBACKS; never included by
// shared code): the hidden header of every anonymous segment, which holds the cross-process wait
// buckets of its words (wait_portable.cpp; docs/DESIGN.md §6, "Portable POSIX fallbacks").
#pragma once

#include <pthread.h>

#include <cstddef>
#include <cstdint>
#include <optional>

namespace mp::platform::portable {

// One process-shared mutex and condition variable; every word of a segment hashes to one.
struct WaitBucket {
  pthread_mutex_t mutex;
  pthread_cond_t cond;
};
inline constexpr std::size_t kWaitBuckets = 64;

// At offset 0 of every segment create_shared_memory makes; the caller's view starts
// header_bytes() after it. Named segments (mp::SharedMemory, opened by other programs too)
// have no header.
struct SegmentHeader {
  std::uint64_t magic;
  std::uint64_t size;  // the caller's size
  WaitBucket buckets[kWaitBuckets];
};
inline constexpr std::uint64_t kSegmentMagic = 0x6d702d73686d3031ull;  // "mp-shm01"

// sizeof(SegmentHeader) rounded up to whole pages (the caller's view stays page-aligned).
std::size_t header_bytes() noexcept;
// Makes the bucket's mutex and condition variable; `shared`: process-shared and robust (where the
// system has robust mutexes). wait_portable.cpp.
void init_bucket(WaitBucket& bucket, bool shared);

// For an address inside a view from map_shared() of a segment with a header: the header and the
// offset in the segment. nullopt for any other memory (process-private words).
struct SharedWord {
  SegmentHeader* header;
  std::uint64_t offset;
};
std::optional<SharedWord> locate_shared(const void* address) noexcept;

}  // namespace mp::platform::portable
