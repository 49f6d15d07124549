// mp::heap — the shared heap: blocks carved out of shared arenas, reference-counted across
// processes (see mp/heap.hpp for the guarantees, lib/heap_impl.hpp for leases).
//
// Layout. An arena is one memfd mapping: a 64-byte ArenaHeader, then blocks. Each block is a
// 16-byte BlockHeader (reference count, size class, start) right before its payload. Blocks of the
// owner's (creator's) arenas are recycled by size class on private free lists; a block whose last
// reference is dropped by another process is pushed on the arena's lock-free `remote_free` stack
// (one compare-exchange: a process killed while pushing loses the block, nothing else) and moved to
// the free lists by the owner when it next needs a block of a class it has none of.
#include "mp/heap.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "heap_impl.hpp"
#include "support/load_time_global.hpp"
#include "platform/handle.hpp"
#include "platform/process.hpp"
#include "platform/shared_memory.hpp"
#include "platform/system.hpp"
#include "platform/wait.hpp"

namespace mp::heap {
namespace detail {
namespace {

constexpr std::uint64_t kMagic = 0x616e6572612d706dull;  // "mp-arena"
constexpr std::size_t kArenaHeaderBytes = 64;
constexpr std::size_t kBlockHeaderBytes = 16;
constexpr std::size_t kFirstArenaBytes = std::size_t{1} << 20;
constexpr std::size_t kMaxArenaBytes = std::size_t{64} << 20;
// Larger: an arena of its own. Large enough for a Pipe's rings (lib/support/pipe_channel.hpp).
constexpr std::size_t kLargeBlock = std::size_t{640} << 10;
// A free block at least this large is given back to the OS (its pages dropped, which zero-fills
// it) when it becomes free, rather than cleared by writing on reuse.
constexpr std::size_t kDiscardBlock = std::size_t{64} << 10;
constexpr std::uint32_t kDedicated = 0xffffffffu;  // the class of a block with its own arena

struct ArenaHeader {
  std::uint64_t magic;
  std::uint64_t id;
  std::atomic<std::uint64_t>
      remote_free;  // payload offset of the first block freed by another process
  std::uint64_t size;
};
static_assert(sizeof(ArenaHeader) <= kArenaHeaderBytes);

struct BlockHeader {
  std::atomic<std::uint32_t> refs;  // processes holding the block (creator + leases)
  std::uint32_t cls;                // size class, or kDedicated
  std::uint64_t start;              // where the block begins (before any alignment padding)
};
static_assert(sizeof(BlockHeader) == kBlockHeaderBytes);

// Size classes of whole blocks (header + padding + payload): 32..256 by 16, then 4 per doubling.
constexpr std::size_t kSmallClasses = 15;
constexpr std::size_t class_size(std::size_t c) {
  if (c < kSmallClasses) return 32 + 16 * c;
  const std::size_t k = c - kSmallClasses;  // 0 -> 320
  const std::size_t base = std::size_t{256} << (k / 4);
  return base + base / 4 * (k % 4 + 1);
}
constexpr std::size_t kClasses = [] {
  std::size_t c = 0;
  while (class_size(c) < kLargeBlock) ++c;
  return c + 1;
}();
std::size_t class_of(std::size_t total) {
  if (total <= 32) return 0;
  if (total <= 256) return (total - 32 + 15) / 16;
  std::size_t c = kSmallClasses;
  while (class_size(c) < total) ++c;
  return c;
}

std::size_t round_up(std::size_t n, std::size_t a) { return (n + a - 1) & ~(a - 1); }

}  // namespace

struct Arena {
  platform::Handle fd = platform::kInvalidHandle;
  unsigned char* base = nullptr;
  std::size_t size = 0;
  std::uint64_t id = 0;
  int owner_pid = 0;  // the process that allocates in it (0: received from another process)
  std::size_t bump = kArenaHeaderBytes;  // owner only: the first never-used byte
  Arena() = default;
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  ~Arena() {
    if (base) platform::unmap(base, size);
    platform::close_handle(fd);
  }
  ArenaHeader& header() const noexcept { return *reinterpret_cast<ArenaHeader*>(base); }
  BlockHeader& block(std::uint64_t payload) const noexcept {
    return *reinterpret_cast<BlockHeader*>(base + payload - kBlockHeaderBytes);
  }
};

}  // namespace detail

// One block held by this process (shared by all copies of a SharedBlock in it).
struct SharedBlock::Mapping {
  std::shared_ptr<detail::Arena> arena;
  std::uint64_t offset = 0;  // of the payload in the arena
  std::size_t size = 0;
  void* address = nullptr;
  int counted_pid = 0;    // the process whose reference this is (0: covered by a lease)
  std::uint64_t seq = 0;  // creation order (fork leases)
  std::uint64_t gen = 0;  // the registry it is linked in (a forked child starts a new one)
  Mapping* prev = nullptr;
  Mapping* next = nullptr;
  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping();
};

namespace detail {
namespace {

using Mapping = SharedBlock::Mapping;

struct FreeBlock {
  Arena* arena;
  std::uint64_t start;
  bool zeroed;  // its pages were dropped: it reads as zeros
};

struct Deferred {
  std::shared_ptr<Arena> arena;
  std::uint64_t offset, seq;
  int counted_pid;
};

// The per-process heap state, under `mu`.
struct Heap {
  std::mutex mu;
  int pid = 0;
  std::uint64_t gen = 1;
  std::vector<std::shared_ptr<Arena>> own;        // regular arenas; the last is the current one
  std::vector<std::shared_ptr<Arena>> dedicated;  // one block each
  std::vector<std::vector<FreeBlock>> free_lists{kClasses};
  std::unordered_map<std::uint64_t, std::weak_ptr<Arena>>
      received;              // arenas of other processes, by id
  Mapping* holds = nullptr;  // intrusive list of the blocks held
  std::size_t hold_count = 0;
  std::uint64_t next_seq = 1;
  int forks_in_progress = 0;
  std::vector<Deferred> deferred;  // blocks dropped while a fork ran
  std::uint64_t id_state = 0;

