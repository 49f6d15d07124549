// mp/shared_memory.hpp — multiprocessing.shared_memory: SharedMemory, ShareableList, and
// managers.SharedMemoryManager (CPython: multiprocessing/shared_memory.py, managers.py).
//
//   mp::shared_memory::SharedMemory shm(std::nullopt, /*create=*/true, 1024);
//   mp::shared_memory::SharedMemory other(shm.name());    // attach by name, from any process
//   shm.buf()[0] = std::byte{42};  other.close();  shm.close();  shm.unlink();
//   mp::shared_memory::ShareableList sl{1, 2.5, true, "text", std::monostate{}};
//
// Guarantees (see docs/RELIABILITY.md):
// - Names are private to the user (mode 0600); a generated name is "psm_" and 16 random hex
//   digits (64 bits, from the OS). A segment becomes visible under its name only complete and
//   sized: an attacher never sees a half-made one.
// - size() is exactly the size the creator asked for (CPython rounds it up to a page on some
//   platforms).
// - Tracking (track = true, the default, on create): the creating process owns the segment. It is
//   unlinked by unlink() or, if that never happens, by the library once the creator (and the
//   children it forked, which may still use it) have ended — by exit, exception or SIGKILL alike.
//   A process that only attaches never unlinks it, even when tracking is on (CPython gh-82300:
//   its resource tracker unlinked a segment when an unrelated process that had attached exited).
// - A segment holds no descriptor once mapped (CPython keeps one open per segment).
// - Objects are handles: copies refer to the same mapping; close() unmaps it for every copy.
//   Passed as a Process argument (any start method) or through a Queue, Pipe or manager, a
//   SharedMemory or ShareableList is sent by name and the receiver attaches (as CPython pickles
//   it); it never tracks what it attached.
// Python differences: a default-constructed object is unbound (bool false; CPython has none);
// Python's ShareableList() (an empty list) is ShareableList(std::vector<ShareableList::value_type>{}).
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "mp/export.hpp"
#include "mp/managers.hpp"

namespace mp::shared_memory {

// multiprocessing.shared_memory.SharedMemory.
class MP_API SharedMemory {
 public:
  // An unbound object (for deserialization); bool false, buf() empty.
  SharedMemory() noexcept = default;
  // SharedMemory(name=None, create=False, size=0, *, track=True).
  // create: makes a new segment of `size` bytes (zero-filled), named `name` or a generated name;
  // else attaches to the existing segment `name` (size() is the segment's size; `size` and
  // `track` are ignored). A leading '/' in `name` is dropped.
  // Throws: std::invalid_argument for size < 0, create with size 0 ("'size' must be a positive
  // number different from zero") or no name without create ("'name' can only be None if
  // create=True"); OSError with EEXIST (the name exists), ENOENT (no such segment), EINVAL or
  // ENAMETOOLONG (a bad name), or the OS error when the memory cannot be had (e.g. ENOMEM for an
  // absurd size: nothing is left behind).
  explicit SharedMemory(std::optional<std::string> name, bool create = false, std::int64_t size = 0,
                        bool track = true);

  // The mapped bytes; empty after close().
  std::span<std::byte> buf() const noexcept;
  // The name without a leading '/' (Python's shm.name).
  const std::string& name() const;
  std::size_t size() const;
  // Unmaps the segment (every copy of this object sees it closed). Idempotent.
  void close();
  // Removes the name (the memory lives on until every process has closed it) and ends tracking.
  // Throws OSError ENOENT if the name no longer exists.
  void unlink();
  explicit operator bool() const noexcept { return static_cast<bool>(state_); }

  template <class Archive>
  void save(Archive& ar) const {
    ar(name());
  }
  template <class Archive>
  void load(Archive& ar) {
    std::string n;
    ar(n);
    *this = SharedMemory(std::move(n));
  }

