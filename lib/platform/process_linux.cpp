// Linux part of platform/process.hpp: pidfds, on_exit, /proc/self/exe and /proc/self/fd,
// signal names, and the spawn launcher (posix_spawn with a clean signal state).
#include <dirent.h>
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <malloc.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

#include "mp/errors.hpp"
#include "platform/process.hpp"
#include "platform/shared_memory.hpp"

#ifndef P_PIDFD
#  define P_PIDFD 3
#endif

extern char** environ;

namespace mp::platform {

bool end_with_forking_thread(int parent_pid) noexcept {
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) return false;
  // The parent may have died before the request: the child was re-parented then.
  if (::getppid() != parent_pid) kill_self();
  return true;
}

void bind_child_calls() noexcept {
  // Read, and written once: a write each time would be a copy-on-write fault after each fork.
  static constinit std::atomic<bool> bound{false};
  if (bound.load(std::memory_order_relaxed)) return;
  bound.store(true, std::memory_order_relaxed);
  int sig = 0;
  (void)::prctl(PR_GET_PDEATHSIG, &sig, 0, 0, 0);
  (void)::getppid();
  char c = 0;
  (void)::read(-1, &c, 0);  // EBADF
}

void release_free_heap() noexcept {
#ifdef __GLIBC__
  (void)::malloc_trim(0);
#endif
}

Handle open_process(int pid) {
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) throw_last_error("pidfd_open");
  return fd;  // pidfds are always close-on-exec
}

std::optional<int> reap(Handle process, bool block) {
  for (;;) {
    siginfo_t info{};
    const int r = ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(process), &info,
                           WEXITED | (block ? 0 : WNOHANG));
    if (r != 0) {
      if (errno == EINTR) continue;
      throw_last_error("waitid");
    }
    if (info.si_pid == 0) return std::nullopt;  // still running
    forget_ended_process(info.si_pid);
    if (info.si_code == CLD_EXITED) return info.si_status;
    return -info.si_status;  // CLD_KILLED / CLD_DUMPED: the signal number
  }
}

void send_signal(Handle process, int sig) {
  if (::syscall(SYS_pidfd_send_signal, process, sig, nullptr, 0) != 0 && errno != ESRCH)
    throw_last_error("pidfd_send_signal");
}

namespace {
void (*g_exit_hook)(int) = nullptr;
void on_exit_trampoline(int status, void*) {
  if (g_exit_hook) g_exit_hook(status);
}
}  // namespace

// Through a pointer the loader fills in (as exit_now): a forked child calls it once, and would
// otherwise resolve the lazily bound symbol itself.
int (*const volatile g_on_exit)(void (*)(int, void*), void*) = &::on_exit;

void on_exit_first(void (*fn)(int status)) {
  g_exit_hook = fn;
  g_on_exit(&on_exit_trampoline, nullptr);
}

std::string executable_path() { return "/proc/self/exe"; }

std::string executable_display_path() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return executable_path();
  return std::string(buf, static_cast<std::size_t>(n));
}

void name_process_after_executable() noexcept {
  try {
    std::string path = executable_display_path();
    constexpr const char kDeleted[] = " (deleted)";
    if (path.size() > sizeof kDeleted - 1 && path.ends_with(kDeleted))
      path.resize(path.size() - (sizeof kDeleted - 1));
    const std::string name =
        path.substr(path.find_last_of('/') + 1).substr(0, 15);  // comm: 15 chars
    if (!name.empty()) ::prctl(PR_SET_NAME, name.c_str(), 0, 0, 0);
  } catch (...) {
  }
}

std::string signal_name(int sig) {
  const char* abbrev = ::sigabbrev_np(sig);  // glibc 2.32
  return abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

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

int open_handle_count() { return static_cast<int>(open_descriptors().size()); }

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

namespace {

void check(int err, const char* what) {
  if (err != 0) throw_error(err, std::string("cannot start a spawned child: ") + what);
}

struct FileActions {
  posix_spawn_file_actions_t fa;
  FileActions() { check(posix_spawn_file_actions_init(&fa), "posix_spawn_file_actions_init"); }
  ~FileActions() { posix_spawn_file_actions_destroy(&fa); }
  FileActions(const FileActions&) = delete;
  FileActions& operator=(const FileActions&) = delete;
};

struct Attributes {
  posix_spawnattr_t attr;
  Attributes() { check(posix_spawnattr_init(&attr), "posix_spawnattr_init"); }
  ~Attributes() { posix_spawnattr_destroy(&attr); }
  Attributes(const Attributes&) = delete;
  Attributes& operator=(const Attributes&) = delete;
};

}  // namespace

int spawn_process(const std::string& executable, const std::vector<std::string>& args,
                  const char* env_name, const std::string& env_value,
                  const std::vector<Handle>& inherit, bool /*ends_with_owner*/) {
  // dup2(fd, fd) as a spawn file action clears FD_CLOEXEC in the child: glibc does so explicitly
  // (a plain dup2(fd, fd) would not; POSIX.1-2024 requires it; ProcessTest.
  // ChildInheritsExactlyThePassedHandles checks it). The parent's descriptors stay close-on-exec,
  // so a concurrent spawn from another thread does not receive them.
  FileActions actions;
  for (Handle fd : inherit)
    check(posix_spawn_file_actions_adddup2(&actions.fa, fd, fd), "bad descriptor to inherit");

  // Signals: an empty mask and default dispositions, not the calling thread's mask nor the
  // process' ignored signals (a child ignoring SIGTERM would defeat terminate()).
  Attributes attributes;
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  check(posix_spawnattr_setsigmask(&attributes.attr, &none), "posix_spawnattr_setsigmask");
  check(posix_spawnattr_setsigdefault(&attributes.attr, &all), "posix_spawnattr_setsigdefault");
  check(posix_spawnattr_setflags(&attributes.attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF),
        "posix_spawnattr_setflags");

  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  // The environment: the caller's, without any `env_name` entry, plus ours.
  std::string entry = std::string(env_name) + "=" + env_value;
  const std::size_t prefix = std::strlen(env_name) + 1;
  std::vector<char*> envp;
  for (char** e = environ; e && *e; ++e)
    if (std::strncmp(*e, entry.c_str(), prefix) != 0) envp.push_back(*e);
  envp.push_back(entry.data());
  envp.push_back(nullptr);

  pid_t pid = 0;
  const int err = ::posix_spawn(&pid, executable.c_str(), &actions.fa, &attributes.attr,
                                argv.data(), envp.data());
  if (err != 0) throw_error(err, "cannot spawn '" + executable + "'");
  return static_cast<int>(pid);
}

}  // namespace mp::platform