  Heap() {
    std::random_device rd;
    id_state = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
    pid = platform::cached_pid();
    platform::at_fork_in_child(&Heap::after_fork_in_child);
  }

  std::uint64_t new_id() {
    std::uint64_t z = (id_state += 0x9e3779b97f4a7c15ull);  // splitmix64
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (z ^ (z >> 31)) | 1;
  }

  static void after_fork_in_child();
};

mp::detail::LoadTimeGlobal<Heap> g_heap;
Heap& heap() { return g_heap.get(); }

// A forked child: the mutex may have been held by a thread that is gone; the child allocates in
// arenas of its own and does not count the blocks it inherited (the parent's lease covers them).
void Heap::after_fork_in_child() {
  Heap& h = heap();
  new (&h.mu) std::mutex();
  h.pid = platform::current_pid();
  ++h.gen;
  h.holds = nullptr;  // the inherited blocks stay valid; they are just not listed here any more
  h.hold_count = 0;
  h.forks_in_progress = 0;
  new (&h.own)
      std::vector<std::shared_ptr<Arena>>();  // the parent's allocator state is left behind
  new (&h.dedicated) std::vector<std::shared_ptr<Arena>>();
  new (&h.free_lists) std::vector<std::vector<FreeBlock>>(kClasses);
  new (&h.deferred) std::vector<Deferred>();
  h.id_state ^= static_cast<std::uint64_t>(h.pid) * 0x9e3779b97f4a7c15ull;
}

void link(Heap& h, Mapping* m) {
  m->seq = h.next_seq++;
  m->gen = h.gen;
  m->next = h.holds;
  if (h.holds) h.holds->prev = m;
  h.holds = m;
  ++h.hold_count;
}

void unlink(Heap& h, Mapping* m) {
  if (m->gen != h.gen) return;
  if (m->prev)
    m->prev->next = m->next;
  else
    h.holds = m->next;
  if (m->next) m->next->prev = m->prev;
  --h.hold_count;
}

[[noreturn]] void throw_limit(const OSError& e, std::size_t bytes) {
  const int code = e.code().value();
  if (code == EMFILE || code == ENFILE)
    throw OSError(
        code, std::string("mp: cannot create a shared heap arena: no descriptor left (the limit on "
                          "open files, ulimit -n / RLIMIT_NOFILE, is reached; ") +
                  e.what() + ")");
  if (code == ENOMEM || code == ENOSPC)
    throw OSError(code, "mp: cannot map " + std::to_string(bytes) +
                            " bytes of shared heap: out of memory or address space (RLIMIT_AS); " +
                            e.what());
  throw e;
}

std::shared_ptr<Arena> new_arena(Heap& h, std::size_t bytes) {
  auto a = std::make_shared<Arena>();
  try {
    a->fd = platform::create_shared_memory(bytes);
    a->base = static_cast<unsigned char*>(platform::map_shared(a->fd, bytes));
  } catch (const OSError& e) {
    throw_limit(e, bytes);
  }
  a->size = bytes;
  a->id = h.new_id();
  a->owner_pid = h.pid;
  auto& hdr = a->header();
  hdr.magic = kMagic;
  hdr.id = a->id;
  hdr.size = bytes;
  return a;
}

// Puts a block of the owner's on its free list; a large one's pages are given back to the OS.
void push_free(Heap& h, Arena& a, std::uint32_t cls, std::uint64_t start) {
  const std::size_t bytes = class_size(cls);
  const bool zeroed = bytes >= kDiscardBlock && platform::discard_shared_range(a.fd, start, bytes);
  h.free_lists[cls].push_back({&a, start, zeroed});
}

// Frees a block whose count reached zero.
void free_block(Heap& h, const std::shared_ptr<Arena>& a, std::uint64_t payload) {
  BlockHeader& b = a->block(payload);
  if (a->owner_pid == h.pid) {
    if (b.cls == kDedicated) {
      std::erase(h.dedicated, a);
    } else {
      push_free(h, *a, b.cls, b.start);
    }
    return;
  }
  if (b.cls == kDedicated) return;  // the owner drops it when it sees the count at zero
  auto& head = a->header().remote_free;
  std::uint64_t old = head.load(std::memory_order_relaxed);
  auto* next = reinterpret_cast<std::uint64_t*>(a->base + payload);
  do {
    *next = old;
  } while (!head.compare_exchange_weak(old, payload, std::memory_order_release,
                                       std::memory_order_relaxed));
}

void release_ref(Heap& h, const std::shared_ptr<Arena>& a, std::uint64_t payload) {
  if (a->block(payload).refs.fetch_sub(1, std::memory_order_acq_rel) == 1)
    free_block(h, a, payload);
}

void pin(Heap& h, Lease& lease, const std::shared_ptr<Arena>& a, std::uint64_t payload) {
  lease.pid_ = h.pid;
  a->block(payload).refs.fetch_add(1, std::memory_order_relaxed);
  lease.pins_.push_back({a, payload});
}

// Takes back the blocks other processes freed, and the dedicated arenas nobody holds any more.
void reclaim(Heap& h) {
  for (auto& a : h.own) {
    std::uint64_t p = a->header().remote_free.exchange(0, std::memory_order_acquire);
    while (p != 0) {
      if (p < kArenaHeaderBytes + kBlockHeaderBytes || p % 16 != 0 || p + 8 > a->size)
        break;  // corrupt
      const std::uint64_t next = *reinterpret_cast<const std::uint64_t*>(a->base + p);
      const BlockHeader& b = a->block(p);
      if (b.cls < kClasses && b.start >= kArenaHeaderBytes && b.start < p &&
          b.start + class_size(b.cls) <= a->size)
        push_free(h, *a, b.cls, b.start);
      p = next;
    }
  }
  std::erase_if(h.dedicated, [](const std::shared_ptr<Arena>& a) {
    return a->block(a->bump).refs.load(std::memory_order_acquire) == 0;
  });
}

void allocate(Heap& h, std::size_t size, std::size_t align, Mapping& m) {
  if (align < 16) align = 16;
  if ((align & (align - 1)) != 0)
    throw std::invalid_argument("mp: SharedBlock alignment must be a power of two");
  if (size > static_cast<std::size_t>(PTRDIFF_MAX) - 2 * align - kArenaHeaderBytes)
    throw std::bad_alloc();
  const std::size_t total =
      kBlockHeaderBytes + (align > 16 ? align - 16 : 0) + std::max<std::size_t>(size, 16);
  std::shared_ptr<Arena> arena;
  std::uint64_t payload = 0;
  if (total > kLargeBlock || align > 64) {
    payload = round_up(kArenaHeaderBytes + kBlockHeaderBytes, align);
    arena = new_arena(h, round_up(payload + size, 4096));
    arena->bump = payload;  // remembered: where the one block is
    BlockHeader& b = arena->block(payload);
    b.refs.store(1, std::memory_order_relaxed);
    b.cls = kDedicated;
    b.start = kArenaHeaderBytes;
    h.dedicated.push_back(arena);
  } else {
    const std::size_t c = class_of(total);
    auto& list = h.free_lists[c];
    if (list.empty()) reclaim(h);
    std::uint64_t start = 0;
    bool reused = false, zeroed = false;
    if (!list.empty()) {
      Arena* a = list.back().arena;
      start = list.back().start;
      zeroed = list.back().zeroed;
      list.pop_back();
      for (auto& own : h.own)
        if (own.get() == a) arena = own;
      reused = true;
    } else {
      const std::size_t need = class_size(c);
      if (h.own.empty() || h.own.back()->bump + need > h.own.back()->size) {
        const std::size_t bytes = std::max(
            h.own.empty() ? kFirstArenaBytes : std::min(h.own.back()->size * 2, kMaxArenaBytes),
            kArenaHeaderBytes + need);
        h.own.push_back(new_arena(h, bytes));
      }
      arena = h.own.back();
      start = arena->bump;
      arena->bump += need;
    }
    payload = round_up(start + kBlockHeaderBytes, align);
    BlockHeader& b = arena->block(payload);
    b.refs.store(1, std::memory_order_relaxed);
    b.cls = static_cast<std::uint32_t>(c);
    b.start = start;
    if (reused && !zeroed) std::memset(arena->base + payload, 0, std::max<std::size_t>(size, 16));
  }
  m.arena = std::move(arena);
  m.offset = payload;
  m.size = size;
  m.address = m.arena->base + payload;
  m.counted_pid = h.pid;
}

thread_local Lease* t_lease = nullptr;

}  // namespace

Lease& Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    release();
    pins_ = std::move(other.pins_);
    pid_ = other.pid_;
    other.pins_.clear();
  }
  return *this;
}

