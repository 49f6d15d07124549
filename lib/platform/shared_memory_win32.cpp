// Windows part of anonymous shared memory (platform/shared_memory.hpp): pagefile-backed sections without a
// name (a child receives a duplicated handle), each preceded by a header granule the caller never
// sees (platform/win32.hpp: size, machine-unique key, wait-bucket counts).
#define _CRT_RAND_S
#include <stdlib.h>

#include <map>
#include <mutex>
#include <new>
#include <shared_mutex>

#include "platform/win32.hpp"

namespace mp::platform {

namespace {

constexpr std::uint64_t kGranule =
    65536;  // view offsets are multiples of the allocation granularity

struct View {
  std::size_t size;
  win32::SectionHeader* header;
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
  if (header->magic != win32::kSectionMagic) {
    ::UnmapViewOfFile(p);
    throw_error(ERROR_INVALID_HANDLE, "not a shared memory section of this library");
  }
  return header;
}

}  // namespace

Handle create_shared_memory(std::size_t size) {
  if (size > static_cast<std::size_t>(PTRDIFF_MAX) - kGranule) throw std::bad_alloc();
  const std::uint64_t total = kGranule + size;
  // SEC_COMMIT charges the commit limit up front: more than RAM + pagefile fails here (bad_alloc,
  // as MemoryError), not at a later first touch. Pages are zero-filled on first touch.
  HANDLE h =
      ::CreateFileMappingW(INVALID_HANDLE_VALUE, nullptr, PAGE_READWRITE | SEC_COMMIT,
                           static_cast<DWORD>(total >> 32), static_cast<DWORD>(total), nullptr);
  if (!h) {
    const DWORD e = ::GetLastError();
    if (e == ERROR_NOT_ENOUGH_MEMORY || e == ERROR_COMMITMENT_LIMIT || e == ERROR_OUTOFMEMORY)
      throw std::bad_alloc();
    throw_error(static_cast<int>(e),
                "cannot create shared memory of " + std::to_string(size) + " bytes");
  }
  void* p = ::MapViewOfFile(h, FILE_MAP_ALL_ACCESS, 0, 0, sizeof(win32::SectionHeader));
  if (!p) {
    const DWORD e = ::GetLastError();
    ::CloseHandle(h);
    throw_error(static_cast<int>(e), "cannot map shared memory");
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
  header->magic = win32::kSectionMagic;
  ::UnmapViewOfFile(p);
  return win32::wrap(h);
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
  if (!p) {
    const DWORD e = ::GetLastError();
    ::UnmapViewOfFile(header);
    // Wine does not charge SEC_COMMIT at creation: a section beyond RAM + swap fails here.
    if (e == ERROR_NOT_ENOUGH_MEMORY || e == ERROR_COMMITMENT_LIMIT || e == ERROR_OUTOFMEMORY)
      throw std::bad_alloc();
    throw_error(static_cast<int>(e), "cannot map shared memory");
  }
  std::unique_lock lock(g_views_lock);
  views()[reinterpret_cast<std::uintptr_t>(p)] = View{size, header};
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

}  // namespace mp::platform
