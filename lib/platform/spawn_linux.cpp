// Linux part of lib/platform/spawn.hpp, on glibc's posix_spawn.
//
// Why not Boost.Process v1, which DESIGN.md names for launching: it forks, and fork copies the
// parent's page tables, so a child of a parent holding 256 MiB took 12-28 ms to start against
// 2-4 ms for posix_spawn of the same binary (bench/results/bench-full.md); its vfork launcher does
// not link in Boost 1.81. glibc's posix_spawn clones with CLONE_VM | CLONE_VFORK, so its cost
// does not depend on the parent's size, and it returns the errno of a failed exec itself.
#include <signal.h>
#include <spawn.h>
#include <unistd.h>

#include <cstring>

#include "platform/spawn.hpp"

extern char** environ;

namespace mp::platform {
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

int spawn_process(const std::string& executable, const std::vector<std::string>& args, const char* env_name,
                  const std::string& env_value, const std::vector<Handle>& inherit) {
  // dup2(fd, fd) as a spawn file action clears FD_CLOEXEC in the child: glibc does so explicitly
  // (a plain dup2(fd, fd) would not; POSIX.1-2024 requires it; ProcessTest.
  // ChildInheritsExactlyThePassedHandles checks it). The parent's descriptors stay close-on-exec,
  // so a concurrent spawn from another thread does not receive them.
  FileActions actions;
  for (Handle fd : inherit) check(posix_spawn_file_actions_adddup2(&actions.fa, fd, fd), "bad descriptor to inherit");

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
  const int err = ::posix_spawn(&pid, executable.c_str(), &actions.fa, &attributes.attr, argv.data(), envp.data());
  if (err != 0) throw_error(err, "cannot spawn '" + executable + "'");
  return static_cast<int>(pid);
}

}  // namespace mp::platform
