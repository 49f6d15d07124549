// POSIX parts of the managers' sockets that the connection layer (conn_posix.cpp) does not have
// (lib/platform/managers.hpp).
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <vector>

#include "mp/errors.hpp"
#include "platform/conn.hpp"
#include "platform/managers.hpp"

namespace mp::platform {

std::string make_private_directory(const std::string& prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/" + prefix + "XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data())) throw_last_error("cannot create a private directory in " + templ);
  return std::string(buf.data());
}

void remove_directory(const std::string& path) noexcept { ::rmdir(path.c_str()); }

std::optional<int> peer_pid(Handle connection) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(connection, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.pid <= 0)
    return std::nullopt;
  return static_cast<int>(cred.pid);
}

std::size_t recv_some(Handle connection, void* data, std::size_t size) {
  const std::size_t n = conn::read_some(connection, data, size);
  if (n == 0) throw EOFError();
  return n;
}

void recv_exact(Handle connection, void* data, std::size_t size) {
  char* p = static_cast<char*>(data);
  while (size > 0) {
    const std::size_t n = recv_some(connection, p, size);
    p += n;
    size -= n;
  }
}

}  // namespace mp::platform
