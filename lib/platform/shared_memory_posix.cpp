// POSIX part of platform/shared_memory.hpp: named segments (shm_open, shm_unlink, fstat).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "mp/errors.hpp"
#include "platform/shared_memory.hpp"

namespace mp::platform {

namespace {
std::string path_of(const std::string& name) { return "/" + name; }
}  // namespace

void check_shm_name(const std::string& name) {
  if (name.size() > kMaxShmName)
    throw_error(ENAMETOOLONG, "shared memory name too long: " + name.substr(0, 32) + "...");
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
      name.find('\0') != std::string::npos)
    throw_error(EINVAL, "invalid shared memory name '" + name + "'");
}

Handle open_shm(const std::string& name) {
  check_shm_name(name);
  const int fd = ::shm_open(path_of(name).c_str(), O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) throw_last_error("cannot open shared memory '" + name + "'");
  return fd;
}

void unlink_shm(const std::string& name) {
  check_shm_name(name);
  if (::shm_unlink(path_of(name).c_str()) != 0)
    throw_last_error("cannot unlink shared memory '" + name + "'");
}

ShmFileId shm_file_id(Handle h) {
  struct stat st {};
  if (::fstat(h, &st) != 0) throw_last_error("fstat");
  return {static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)};
}

}  // namespace mp::platform
