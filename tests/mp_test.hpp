// Shared test support: one fixture parameterized over the start methods, with checks that a
// test leaves no child process behind.
#pragma once

#include <gtest/gtest.h>
#ifdef _WIN32
#  ifndef WIN32_LEAN_AND_MEAN
#    define WIN32_LEAN_AND_MEAN
#  endif
#  ifndef NOMINMAX
#    define NOMINMAX
#  endif
#  ifndef NOGDI
#    define NOGDI  // its ERROR macro would break mp::util::ERROR
#  endif
#  include <windows.h>
// After windows.h:
#  include <tlhelp32.h>
#else
#  include <dirent.h>
#  include <unistd.h>
#endif

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "mp/forkserver.hpp"
#include "mp/multiprocessing.hpp"

namespace mp_test {

using namespace std::chrono_literals;

// Generous bound for any single blocking call in a test (a hang fails instead of blocking CI).
inline constexpr auto kTimeout = 30s;

#ifdef _WIN32
// The creation time of `process` (0 if unknown).
inline ULONGLONG created_at(HANDLE process) {
  FILETIME created{}, ended{}, kernel{}, user{};
  if (!::GetProcessTimes(process, &created, &ended, &kernel, &user)) return 0;
  return (ULONGLONG{created.dwHighDateTime} << 32) | created.dwLowDateTime;
}

// Windows (spawn only): every live direct child of this process, from a process snapshot (an
// ended child is gone from it; 'R' stands for any state). A snapshot's parent pid is the pid the
// creator had: Windows reuses pids, so a process made before this one (by an earlier holder of
// its pid, e.g. another test program that ended) is not a child.
inline std::vector<std::pair<int, char>> children_with_state() {
  std::vector<std::pair<int, char>> out;
  HANDLE snap = ::CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0);
  if (snap == INVALID_HANDLE_VALUE) return out;
  const ULONGLONG self_created = created_at(::GetCurrentProcess());
  PROCESSENTRY32W e{};
  e.dwSize = sizeof e;
  for (BOOL ok = ::Process32FirstW(snap, &e); ok; ok = ::Process32NextW(snap, &e)) {
    if (e.th32ParentProcessID != ::GetCurrentProcessId()) continue;
    HANDLE h = ::OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, e.th32ProcessID);
    if (!h) continue;  // gone since the snapshot
    const ULONGLONG created = created_at(h);
    ::CloseHandle(h);
    if (created != 0 && self_created != 0 && created < self_created) continue;
    out.emplace_back(static_cast<int>(e.th32ProcessID), 'R');
  }
  ::CloseHandle(snap);
  return out;
}

// The exit code kill() gives: -SIGKILL; on Windows -SIGTERM (TerminateProcess, as CPython there).
inline constexpr int kKilledExitCode = -15;
inline int forkserver_pid() { return 0; }  // no forkserver on Windows
inline void set_env(const std::string& name, const std::string& value) {
  ::_putenv_s(name.c_str(), value.c_str());
}
inline void unset_env(const std::string& name) { ::_putenv_s(name.c_str(), ""); }
#else
inline constexpr int kKilledExitCode = -9;
inline int forkserver_pid() { return mp::forkserver::server_pid().value_or(0); }
inline void set_env(const std::string& name, const std::string& value) {
  ::setenv(name.c_str(), value.c_str(), 1);
}
inline void unset_env(const std::string& name) { ::unsetenv(name.c_str()); }

// Every direct child of this process (zombies included) with its state letter, from /proc.
inline std::vector<std::pair<int, char>> children_with_state() {
  std::vector<std::pair<int, char>> out;
  const int self = ::getpid();
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    const int pid = std::atoi(e->d_name);
    if (pid <= 0) continue;
    std::ifstream f("/proc/" + std::string(e->d_name) + "/stat");
    std::string line;
    if (!std::getline(f, line)) continue;
    const auto rp = line.rfind(')');
    if (rp == std::string::npos) continue;
    std::istringstream rest(line.substr(rp + 2));
    char state = 0;
    int ppid = 0;
    rest >> state >> ppid;
    if (ppid == self) out.emplace_back(pid, state);
  }
  ::closedir(d);
  return out;
}
#endif

// The pids of the live (non-zombie) direct children of this process, except the forkserver it
// started (it lives as long as this process, as in CPython).
inline std::vector<int> live_children() {
  std::vector<int> out;
  const int server = forkserver_pid();
  for (auto [pid, state] : children_with_state())
    if (state != 'Z' && pid != server) out.push_back(pid);
  return out;
}

// Joins `p` within kTimeout, or kills it and fails the test.
inline void join_or_fail(mp::Process& p, std::chrono::nanoseconds timeout = kTimeout) {
  p.join(timeout);
  if (p.exitcode()) return;
  ADD_FAILURE() << p.name() << " did not end within the timeout; killing it";
  p.kill();
  p.join();
}

// Runs each test under every start method; checks for leftover children afterwards.
class StartMethodTest : public testing::TestWithParam<std::string> {
 protected:
  mp::Context ctx() const { return mp::get_context(GetParam()); }
  void TearDown() override {
    for (mp::Process& p : mp::active_children()) {
      ADD_FAILURE() << "test left child " << p.name() << " running";
      p.kill();
      p.join();
    }
    const auto left = live_children();
    EXPECT_TRUE(left.empty()) << "test left " << left.size() << " child processes";
  }
};

inline std::string method_name(const testing::TestParamInfo<std::string>& info) {
  return info.param;
}

}  // namespace mp_test

#define MP_INSTANTIATE_START_METHODS(Suite)                                                     \
  INSTANTIATE_TEST_SUITE_P(StartMethods, Suite, testing::ValuesIn(mp::get_all_start_methods()), \
                           mp_test::method_name)
