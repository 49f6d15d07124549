// Linux part of platform/shared_memory.hpp: named segments created unnamed (O_TMPFILE in
// /dev/shm) and published by linkat, so an opener sees a complete segment or nothing. No portable
// form: POSIX shared memory objects cannot be linked or renamed (docs/DESIGN.md §6).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>

#include "mp/errors.hpp"
#include "platform/shared_memory.hpp"

namespace mp::platform {

namespace {
constexpr char kDir[] = "/dev/shm";
constexpr char kDirSlash[] = "/dev/shm/";
}  // namespace

Handle create_unnamed_shm(std::size_t size) {
  const int fd = ::open(kDir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) throw_last_error(std::string("cannot create shared memory in ") + kDir);
  // Mode 0600 less the umask, as shm_open: never more than the owner.
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    const int e = errno;
    ::close(fd);
    throw_error(e, "cannot size shared memory of " + std::to_string(size) + " bytes");
  }
  return fd;
}

void publish_shm(Handle h, const std::string& name) {
  check_shm_name(name);
  const std::string target = kDirSlash + name;
  char source[64];
  std::snprintf(source, sizeof source, "/proc/self/fd/%d", h);
  if (::linkat(AT_FDCWD, source, AT_FDCWD, target.c_str(), AT_SYMLINK_FOLLOW) == 0) return;
  int e = errno;
  if (e == ENOENT && ::linkat(h, "", AT_FDCWD, target.c_str(), AT_EMPTY_PATH) == 0)
    return;  // no /proc
  if (e == ENOENT) e = errno;
  throw_error(e, "cannot create shared memory '" + name + "'");
}

Handle create_named_shm(const std::string& name, std::size_t size) {
  check_shm_name(name);
  const Handle h = create_unnamed_shm(size);
  try {
    publish_shm(h, name);
  } catch (...) {
    close_handle(h);
    throw;
  }
  return h;
}

}  // namespace mp::platform
