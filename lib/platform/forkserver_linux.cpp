// Linux part of lib/platform/forkserver.hpp: the inheritable descriptors from /proc/self/fd.
#include <dirent.h>
#include <fcntl.h>

#include <algorithm>
#include <cstdlib>

#include "platform/forkserver.hpp"

namespace mp::platform::forkserver {

std::vector<Handle> inheritable_descriptors() {
  std::vector<Handle> out;
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) throw_last_error("cannot list /proc/self/fd");
  const int own = ::dirfd(d);
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    const int fd = std::atoi(e->d_name);
    if (fd == own) continue;
    const int flags = ::fcntl(fd, F_GETFD);
    if (flags >= 0 && !(flags & FD_CLOEXEC)) out.push_back(fd);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

void close_descriptors_except(const std::vector<Handle>& keep) {
  std::vector<Handle> all;
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) throw_last_error("cannot list /proc/self/fd");
  const int own = ::dirfd(d);
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    const int fd = std::atoi(e->d_name);
    if (fd > 2 && fd != own && std::find(keep.begin(), keep.end(), fd) == keep.end()) all.push_back(fd);
  }
  ::closedir(d);
  for (Handle fd : all) close_handle(fd);
}

}  // namespace mp::platform::forkserver
