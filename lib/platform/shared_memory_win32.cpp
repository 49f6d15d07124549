// Windows part of platform/shared_memory.hpp: pagefile-backed sections, each preceded by a header
// granule the caller never sees (platform/win32.hpp: the exact size, a machine-unique key, the
// wait-bucket counts). Anonymous ones have no name (a child receives a duplicated handle); named
// ones (mp::SharedMemory) are `Local\NAME`, as CPython's SharedMemory on Windows: named when
// made, gone with their last handle or view, so there is nothing to unlink or track.
// The header is written just after the section is made; an opener of a name waits (bounded) for
// it, so it never sees a section without its exact size.
#define _CRT_RAND_S
#include <stdlib.h>

#include <atomic>
#include <map>
#include <mutex>
#include <new>
#include <shared_mutex>
#include <stdexcept>
#include <system_error>

#include "mp/errors.hpp"

#include "platform/win32.hpp"

namespace mp::platform {

namespace {

constexpr std::uint64_t kGranule =
    65536;  // view offsets are multiples of the allocation granularity

struct View {
  std::size_t size;
  win32::SectionHeader* header;
  HANDLE keep;  // a named section's handle, held while the view lives (keeps the name); or null
};

// Every view of a section this process holds, by its address (for unmap and locate_shared).
std::shared_mutex g_views_lock;
std::map<std::uintptr_t, View>& views() {
  static auto* m = new std::map<std::uintptr_t, View>;  // never destroyed: used until exit
  return *m;
}

std::uint64_t random_key() {
  unsigned a = 0, b = 0;
  if (rand_s(&a) != 0 || rand_s(&b) != 0) throw_error(ERROR_GEN_FAILURE, "rand_s");
  return (static_cast<std::uint64_t>(a) << 32) | b;
}

win32::SectionHeader* map_header(HANDLE h) {
  void* p = ::MapViewOfFile(h, FILE_MAP_ALL_ACCESS, 0, 0, sizeof(win32::SectionHeader));
  if (!p) throw_last_error("cannot map shared memory");
  auto* header = static_cast<win32::SectionHeader*>(p);
  if (header->magic != win32::kSectionMagic && header->magic != win32::kNamedSectionMagic) {
    ::UnmapViewOfFile(p);
    throw_error(ERROR_INVALID_HANDLE, "not a shared memory section of this library");
  }
  return header;
}

// The conditions the contract names (EEXIST, ENOENT, EINVAL, ...) are POSIX codes, as on Linux,
// so shared code tests them without #ifs.
[[noreturn]] void throw_posix(int e, const std::string& what) {
  throw OSError(std::error_code(e, std::generic_category()), what);
}

constexpr std::uint64_t kMaxSize = static_cast<std::uint64_t>(PTRDIFF_MAX) - kGranule;

// A new section of `size` bytes after the header granule, named `name` (null: unnamed), its
// header written (the magic last, released: what an opener of the name waits for).
HANDLE create_section(std::size_t size, const std::wstring* name, const std::string& shown) {
  if (size > kMaxSize) throw std::bad_alloc();
  const std::uint64_t total = kGranule + size;
  // SEC_COMMIT charges the commit limit up front: more than RAM + pagefile fails here (bad_alloc,
  // as MemoryError), not at a later first touch. Pages are zero-filled on first touch.
  ::SetLastError(0);  // ERROR_ALREADY_EXISTS is reported alongside success
  HANDLE h = ::CreateFileMappingW(INVALID_HANDLE_VALUE, nullptr, PAGE_READWRITE | SEC_COMMIT,
                                  static_cast<DWORD>(total >> 32), static_cast<DWORD>(total),
                                  name ? name->c_str() : nullptr);
  const DWORD e = ::GetLastError();
  if (h && name && e == ERROR_ALREADY_EXISTS) {
    ::CloseHandle(h);  // someone else's: left untouched
    throw_posix(EEXIST, "cannot create shared memory '" + shown + "'");
  }
  if (!h) {
    if (e == ERROR_NOT_ENOUGH_MEMORY || e == ERROR_COMMITMENT_LIMIT || e == ERROR_OUTOFMEMORY)
      throw std::bad_alloc();
    // The name is taken by another kind of object (an event, a mutex).
    if (name && e == ERROR_INVALID_HANDLE)
      throw_posix(EEXIST, "cannot create shared memory '" + shown + "'");
    throw_error(static_cast<int>(e),
                "cannot create shared memory of " + std::to_string(size) + " bytes");
  }
  void* p = ::MapViewOfFile(h, FILE_MAP_ALL_ACCESS, 0, 0, sizeof(win32::SectionHeader));
  if (!p) {
    const DWORD map_error = ::GetLastError();
    ::CloseHandle(h);
    throw_error(static_cast<int>(map_error), "cannot map shared memory");
  }
  auto* header = static_cast<win32::SectionHeader*>(p);
  try {
    header->key = random_key();
  } catch (...) {
    ::UnmapViewOfFile(p);
    ::CloseHandle(h);
    throw;
  }
  header->size = size;
  std::atomic_ref(header->magic)
      .store(name ? win32::kNamedSectionMagic : win32::kSectionMagic, std::memory_order_release);
  ::UnmapViewOfFile(p);
  return h;
}

std::wstring section_name(const std::string& name) { return L"Local\\" + win32::widen(name); }

// How long an opener waits for the header of a section just made: its creator writes it right
// after making the section, so only a creator descheduled (or killed) in between is waited for.
constexpr DWORD kHeaderWaitMillis = 5000;

}  // namespace

Handle create_shared_memory(std::size_t size) {
  return win32::wrap(create_section(size, nullptr, std::string()));
}

std::size_t shared_memory_size(Handle h) {
  auto* header = map_header(win32::native(h));
  const std::size_t size = header->size;
  ::UnmapViewOfFile(header);
  return size;
}

void* map_shared(Handle h, std::size_t size) {
  auto* header = map_header(win32::native(h));
  if (size > header->size) {
    ::UnmapViewOfFile(header);
    throw_error(ERROR_INVALID_PARAMETER,
                "cannot map " + std::to_string(size) + " bytes of a smaller segment");
  }
  // A zero-byte view is not possible (0 means "to the end"): map one byte's page.
  void* p = ::MapViewOfFile(win32::native(h), FILE_MAP_ALL_ACCESS, 0, static_cast<DWORD>(kGranule),
                            size == 0 ? (header->size ? 1 : 0) : size);
  if (!p && header->size == 0) p = header;  // an empty segment: any distinct address will do
  HANDLE keep = nullptr;
  if (p && header->magic == win32::kNamedSectionMagic &&
      !::DuplicateHandle(::GetCurrentProcess(), win32::native(h), ::GetCurrentProcess(), &keep, 0,
                         FALSE, DUPLICATE_SAME_ACCESS)) {
    if (p != header) ::UnmapViewOfFile(p);
    p = nullptr;
  }
  if (!p) {
    const DWORD e = ::GetLastError();
    ::UnmapViewOfFile(header);
    // Wine does not charge SEC_COMMIT at creation: a section beyond RAM + swap fails here.
    if (e == ERROR_NOT_ENOUGH_MEMORY || e == ERROR_COMMITMENT_LIMIT || e == ERROR_OUTOFMEMORY)
      throw std::bad_alloc();
    throw_error(static_cast<int>(e), "cannot map shared memory");
  }
  std::unique_lock lock(g_views_lock);
  views()[reinterpret_cast<std::uintptr_t>(p)] = View{size, header, keep};
  return p;
}

void unmap(void* address, std::size_t) noexcept {
  if (!address) return;
  View view{};
  bool last = true;
  {
    std::unique_lock lock(g_views_lock);
    auto it = views().find(reinterpret_cast<std::uintptr_t>(address));
    if (it == views().end()) return;
    view = it->second;
    views().erase(it);
    for (const auto& [base, v] : views())
      if (v.header->key == view.header->key) last = false;
  }
  if (last) win32::release_wait_objects(view.header->key);
  if (address != view.header) ::UnmapViewOfFile(address);
  ::UnmapViewOfFile(view.header);
  if (view.keep) ::CloseHandle(view.keep);
}

namespace win32 {

std::optional<SharedWord> locate_shared(const void* address) noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(address);
  std::shared_lock lock(g_views_lock);
  auto& m = views();
  auto it = m.upper_bound(a);
  if (it == m.begin()) return std::nullopt;
  --it;
  if (a - it->first >= it->second.size) return std::nullopt;
  return SharedWord{it->second.header, a - it->first};
}

}  // namespace win32

