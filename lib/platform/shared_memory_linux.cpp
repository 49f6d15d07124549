// Linux part of platform/shared_memory.hpp: anonymous segments (memfd) and the tracker's watcher.
// shared_memory_portable.cpp replaces it under MP_PLATFORM_POSIX_FALLBACKS.
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

#include "mp/errors.hpp"
#include "platform/shared_memory.hpp"

namespace mp::platform {

namespace {
// RAM plus swap, in bytes (0 if unknown): the most shared memory could ever hold.
std::uint64_t memory_capacity() noexcept {
  struct sysinfo si {};
  if (::sysinfo(&si) != 0) return 0;
  const auto unit = static_cast<std::uint64_t>(si.mem_unit ? si.mem_unit : 1);
  return (static_cast<std::uint64_t>(si.totalram) + static_cast<std::uint64_t>(si.totalswap)) *
         unit;
}
}  // namespace

Handle create_shared_memory(std::size_t size) {
  // A block larger than memory could ever back is refused at once (MemoryError), rather than
  // mapped sparse and failing at some later first touch. Also keeps off_t from wrapping.
  if (size > static_cast<std::size_t>(PTRDIFF_MAX)) throw std::bad_alloc();
  if (const std::uint64_t cap = memory_capacity(); cap != 0 && size > cap) throw std::bad_alloc();
  const int fd = static_cast<int>(::syscall(SYS_memfd_create, "mp", MFD_CLOEXEC));
  if (fd < 0) throw_last_error("memfd_create");
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    const int e = errno;
    ::close(fd);
    throw_error(e, "cannot size shared memory of " + std::to_string(size) + " bytes");
  }
  return fd;
}

std::size_t shared_memory_size(Handle h) {
  struct stat st {};
  if (::fstat(h, &st) != 0) throw_last_error("fstat");
  return static_cast<std::size_t>(st.st_size);
}

void* map_shared(Handle h, std::size_t size) {
  void* p = ::mmap(nullptr, size == 0 ? 1 : size, PROT_READ | PROT_WRITE, MAP_SHARED, h, 0);
  if (p == MAP_FAILED) throw_last_error("cannot map shared memory");
  return p;
}

void unmap(void* address, std::size_t size) noexcept {
  if (address) ::munmap(address, size == 0 ? 1 : size);
}

void forget_ended_process(int) noexcept {}  // memfds have no name

bool discard_shared_range(Handle h, std::size_t offset, std::size_t size) noexcept {
  // tmpfs frees the whole pages of the range and zero-fills the partial ones.
  return ::fallocate(h, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                     static_cast<off_t>(size)) == 0;
}

namespace {
constexpr char kDirSlash[] = "/dev/shm/";
}  // namespace

void unlink_shm_if_same(const char* name, std::size_t size, ShmFileId id) noexcept {
  char path[sizeof kDirSlash + kMaxShmName];
  if (size == 0 || size > kMaxShmName) return;
  std::memcpy(path, kDirSlash, sizeof kDirSlash - 1);
  std::memcpy(path + sizeof kDirSlash - 1, name, size);
  path[sizeof kDirSlash - 1 + size] = '\0';
  if (std::memchr(name, '/', size) || std::memchr(name, '\0', size)) return;
  struct stat st {};
  if (::fstatat(AT_FDCWD, path, &st, AT_SYMLINK_NOFOLLOW) != 0) return;
  if (static_cast<std::uint64_t>(st.st_dev) != id.dev ||
      static_cast<std::uint64_t>(st.st_ino) != id.ino)
    return;
  ::unlinkat(AT_FDCWD, path, 0);
}

}  // namespace mp::platform
