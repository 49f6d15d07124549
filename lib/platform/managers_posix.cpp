// POSIX parts of the managers' sockets that the connection layer (conn_posix.cpp) does not have
// (lib/platform/managers.hpp).
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
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

std::string path_socket_address(std::string& private_dir) {
  private_dir = make_private_directory("mp-");
  return private_dir + "/listener";
}

namespace {
// What the termination handler removes (copied into fixed storage: the handler may not allocate).
char g_socket_path[256];
char g_socket_dir[256];

void copy_path(char (&to)[256], const std::string& from) noexcept {
  const bool fits = !from.empty() && from[0] != '\0' && from.size() < sizeof to;
  const std::size_t n = fits ? from.size() : 0;
  std::memcpy(to, from.data(), n);
  to[n] = '\0';
}

void remove_then_die(int sig) {
  const int saved = errno;
  if (g_socket_path[0]) ::unlink(g_socket_path);
  if (g_socket_dir[0]) ::rmdir(g_socket_dir);
  ::signal(sig, SIG_DFL);
  ::raise(sig);  // delivered when the handler returns (the signal is blocked until then)
  errno = saved;
}
}  // namespace

void protect_server_from_group_signals(const std::string& path, const std::string& dir) {
  copy_path(g_socket_path, path);
  copy_path(g_socket_dir, dir);
  ::signal(SIGINT, SIG_IGN);
  struct sigaction sa {};
  sa.sa_handler = remove_then_die;
  sigfillset(&sa.sa_mask);  // no other signal runs the handler twice
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGHUP, &sa, nullptr);
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
