// mp/heap.hpp — shared memory for the library's objects (CPython: multiprocessing/heap.py).
//
// A SharedBlock is a zero-filled range of memory mapped in every process that has it: inherited
// under fork, passed as a descriptor under spawn. Copies of a SharedBlock share the same memory.
// The memory has no name (memfd on Linux), so nothing can leak after a crash: the OS frees it
// when the last process holding it ends or drops it.
// Python: CPython carves objects out of named or file-backed arenas; here each block is its own
// anonymous mapping (one descriptor per block).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "mp/export.hpp"
#include "mp/reduction.hpp"

namespace mp::heap {

class MP_API SharedBlock {
 public:
  SharedBlock() = default;
  // Throws OSError when the memory cannot be had.
  explicit SharedBlock(std::size_t size);

  void* data() const noexcept;
  std::size_t size() const noexcept;
  explicit operator bool() const noexcept { return static_cast<bool>(mapping_); }

  // Serialization sends the descriptor; allowed only while starting a spawned Process.
  template <class Archive>
  void save(Archive& ar) const {
    ar(send(), static_cast<std::uint64_t>(size()));
  }
  template <class Archive>
  void load(Archive& ar) {
    std::uint64_t token = 0, size = 0;
    ar(token, size);
    attach(token, size);
  }

 private:
  struct Mapping;
  std::uint64_t send() const;
  void attach(std::uint64_t token, std::uint64_t size);
  std::shared_ptr<Mapping> mapping_;
};

}  // namespace mp::heap
