// multiprocessing.shared_memory (mp/shared_memory.hpp): SharedMemory, ShareableList and
// SharedMemoryManager.
#include "mp/shared_memory.hpp"

#include <cerrno>
#include <new>
#include <stdexcept>
#include <system_error>

#include "platform/handle.hpp"
#include "platform/shared_memory.hpp"
#include "platform/system.hpp"
#include "shareable_list_layout.hpp"
#include "shm_tracker.hpp"
#include "support/unique_handle.hpp"

namespace mp::shared_memory {

struct SharedMemory::State {
  std::string name;
  std::size_t size = 0;
  void* address = nullptr;
  detail::shm_tracker::Ticket ticket;
  std::mutex mutex;  // guards address (close) and ticket (unlink)
  State() = default;
  State(const State&) = delete;
  State& operator=(const State&) = delete;
  ~State() { platform::unmap(address, size); }
};

namespace {

// CPython: "psm_" + secrets.token_hex(4); 16 hex digits here (the 14-character limit it keeps
// for macOS does not apply on Linux).
std::string generate_name() {
  unsigned char bytes[8];
  platform::random_bytes(bytes, sizeof bytes);
  static const char digits[] = "0123456789abcdef";
  std::string name = "psm_";
  for (unsigned char b : bytes) {
    name.push_back(digits[b >> 4]);
    name.push_back(digits[b & 15]);
  }
  return name;
}

}  // namespace

SharedMemory::SharedMemory(std::optional<std::string> name, bool create, std::int64_t size,
                           bool track) {
  if (size < 0) throw std::invalid_argument("'size' must be a positive integer");
  if (create && size == 0)
    throw std::invalid_argument("'size' must be a positive number different from zero");
  if (!create && !name) throw std::invalid_argument("'name' can only be None if create=True");
  if (name)
    while (!name->empty() && name->front() == '/') name->erase(0, 1);
  auto s = std::make_shared<State>();
  if (!create) {
    mp::detail::UniqueHandle fd{platform::open_shm(*name)};
    s->name = std::move(*name);
    s->size = platform::shared_memory_size(fd.get());
    if (s->size == 0) throw std::invalid_argument("cannot mmap an empty file");
    s->address = platform::map_shared(fd.get(), s->size);
    state_ = std::move(s);
    return;
  }
  if (static_cast<std::uint64_t>(size) > static_cast<std::uint64_t>(PTRDIFF_MAX))
    platform::throw_errno(ENOMEM, "cannot map shared memory of " + std::to_string(size) + " bytes");
  s->size = static_cast<std::size_t>(size);
  if (name) platform::check_shm_name(*name);
  if (platform::kShmNamedWhenMade) {
    // Windows: named when made, complete before it can be opened, and gone with its last handle:
    // nothing for the tracker to remove (CPython's resource tracker skips it too).
    for (int attempt = 0;; ++attempt) {
      s->name = name ? *name : generate_name();
      try {
        mp::detail::UniqueHandle fd{platform::create_named_shm(s->name, s->size)};
        s->address = platform::map_shared(fd.get(), s->size);
        break;
      } catch (const std::system_error& e) {
        if (name || e.code() != std::errc::file_exists || attempt == 100) throw;
      } catch (const std::bad_alloc&) {  // past the commit limit: OSError, as CPython there
        platform::throw_errno(ENOMEM,
                              "cannot create shared memory of " + std::to_string(size) + " bytes");
      }
    }
    state_ = std::move(s);
    return;
  }
  // The segment is complete (sized and mapped) and registered before it gets its name: a crash
  // at any point leaves either nothing or a name the tracker will remove.
  mp::detail::UniqueHandle fd{platform::create_unnamed_shm(s->size)};
  s->address = platform::map_shared(fd.get(), s->size);
  const platform::ShmFileId id = platform::shm_file_id(fd.get());
  for (int attempt = 0;; ++attempt) {
    s->name = name ? *name : generate_name();
    if (track) s->ticket = detail::shm_tracker::register_segment(s->name, id);
    try {
      platform::publish_shm(fd.get(), s->name);
      break;
    } catch (const std::system_error& e) {
      detail::shm_tracker::unregister_segment(s->ticket);
      s->ticket = {};
      // A generated name that exists already: draw another (CPython retries too).
      if (name || e.code() != std::errc::file_exists || attempt == 100) throw;
    }
  }
  state_ = std::move(s);
}

std::span<std::byte> SharedMemory::buf() const noexcept {
  if (!state_ || !state_->address) return {};
  return {static_cast<std::byte*>(state_->address), state_->size};
}

const std::string& SharedMemory::name() const {
  if (!state_) throw std::logic_error("SharedMemory: unbound object");
  return state_->name;
}

std::size_t SharedMemory::size() const { return state_ ? state_->size : 0; }

void SharedMemory::close() {
  if (!state_) return;
  std::lock_guard lk(state_->mutex);
  platform::unmap(state_->address, state_->size);
  state_->address = nullptr;
}

void SharedMemory::unlink() {
  if (!state_) throw std::logic_error("SharedMemory: unbound object");
  {
    std::lock_guard lk(state_->mutex);
    detail::shm_tracker::unregister_segment(state_->ticket);
    state_->ticket = {};
  }
  platform::unlink_shm(state_->name);
}

// ---------------------------------------------------------------- ShareableList

namespace layout = detail::shareable_list;

ShareableList::ShareableList(std::initializer_list<value_type> sequence,
                             std::optional<std::string> name)
    : ShareableList(std::vector<value_type>(sequence), std::move(name)) {}

ShareableList::ShareableList(const std::vector<value_type>& sequence,
                             std::optional<std::string> name) {
  const std::size_t size = layout::required_size(sequence);
  SharedMemory shm(std::move(name), true, static_cast<std::int64_t>(size));
  layout::write_list(shm.buf(), sequence);
  shm_ = std::move(shm);
  attach();
}

ShareableList::ShareableList(std::nullopt_t, const std::string& name) : shm_(name) { attach(); }

void ShareableList::attach() {
  layout::Header h = layout::read_header(shm_.buf());
  length_ = h.length;
  offsets_ = std::move(h.offsets);
}

std::size_t ShareableList::position(std::int64_t i, const char* message) const {
  const auto n = static_cast<std::int64_t>(length_);
  if (i < 0) i += n;
  if (i < 0 || i >= n) throw std::out_of_range(message);
  return static_cast<std::size_t>(i);
}

const ShareableList::value_type ShareableList::operator[](std::int64_t i) const {
  const std::size_t at = position(i, "index out of range");
  return layout::read_item(shm_.buf(), layout::Header{length_, offsets_}, at);
}

void ShareableList::set(std::int64_t i, const value_type& v) {
  const std::size_t at = position(i, "assignment index out of range");
  layout::write_item(shm_.buf(), layout::Header{length_, offsets_}, at, v);
}

std::vector<ShareableList::value_type> ShareableList::tolist() const {
  std::vector<value_type> out;
  out.reserve(length_);
  const layout::Header h{length_, offsets_};
  for (std::size_t i = 0; i < length_; ++i) out.push_back(layout::read_item(shm_.buf(), h, i));
  return out;
}

std::size_t ShareableList::count(const value_type& v) const {
  std::size_t n = 0;
  for (const value_type& x : tolist()) n += x == v;
  return n;
}

std::size_t ShareableList::index(const value_type& v) const {
  const layout::Header h{length_, offsets_};
  for (std::size_t i = 0; i < length_; ++i)
    if (layout::read_item(shm_.buf(), h, i) == v) return i;
  throw std::invalid_argument("value not in this container");
}

std::string ShareableList::format() const {
  std::string f;
  const layout::Header h{length_, offsets_};
  for (std::size_t i = 0; i < length_; ++i) f += layout::read_format(shm_.buf(), h, i);
  return f;
}

}  // namespace mp::shared_memory