 private:
  struct State;
  std::shared_ptr<State> state_;
};

// multiprocessing.shared_memory.ShareableList: a fixed-length list of int, float, bool, str,
// bytes and None items in one SharedMemory, in CPython's layout (a Python process can attach to
// one made here, and the reverse).
//   sl[i] reads an item; sl.set(i, v) writes one (indices may be negative, as Python's).
// Beyond CPython: str and bytes items keep trailing NUL bytes, and a str's slot is sized by its
// UTF-8 bytes, so multi-byte characters are never cut (CPython strips NULs and sizes by
// characters). Items of a segment written by another program are validated before use: a
// corrupt segment raises std::invalid_argument, never a crash.
// Limits: a str/bytes item that exactly fills a slot of 1,000,000 bytes or more loses trailing
// NULs (CPython's format field has no room to mark its length).
class MP_API ShareableList {
 public:
  using value_type =
      std::variant<std::monostate, bool, std::int64_t, double, std::string, std::vector<std::byte>>;

  // An unbound object (for deserialization).
  ShareableList() noexcept = default;
  // ShareableList(sequence, name=name): a new list (tracked by this process, as SharedMemory).
  ShareableList(std::initializer_list<value_type> sequence,
                std::optional<std::string> name = std::nullopt);
  explicit ShareableList(const std::vector<value_type>& sequence,
                         std::optional<std::string> name = std::nullopt);
  // ShareableList(name=name): attaches to an existing list. Throws OSError (ENOENT) or
  // std::invalid_argument if the segment does not hold a valid list.
  ShareableList(std::nullopt_t, const std::string& name);

  // Throws std::out_of_range "index out of range"; std::invalid_argument for a corrupt item.
  const value_type operator[](std::int64_t i) const;
  // Throws std::out_of_range "assignment index out of range"; std::invalid_argument "bytes/str
  // item exceeds available storage" when a str/bytes is longer than the item's slot.
  void set(std::int64_t i, const value_type& v);
  std::size_t size() const noexcept { return length_; }
  std::vector<value_type> tolist() const;
  std::size_t count(const value_type& v) const;
  // Throws std::invalid_argument "... not in this container".
  std::size_t index(const value_type& v) const;
  // The struct packing format of all items (Python's sl.format).
  std::string format() const;
  const SharedMemory& shm() const noexcept { return shm_; }
  SharedMemory& shm() noexcept { return shm_; }
  explicit operator bool() const noexcept { return static_cast<bool>(shm_); }

  template <class Archive>
  void save(Archive& ar) const {
    ar(shm_.name());
  }
  template <class Archive>
  void load(Archive& ar) {
    std::string n;
    ar(n);
    *this = ShareableList(std::nullopt, n);
  }

 private:
  void attach();
  std::size_t position(std::int64_t i, const char* message) const;
  SharedMemory shm_;
  std::size_t length_ = 0;
  std::vector<std::uint64_t> offsets_;  // the layout's item offsets, read once and validated
};

}  // namespace mp::shared_memory

namespace mp::managers {

namespace detail {
// The server side of a SharedMemoryManager: the names of the segments made through it.
class MP_API SharedMemoryTracker {
 public:
  void track_segment(std::string name);
  void release_segment(std::string name);
  std::vector<std::string> list_segments();
  // Unlinks every tracked segment (ignoring those already gone) and forgets them.
  void unlink_all();

 private:
  std::mutex mutex_;
  std::vector<std::string> names_;
};
}  // namespace detail

// multiprocessing.managers.SharedMemoryManager: a BaseManager whose SharedMemory() and
// ShareableList() make segments in the calling process and record them with the server;
// shutdown() (and the destructor) unlinks every segment it made. Throws std::logic_error
// "server not yet started" when they are called before start().
class MP_API SharedMemoryManager : public BaseManager {
 public:
  using BaseManager::BaseManager;
  SharedMemoryManager(SharedMemoryManager&&) noexcept = default;
  SharedMemoryManager& operator=(SharedMemoryManager&& other) noexcept;
  ~SharedMemoryManager() override;

  void start();
  // Unlinks the segments made through this manager, then stops the server. Idempotent.
  void shutdown();
  shared_memory::SharedMemory SharedMemory(std::int64_t size);
  shared_memory::ShareableList ShareableList(
      const std::vector<shared_memory::ShareableList::value_type>& sequence);
  shared_memory::ShareableList ShareableList(
      std::initializer_list<shared_memory::ShareableList::value_type> sequence) {
    return ShareableList(std::vector<shared_memory::ShareableList::value_type>(sequence));
  }

 private:
  void track(const shared_memory::SharedMemory& shm);
  BaseProxy tracker_;
  std::vector<shared_memory::SharedMemory> made_;
};

}  // namespace mp::managers
