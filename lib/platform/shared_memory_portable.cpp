// Portable POSIX implementation of what shared_memory_linux.cpp does (MP_PLATFORM_POSIX_FALLBACKS):
// anonymous segments without memfd_create (shm_open of a random name, unlinked at once), each
// with a hidden header of wait slots (platform/portable.hpp); the tracker's unlink without
// /dev/shm paths.
// Differences from the Linux file: a process killed between shm_open and shm_unlink of an
// anonymous segment (two system calls) leaves its "/mp-anon-<pid>" name until its reaper in the
// library removes it (or, for a process nobody reaps through mp, until that pid makes an anonymous
// segment again: at most one name per pid); the size limit is RAM
// (sysconf) where Linux allows RAM + swap; macOS allows one ftruncate per object, which is all
// this file does.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <string>

#include "mp/errors.hpp"
#include "platform/portable.hpp"
#include "platform/shared_memory.hpp"
#include "platform/system.hpp"
#include "platform/wait.hpp"

namespace mp::platform {

namespace portable {

void (*anonymous_object_fault)() = nullptr;

std::size_t header_bytes() noexcept {
  static const std::size_t bytes = [] {
    const long page = ::sysconf(_SC_PAGESIZE);
    const std::size_t p = page > 0 ? static_cast<std::size_t>(page) : 4096;
    return (sizeof(SegmentHeader) + p - 1) / p * p;
  }();
  return bytes;
}

namespace {

struct View {
  std::size_t size;  // the caller's view (from header_bytes() on)
  SegmentHeader* header;
};

// Every view with a header this process holds, by the address map_shared() returned. Held across
// fork (hold_across_fork): a forked child inherits the mappings and this table with them.
struct Views {
  std::mutex lock;
  std::map<std::uintptr_t, View> by_address;
  Views() { hold_across_fork(lock); }
};
Views& views() {
  static Views* v = new Views;  // never destroyed: used until exit
  return *v;
}
// Made while the library loads, on one thread (see wait_posix.cpp).
[[maybe_unused]] Views& g_views_at_load = views();

// The header of the segment behind `h`, mapped (to unmap with header_bytes()), or null when `h`
// has none (a named segment).
SegmentHeader* map_header(Handle h, std::size_t file_size) {
  if (file_size < header_bytes()) return nullptr;
  void* p = ::mmap(nullptr, header_bytes(), PROT_READ | PROT_WRITE, MAP_SHARED, h, 0);
  if (p == MAP_FAILED) throw_last_error("cannot map shared memory");
  auto* header = static_cast<SegmentHeader*>(p);
  if (header->magic == kSegmentMagic && header->size == file_size - header_bytes()) return header;
  ::munmap(p, header_bytes());
  return nullptr;
}

std::size_t file_size(Handle h) {
  struct stat st {};
  if (::fstat(h, &st) != 0) throw_last_error("fstat");
  return static_cast<std::size_t>(st.st_size);
}

// RAM in bytes (0 if unknown): POSIX has no portable view of swap.
std::uint64_t memory_capacity() noexcept {
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return 0;
  return static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page);
}

// The transient name of this process's anonymous objects: "/mp-anon-<pid>". One object is named
// at a time per process (the lock), so a process killed between shm_open and shm_unlink leaves at
// most this one name, which its reaper removes (forget_ended_process) or the next process of the
// same pid reuses. A name is only a way to an object: removing another process's name while it
// makes one (pid namespaces sharing a shm namespace) costs that process nothing, its descriptor
// stays valid.
void anonymous_name(int pid, char (&out)[32]) noexcept {
  std::snprintf(out, sizeof out, "/mp-anon-%d", pid);
}

struct Naming {
  std::mutex lock;
  Naming() { hold_across_fork(lock); }
};
Naming& naming() {
  static Naming* n = new Naming;  // never destroyed: used until exit
  return *n;
}
[[maybe_unused]] Naming& g_naming_at_load = naming();

// An unnamed shared memory object: shm_open of this process's transient name, unlinked at once.
Handle anonymous_object() {
  std::lock_guard lock(naming().lock);
  char name[32];
  anonymous_name(current_pid(), name);
  for (int attempt = 0;; ++attempt) {
    // shm_open's descriptors are close-on-exec (POSIX).
    const int fd = ::shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd >= 0) {
      if (anonymous_object_fault) anonymous_object_fault();
      ::shm_unlink(name);
      return fd;
    }
    // EEXIST: left by an ended process of this pid, killed between the two calls.
    if (errno != EEXIST || attempt == 1) throw_last_error("cannot create shared memory");
    ::shm_unlink(name);
  }
}

}  // namespace

