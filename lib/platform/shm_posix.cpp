// POSIX part of lib/platform/shm.hpp: named segments by shm_open/shm_unlink.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "platform/shm.hpp"

namespace mp::platform::shm {
namespace {
std::string path_of(const std::string& name) { return "/" + name; }
}  // namespace

void check_name(const std::string& name) {
  if (name.size() > kMaxName) throw_error(ENAMETOOLONG, "shared memory name too long: " + name.substr(0, 32) + "...");
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
      name.find('\0') != std::string::npos)
    throw_error(EINVAL, "invalid shared memory name '" + name + "'");
}

Handle open(const std::string& name) {
  check_name(name);
  const int fd = ::shm_open(path_of(name).c_str(), O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) throw_last_error("cannot open shared memory '" + name + "'");
  return fd;
}

void unlink(const std::string& name) {
  check_name(name);
  if (::shm_unlink(path_of(name).c_str()) != 0) throw_last_error("cannot unlink shared memory '" + name + "'");
}

FileId file_id(Handle h) {
  struct stat st {};
  if (::fstat(h, &st) != 0) throw_last_error("fstat");
  return {static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)};
}

}  // namespace mp::platform::shm
