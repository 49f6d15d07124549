// A shared memory segment of the OS layer, mapped once for a test and unmapped and closed after it
// (tests/platform's fixture, on every platform).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "platform/handle.hpp"
#include "platform/shared_memory.hpp"

namespace platform_test {

struct Segment {
  explicit Segment(std::size_t n) : size(n), handle(mp::platform::create_shared_memory(n)) {
    base = mp::platform::map_shared(handle, size);
  }
  ~Segment() {
    mp::platform::unmap(base, size);
    mp::platform::close_handle(handle);
  }
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  std::atomic<std::uint32_t>* word(std::size_t i) {
    return static_cast<std::atomic<std::uint32_t>*>(base) + i;
  }
  std::size_t size;
  mp::platform::Handle handle;
  void* base = nullptr;
};

}  // namespace platform_test