void Lease::release() noexcept {
  if (pins_.empty()) return;
  Heap& h = heap();
  std::lock_guard lk(h.mu);
  if (pid_ == h.pid) {  // in a forked child, a copy of the parent's lease is not ours to release
    // In reverse: the first block pinned is the first reused.
    for (auto it = pins_.rbegin(); it != pins_.rend(); ++it) release_ref(h, it->arena, it->offset);
  }
  pins_.clear();
}

LeaseScope::LeaseScope(Lease& lease) : previous_(t_lease) { t_lease = &lease; }
LeaseScope::~LeaseScope() { t_lease = previous_; }

ForkLease::ForkLease() {
  Heap& h = heap();
  std::lock_guard lk(h.mu);
  first_unpinned_ = h.next_seq;
  lease_.pins_.reserve(h.hold_count);
  for (Mapping* m = h.holds; m; m = m->next) pin(h, lease_, m->arena, m->offset);
  ++h.forks_in_progress;
  open_ = true;
}

ForkLease::~ForkLease() { forked(); }

void ForkLease::forked() noexcept {
  if (!open_) return;
  open_ = false;
  Heap& h = heap();
  std::lock_guard lk(h.mu);
  // Blocks made while the fork ran may be in the child; so may blocks dropped meanwhile.
  for (Mapping* m = h.holds; m && m->seq >= first_unpinned_; m = m->next)
    pin(h, lease_, m->arena, m->offset);
  for (auto& d : h.deferred)
    if (d.seq >= first_unpinned_) pin(h, lease_, d.arena, d.offset);
  if (--h.forks_in_progress == 0) {
    for (auto& d : h.deferred)
      if (d.counted_pid == h.pid) release_ref(h, d.arena, d.offset);
    h.deferred.clear();
  }
}

