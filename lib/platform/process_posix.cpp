// POSIX part of platform/process.hpp: stdio, fork, exit, the lifeline, server signal set-up.
#include <cxxabi.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "mp/errors.hpp"
#include "platform/process.hpp"
#include "platform/shared_memory.hpp"

namespace mp::platform {

std::vector<std::string> program_arguments(int argc, char** argv) { return {argv, argv + argc}; }

int fork_process() {
  flush_stdio();
  const pid_t pid = ::fork();
  if (pid < 0) throw_last_error("fork");
  return static_cast<int>(pid);
}

void at_fork_in_child(void (*fn)()) { ::pthread_atfork(nullptr, nullptr, fn); }

namespace {
// Called through a pointer the loader fills in, not through the lazily bound call: a forked child
// (which leaves here) then does not resolve _exit itself (see bind_child_calls).
void (*const volatile g_exit)(int) = &::_exit;
}  // namespace

void exit_now(int code) noexcept {
  g_exit(code & 0xff);
  std::abort();  // not reached
}

void kill_and_reap(int pid) noexcept {
  ::kill(pid, SIGKILL);
  while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
  forget_ended_process(pid);
}

int parent_pid() noexcept { return static_cast<int>(::getppid()); }

void kill_self() noexcept {
  ::kill(::getpid(), SIGKILL);
  for (;;) ::pause();  // SIGKILL cannot be caught: never reached past the delivery
}

void ignore_interrupts(bool ignore) noexcept {
  struct sigaction sa {};
  sa.sa_handler = ignore ? SIG_IGN : SIG_DFL;
  ::sigaction(SIGINT, &sa, nullptr);
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

}  // namespace mp::platform