// ---- named sections

void check_shm_name(const std::string& name) {
  if (name.size() > kMaxShmName)
    throw_posix(ENAMETOOLONG, "shared memory name too long: " + name.substr(0, 32) + "...");
  if (name.empty() || name == "." || name == ".." ||
      name.find_first_of(std::string("/\\\0", 3)) != std::string::npos)
    throw_posix(EINVAL, "invalid shared memory name '" + name + "'");
}

Handle create_unnamed_shm(std::size_t) {
  throw std::logic_error(
      "create_unnamed_shm: Windows names a section when it is made "
      "(kShmNamedWhenMade): use create_named_shm");
}

void publish_shm(Handle, const std::string&) {
  throw std::logic_error(
      "publish_shm: Windows names a section when it is made "
      "(kShmNamedWhenMade): use create_named_shm");
}

Handle create_named_shm(const std::string& name, std::size_t size) {
  check_shm_name(name);
  const std::wstring w = section_name(name);
  return win32::wrap(create_section(size, &w, name));
}

Handle open_shm(const std::string& name) {
  check_shm_name(name);
  HANDLE h = ::OpenFileMappingW(FILE_MAP_ALL_ACCESS, FALSE, section_name(name).c_str());
  if (!h) {
    const DWORD e = ::GetLastError();
    const std::string what = "cannot open shared memory '" + name + "'";
    if (e == ERROR_FILE_NOT_FOUND || e == ERROR_INVALID_HANDLE) throw_posix(ENOENT, what);
    if (e == ERROR_ACCESS_DENIED) throw_posix(EACCES, what);
    throw_error(static_cast<int>(e), what);
  }
  void* p = ::MapViewOfFile(h, FILE_MAP_ALL_ACCESS, 0, 0, sizeof(win32::SectionHeader));
  if (!p) {
    ::CloseHandle(h);  // smaller than mp's header: another program's
    throw_posix(EINVAL, "shared memory '" + name + "' was not made by mp");
  }
  std::atomic_ref<std::uint64_t> magic(static_cast<win32::SectionHeader*>(p)->magic);
  const ULONGLONG deadline = ::GetTickCount64() + kHeaderWaitMillis;
  std::uint64_t seen = 0;
  while ((seen = magic.load(std::memory_order_acquire)) == 0 && ::GetTickCount64() < deadline)
    ::Sleep(1);
  ::UnmapViewOfFile(p);
  if (seen != win32::kNamedSectionMagic) {
    ::CloseHandle(h);
    throw_posix(EINVAL, "shared memory '" + name +
                            "' was not made by mp (no header), or its maker died making it");
  }
  return win32::wrap(h);
}

void unlink_shm(const std::string& name) { check_shm_name(name); }

ShmFileId shm_file_id(Handle h) {
  auto* header = map_header(win32::native(h));
  const ShmFileId id{0, header->key};
  ::UnmapViewOfFile(header);
  return id;
}

void start_shm_watcher(Handle, void (*)(void*), void*) {}

void unlink_shm_if_same(const char*, std::size_t, ShmFileId) noexcept {}

}  // namespace mp::platform
