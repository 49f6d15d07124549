// Internal: leases, which keep blocks of the shared heap (mp/heap.hpp) from being reused while a
// child process may use them.
//
// A child never counts the blocks it received or inherited: the process that started it holds a
// lease on them (one reference per block in the arena) until it has seen the child end. So a
// child killed by SIGKILL cannot leave a count behind, and a block is never reused while a
// child that has it runs. A lease whose releaser dies first is never released: its blocks stay
// reserved until every process that mapped the arena has ended (a leak, never a use after free).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "mp/heap.hpp"
#include "platform/handle.hpp"

namespace mp::heap::detail {

// The library's access to a block's arena.
struct BlockAccess {
  // The descriptor of the arena holding `block` (kInvalidHandle for an empty block).
  static platform::Handle arena_handle(const SharedBlock& block) noexcept;
  // The offset of `block`'s payload in its arena.
  static std::uint64_t offset(const SharedBlock& block) noexcept;
  // Whether no other process holds `block` (no lease of a child on it) and this process made it
  // and holds its reference: then it can be used anew without another process seeing it.
  static bool held_alone(const SharedBlock& block) noexcept;
};

struct Arena;

class Lease {
 public:
  Lease() = default;
  Lease(Lease&& other) noexcept : pins_(std::move(other.pins_)), pid_(other.pid_) {
    other.pins_.clear();
  }
  Lease& operator=(Lease&& other) noexcept;
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  // Releases the blocks (the child has ended, or never ran).
  ~Lease() { release(); }
  void release() noexcept;
  // Forgets the blocks without releasing them (the child may still run and we cannot know when it
  // ends): they stay reserved for the program's life.
  void leak() noexcept { pins_.clear(); }
  bool empty() const noexcept { return pins_.empty(); }
  std::size_t size() const noexcept { return pins_.size(); }

  struct Pin {
    std::shared_ptr<Arena> arena;
    std::uint64_t offset;
  };
  std::vector<Pin> pins_;
  int pid_ = 0;  // the process that pinned them (only it may release them)
};

// While alive on a thread, every SharedBlock serialized on it (for a spawned or forkserver child)
// is pinned in `lease`.
class LeaseScope {
 public:
  explicit LeaseScope(Lease& lease);
  ~LeaseScope();
  LeaseScope(const LeaseScope&) = delete;
  LeaseScope& operator=(const LeaseScope&) = delete;

 private:
  Lease* previous_;
};

// Around a fork(): pins every block this process holds (the child inherits them all), including
// blocks other threads make or drop while the fork runs. Construct right before fork(), call
// forked() in the parent after it (also when fork() failed), then give lease() to the child's Popen.
class ForkLease {
 public:
  ForkLease();
  ~ForkLease();
  void forked() noexcept;
  Lease& lease() noexcept { return lease_; }
  ForkLease(const ForkLease&) = delete;
  ForkLease& operator=(const ForkLease&) = delete;

 private:
  Lease lease_;
  std::uint64_t first_unpinned_ = 0;
  bool open_ = false;
};

// Statistics for tests and benchmarks (this process).
struct Stats {
  std::size_t arenas = 0;       // arenas this process allocates in (each one descriptor)
  std::size_t mapped = 0;       // arenas mapped in this process (its own and received)
  std::size_t holds = 0;        // blocks this process holds
  std::size_t free_blocks = 0;  // blocks ready for reuse
};
Stats stats();

}  // namespace mp::heap::detail