platform::Handle BlockAccess::arena_handle(const SharedBlock& block) noexcept {
  return block.mapping_ ? block.mapping_->arena->fd : platform::kInvalidHandle;
}

std::uint64_t BlockAccess::offset(const SharedBlock& block) noexcept {
  return block.mapping_ ? block.mapping_->offset : 0;
}

bool BlockAccess::held_alone(const SharedBlock& block) noexcept {
  if (!block.mapping_) return false;
  const Mapping& m = *block.mapping_;
  Heap& h = heap();
  std::lock_guard lk(h.mu);
  // A fork in progress on another thread pins every block held: it may be pinning this one.
  return m.arena->owner_pid == h.pid && m.counted_pid == h.pid && h.forks_in_progress == 0 &&
         m.arena->block(m.offset).refs.load(std::memory_order_acquire) == 1;
}

Stats stats() {
  Heap& h = heap();
  std::lock_guard lk(h.mu);
  Stats s;
  s.arenas = h.own.size() + h.dedicated.size();
  s.mapped = s.arenas;
  for (auto& [id, w] : h.received)
    if (!w.expired()) ++s.mapped;
  s.holds = h.hold_count;
  for (auto& l : h.free_lists) s.free_blocks += l.size();
  return s;
}

}  // namespace detail

SharedBlock::Mapping::~Mapping() {
  if (!arena) return;
  detail::Heap& h = detail::heap();
  std::lock_guard lk(h.mu);
  detail::unlink(h, this);
  if (h.forks_in_progress > 0) {
    h.deferred.push_back({arena, offset, seq, counted_pid});
  } else if (counted_pid == h.pid) {
    detail::release_ref(h, arena, offset);
  }
}

