// Linux part of lib/platform/forkserver.hpp: the inheritable descriptors from /proc/self/fd.
#include <dirent.h>
#include <fcntl.h>

#include <algorithm>
#include <cstdlib>

#include "platform/forkserver.hpp"

namespace mp::platform::forkserver {

namespace {

// Every open descriptor of this process, from /proc/self/fd (without the listing's own).
std::vector<Handle> open_descriptors() {
  std::vector<Handle> out;
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) throw_last_error("cannot list /proc/self/fd");
  const int own = ::dirfd(d);
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    const int fd = std::atoi(e->d_name);
    if (fd != own) out.push_back(fd);
  }
  ::closedir(d);
  return out;
}

}  // namespace

std::vector<Handle> inheritable_descriptors() {
  std::vector<Handle> out = open_descriptors();
  std::erase_if(out, [](Handle fd) {
    const int flags = ::fcntl(fd, F_GETFD);
    return flags < 0 || (flags & FD_CLOEXEC);
  });
  std::sort(out.begin(), out.end());
  return out;
}

void close_descriptors_except(const std::vector<Handle>& keep) {
  for (Handle fd : open_descriptors())
    if (fd > 2 && std::find(keep.begin(), keep.end(), fd) == keep.end()) close_handle(fd);
}

}  // namespace mp::platform::forkserver