// ---------------------------------------------------------------- SharedMemoryManager

namespace mp::managers {
namespace detail {

void SharedMemoryTracker::track_segment(std::string name) {
  std::lock_guard lk(mutex_);
  names_.push_back(std::move(name));
}

void SharedMemoryTracker::release_segment(std::string name) {
  std::lock_guard lk(mutex_);
  std::erase(names_, name);
}

std::vector<std::string> SharedMemoryTracker::list_segments() {
  std::lock_guard lk(mutex_);
  return names_;
}

void SharedMemoryTracker::unlink_all() {
  std::lock_guard lk(mutex_);
  for (const std::string& n : names_) {
    try {
      platform::unlink_shm(n);
    } catch (const std::system_error&) {
      // Unlinked already (by its creator or anyone else).
    }
  }
  names_.clear();
}

namespace {
constexpr const char* kTrackerType = "SharedMemoryTracker";
const bool g_tracker_registered =
    register_type(kTrackerType, &construct<SharedMemoryTracker, std::tuple<>>,
                  {{"track_segment", &invoke<&SharedMemoryTracker::track_segment>},
                   {"release_segment", &invoke<&SharedMemoryTracker::release_segment>},
                   {"list_segments", &invoke<&SharedMemoryTracker::list_segments>},
                   {"unlink_all", &invoke<&SharedMemoryTracker::unlink_all>}});

class TrackerProxy : public BaseProxy {
 public:
  explicit TrackerProxy(BaseProxy b) : BaseProxy(std::move(b)) {}
  void track_segment(const std::string& n) const {
    call<&SharedMemoryTracker::track_segment>("track_segment", n);
  }
  void unlink_all() const { call<&SharedMemoryTracker::unlink_all>("unlink_all"); }
};
}  // namespace
}  // namespace detail

SharedMemoryManager& SharedMemoryManager::operator=(SharedMemoryManager&& other) noexcept {
  if (this != &other) {
    try {
      shutdown();
    } catch (...) {
    }
    BaseManager::operator=(std::move(other));
    tracker_ = std::move(other.tracker_);
    made_ = std::move(other.made_);
  }
  return *this;
}

SharedMemoryManager::~SharedMemoryManager() {
  try {
    shutdown();
  } catch (...) {
  }
}

void SharedMemoryManager::start() {
  (void)detail::g_tracker_registered;
  BaseManager::start();
  try {
    tracker_ = make_object(detail::kTrackerType, {});
  } catch (...) {
    BaseManager::shutdown();
    throw;
  }
}

void SharedMemoryManager::shutdown() {
  if (started() && tracker_) {
    // What this process made: unlinked here, which also ends their tracking in this process.
    for (shared_memory::SharedMemory& shm : made_) {
      try {
        shm.unlink();
      } catch (const std::system_error&) {
      }
    }
    try {
      detail::TrackerProxy(tracker_).unlink_all();
    } catch (const std::exception&) {
      // The server is gone; what this process made is unlinked above.
    }
  }
  made_.clear();
  tracker_ = BaseProxy();
  BaseManager::shutdown();
}

void SharedMemoryManager::track(const shared_memory::SharedMemory& shm) {
  detail::TrackerProxy(tracker_).track_segment(shm.name());
  made_.push_back(shm);
}

shared_memory::SharedMemory SharedMemoryManager::SharedMemory(std::int64_t size) {
  if (!started() || !tracker_) throw std::logic_error("server not yet started");
  shared_memory::SharedMemory shm(std::nullopt, true, size);
  try {
    track(shm);
  } catch (...) {
    shm.unlink();
    throw;
  }
  return shm;
}

shared_memory::ShareableList SharedMemoryManager::ShareableList(
    const std::vector<shared_memory::ShareableList::value_type>& sequence) {
  if (!started() || !tracker_) throw std::logic_error("server not yet started");
  shared_memory::ShareableList sl(sequence);
  try {
    track(sl.shm());
  } catch (...) {
    sl.shm().unlink();
    throw;
  }
  return sl;
}

}  // namespace mp::managers