SharedBlock::SharedBlock(std::size_t size, std::size_t align) {
  auto m = std::make_shared<Mapping>();
  detail::Heap& h = detail::heap();
  {
    std::lock_guard lk(h.mu);
    detail::allocate(h, size, align, *m);
    detail::link(h, m.get());
  }
  mapping_ = std::move(m);
}

void* SharedBlock::data() const noexcept { return mapping_ ? mapping_->address : nullptr; }
std::size_t SharedBlock::size() const noexcept { return mapping_ ? mapping_->size : 0; }

SharedBlock::Wire SharedBlock::send() const {
  if (!mapping_) throw std::logic_error("mp: cannot send an empty SharedBlock");
  const detail::Arena& a = *mapping_->arena;
  Wire w;
  w.arena_token = reduction::send_handle(a.fd, "Shared memory");
  w.arena_id = a.id;
  w.arena_size = a.size;
  w.offset = mapping_->offset;
  w.size = mapping_->size;
  if (detail::t_lease) {
    detail::Heap& h = detail::heap();
    std::lock_guard lk(h.mu);
    detail::pin(h, *detail::t_lease, mapping_->arena, mapping_->offset);
  }
  return w;
}

void SharedBlock::attach(const Wire& w) {
  using detail::kArenaHeaderBytes;
  using detail::kBlockHeaderBytes;
  if (w.arena_size < kArenaHeaderBytes + kBlockHeaderBytes ||
      w.arena_size > static_cast<std::uint64_t>(PTRDIFF_MAX) ||
      w.offset < kArenaHeaderBytes + kBlockHeaderBytes || w.offset % 16 != 0 ||
      w.offset > w.arena_size || w.size > w.arena_size - w.offset)
    throw UnpicklingError("mp: a shared block received lies outside its arena");
  auto m = std::make_shared<Mapping>();
  detail::Heap& h = detail::heap();
  std::unique_lock lk(h.mu);
  std::shared_ptr<detail::Arena> arena = h.received[w.arena_id].lock();
  if (!arena) {
    arena = std::make_shared<detail::Arena>();
    arena->fd = static_cast<platform::Handle>(reduction::receive_handle(w.arena_token));
    if (platform::shared_memory_size(arena->fd) < w.arena_size)
      throw UnpicklingError("mp: shared memory received is smaller than announced");
    arena->size = static_cast<std::size_t>(w.arena_size);
    arena->base = static_cast<unsigned char*>(platform::map_shared(arena->fd, arena->size));
    arena->id = w.arena_id;
    const auto& hdr = arena->header();
    if (hdr.magic != detail::kMagic || hdr.id != w.arena_id || hdr.size != w.arena_size)
      throw UnpicklingError("mp: shared memory received is not the arena announced");
    h.received[w.arena_id] = arena;
  } else if (arena->size != w.arena_size) {
    throw UnpicklingError("mp: a shared block received names an arena of another size");
  }
  m->arena = std::move(arena);
  m->offset = w.offset;
  m->size = static_cast<std::size_t>(w.size);
  m->address = m->arena->base + w.offset;
  m->counted_pid = 0;
  detail::link(h, m.get());
  lk.unlock();  // the block this replaces takes the lock when it goes
  mapping_ = std::move(m);
}

}  // namespace mp::heap