std::optional<SharedWord> locate_shared(const void* address) noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(address);
  Views& v = views();
  std::lock_guard lock(v.lock);
  auto it = v.by_address.upper_bound(a);
  if (it == v.by_address.begin()) return std::nullopt;
  --it;
  if (a - it->first >= it->second.size) return std::nullopt;
  return SharedWord{it->second.header, header_bytes() + (a - it->first)};
}

}  // namespace portable

void forget_ended_process(int pid) noexcept {
  char name[32];
  portable::anonymous_name(pid, name);
  ::shm_unlink(name);
}

Handle create_shared_memory(std::size_t size) {
  const std::size_t header = portable::header_bytes();
  if (size > static_cast<std::size_t>(PTRDIFF_MAX) - header) throw std::bad_alloc();
  if (const std::uint64_t cap = portable::memory_capacity(); cap != 0 && size > cap)
    throw std::bad_alloc();
  const Handle fd = portable::anonymous_object();
  try {
    if (::ftruncate(fd, static_cast<off_t>(header + size)) != 0)
      throw_last_error("cannot size shared memory of " + std::to_string(size) + " bytes");
    void* p = ::mmap(nullptr, header, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) throw_last_error("cannot map shared memory");
    auto* h = static_cast<portable::SegmentHeader*>(p);
    try {
      portable::init_wait_table(h->waits, true);
    } catch (...) {
      ::munmap(p, header);
      throw;
    }
    h->size = size;
    h->magic = portable::kSegmentMagic;  // last: a segment with the magic is complete
    ::munmap(p, header);
  } catch (...) {
    ::close(fd);
    throw;
  }
  return fd;
}

std::size_t shared_memory_size(Handle h) {
  const std::size_t size = portable::file_size(h);
  portable::SegmentHeader* header = portable::map_header(h, size);
  if (!header) return size;
  ::munmap(header, portable::header_bytes());
  return size - portable::header_bytes();
}

void* map_shared(Handle h, std::size_t size) {
  const std::size_t total = portable::file_size(h);
  if (portable::SegmentHeader* header = portable::map_header(h, total)) {
    ::munmap(header, portable::header_bytes());
    if (size > total - portable::header_bytes())
      throw_error(EINVAL, "cannot map " + std::to_string(size) + " bytes of a smaller segment");
    // One mapping: the header, then the caller's view (a zero-byte view still gets an address
    // of its own past the header).
    const std::size_t length = portable::header_bytes() + (size == 0 ? 1 : size);
    void* p = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, h, 0);
    if (p == MAP_FAILED) throw_last_error("cannot map shared memory");
    auto* base = static_cast<unsigned char*>(p);
    void* view = base + portable::header_bytes();
    portable::Views& v = portable::views();
    std::lock_guard lock(v.lock);
    v.by_address[reinterpret_cast<std::uintptr_t>(view)] =
        portable::View{size, static_cast<portable::SegmentHeader*>(p)};
    return view;
  }
  void* p = ::mmap(nullptr, size == 0 ? 1 : size, PROT_READ | PROT_WRITE, MAP_SHARED, h, 0);
  if (p == MAP_FAILED) throw_last_error("cannot map shared memory");
  return p;
}

void unmap(void* address, std::size_t size) noexcept {
  if (!address) return;
  {
    portable::Views& v = portable::views();
    std::lock_guard lock(v.lock);
    auto it = v.by_address.find(reinterpret_cast<std::uintptr_t>(address));
    if (it != v.by_address.end()) {
      const portable::View view = it->second;
      v.by_address.erase(it);
      ::munmap(view.header, portable::header_bytes() + (view.size == 0 ? 1 : view.size));
      return;
    }
  }
  ::munmap(address, size == 0 ? 1 : size);
}

// POSIX has no portable way to drop a shared object's pages (macOS lacks fallocate and
// MADV_REMOVE): the caller clears the range by writing.
bool discard_shared_range(Handle, std::size_t, std::size_t) noexcept { return false; }

void unlink_shm_if_same(const char* name, std::size_t size, ShmFileId id) noexcept {
  // "/" + name, then shm_open to compare the object: POSIX names no directory to stat.
  char path[1 + kMaxShmName + 1];
  if (size == 0 || size > kMaxShmName) return;
  if (std::memchr(name, '/', size) || std::memchr(name, '\0', size)) return;
  path[0] = '/';
  std::memcpy(path + 1, name, size);
  path[1 + size] = '\0';
  const int fd = ::shm_open(path, O_RDONLY, 0);
  if (fd < 0) return;
  struct stat st {};
  const bool same = ::fstat(fd, &st) == 0 && static_cast<std::uint64_t>(st.st_dev) == id.dev &&
                    static_cast<std::uint64_t>(st.st_ino) == id.ino;
  ::close(fd);
  if (same) ::shm_unlink(path);
}

}  // namespace mp::platform
