// mp/heap.hpp — shared memory for the library's objects (CPython: multiprocessing/heap.py).
//
// A SharedBlock is a zero-filled range of memory mapped in every process that has it: inherited
// under fork, received with its arena under spawn and forkserver. Copies share the same memory.
//
// Arenas. Blocks are carved out of shared arenas (anonymous memfd mappings, 1 MiB doubling to
// 64 MiB; a block over 640 KiB gets an arena of its own), so a block costs no descriptor: a process
// holds one descriptor per arena, however many blocks it has. The memory has no name, so nothing
// can leak after a crash: the OS frees an arena when the last process holding it ends.
// Python: CPython's heap also carves blocks out of arenas (one file descriptor each).
//
// Reuse. A block is reused once no process holds it: each block carries a reference count in its
// arena. The creating process counts once while it has a copy; a child (fork, spawn, forkserver)
// is counted by the process that started it, from the start until that process sees the child end
// (join, is_alive, exitcode). So a child killed by SIGKILL leaves no stale count, and no block is
// reused while any process that has it runs. If a process dies while it holds counts (its own or
// its children's), those blocks are never reused (they are freed with their arena when the program
// ends): a crash leaks, it never corrupts. Only the creating process allocates in its arenas.
// A free block of 64 KiB or more gives its pages back to the OS at once (Linux).
// Python: CPython reuses a block as soon as the process that made it drops it, even while a child
// still uses it.
// Limit: a block a forked child inherited is covered while that child runs; a process that child
// forks in turn is covered only through its parent, so it should not outlive it (mp joins a
// process's non-daemonic children before it exits and terminates its daemonic ones).
//
// Serialized form (for a spawned/forkserver child; see mp/reduction.hpp): the 5 fields of
// SharedBlock::Wire, in order, each a u64: arena id (random, also written in the arena's first
// bytes, checked on receipt), arena descriptor token (reduction::send_handle: the arena's
// descriptor is passed once per child, not once per block), arena size, block offset in the arena,
// block size. A receiving process maps each arena once and checks every offset and size against it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "mp/export.hpp"
#include "mp/reduction.hpp"

namespace mp::heap {
namespace detail {
struct BlockAccess;
}

class MP_API SharedBlock {
 public:
  SharedBlock() = default;
  // `size` bytes, zero-filled, aligned to `align` (a power of two; at least 16 is given). Throws
  // OSError naming the limit when the memory or a descriptor cannot be had, std::bad_alloc beyond
  // the machine's memory.
  explicit SharedBlock(std::size_t size, std::size_t align = 16);

  void* data() const noexcept;
  std::size_t size() const noexcept;
  explicit operator bool() const noexcept { return static_cast<bool>(mapping_); }

  // The serialized form (see the file comment).
  struct Wire {
    std::uint64_t arena_id = 0, arena_token = 0, arena_size = 0, offset = 0, size = 0;
    template <class Archive>
    void serialize(Archive& ar) {
      ar(arena_id, arena_token, arena_size, offset, size);
    }
  };

  // Allowed only while starting a spawned/forkserver Process (else std::runtime_error, as CPython).
  template <class Archive>
  void save(Archive& ar) const {
    ar(send());
  }
  template <class Archive>
  void load(Archive& ar) {
    Wire w;
    ar(w);
    attach(w);
  }

  struct Mapping;  // this process's hold on the block (lib/heap.cpp)

 private:
  friend struct detail::BlockAccess;  // lib/heap_impl.hpp
  Wire send() const;
  void attach(const Wire& w);
  std::shared_ptr<Mapping> mapping_;
};

}  // namespace mp::heap
