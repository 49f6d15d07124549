// The Windows OS layer beside the raw Win32 primitive it is built on, in the same run (under
// Wine absolute times say little; the ratios do): process start + wait (spawn_process + reap vs
// CreateProcessW + WaitForSingleObject) and a cross-process ping-pong (the wait object on a
// shared word vs two named auto-reset events).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "platform/handle.hpp"
#include "platform/process.hpp"
#include "platform/shared_memory.hpp"
#include "platform/wait.hpp"
#include "platform/win32.hpp"

namespace platform = mp::platform;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::uint32_t kRounds = 2000;
constexpr int kStarts = 15;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::wstring self() { return platform::win32::widen(platform::executable_path()); }

double raw_start_wait() {
  std::wstring cmd = L"bench --exit";
  STARTUPINFOW si{};
  si.cb = sizeof si;
  PROCESS_INFORMATION pi{};
  const auto t = Clock::now();
  if (!::CreateProcessW(self().c_str(), cmd.data(), nullptr, nullptr, FALSE, 0, nullptr, nullptr,
                        &si, &pi))
    std::exit(3);
  ::WaitForSingleObject(pi.hProcess, INFINITE);
  const double s = seconds_since(t);
  ::CloseHandle(pi.hThread);
  ::CloseHandle(pi.hProcess);
  return s;
}

double mp_start_wait() {
  const auto t = Clock::now();
  const int pid =
      platform::spawn_process(platform::executable_path(), {"bench", "--exit"}, nullptr, "", {});
  const platform::Handle h = platform::open_process(pid);
  platform::reap(h, true);
  const double s = seconds_since(t);
  platform::close_handle(h);
  return s;
}

void raw_pong(const wchar_t* ping, const wchar_t* pong, std::uint32_t rounds) {
  HANDLE a = ::CreateEventW(nullptr, FALSE, FALSE, ping),
         b = ::CreateEventW(nullptr, FALSE, FALSE, pong);
  for (std::uint32_t i = 0; i < rounds; ++i) {
    ::WaitForSingleObject(a, INFINITE);
    ::SetEvent(b);
  }
  ::CloseHandle(a);
  ::CloseHandle(b);
}

double raw_ping_pong() {
  wchar_t ping[64], pong[64];
  std::swprintf(ping, 64, L"Local\\mp-bench-ping-%lu", ::GetCurrentProcessId());
  std::swprintf(pong, 64, L"Local\\mp-bench-pong-%lu", ::GetCurrentProcessId());
  HANDLE a = ::CreateEventW(nullptr, FALSE, FALSE, ping),
         b = ::CreateEventW(nullptr, FALSE, FALSE, pong);
  std::wstring cmd = L"bench --raw-pong " + std::wstring(ping) + L" " + pong;
  STARTUPINFOW si{};
  si.cb = sizeof si;
  PROCESS_INFORMATION pi{};
  if (!::CreateProcessW(self().c_str(), cmd.data(), nullptr, nullptr, FALSE, 0, nullptr, nullptr,
                        &si, &pi))
    std::exit(3);
  const auto t = Clock::now();
  for (std::uint32_t i = 0; i < kRounds; ++i) {
    ::SetEvent(a);
    ::WaitForSingleObject(b, INFINITE);
  }
  const double s = seconds_since(t);
  ::WaitForSingleObject(pi.hProcess, INFINITE);
  ::CloseHandle(pi.hThread);
  ::CloseHandle(pi.hProcess);
  ::CloseHandle(a);
  ::CloseHandle(b);
  return s / kRounds;
}

// Word 0 counts hand-offs: the parent moves it to odd values, the child to even ones.
void mp_pong(std::atomic<std::uint32_t>* w, std::uint32_t first) {
  for (std::uint32_t i = first; i < 2 * kRounds; i += 2) {
    for (std::uint32_t v; (v = w->load()) != i;) platform::wait_on_address(w, v, nullptr);
    w->store(i + 1);
    platform::wake_address(w, 1);
  }
}

double mp_ping_pong() {
  const platform::Handle seg = platform::create_shared_memory(4096);
  auto* w = static_cast<std::atomic<std::uint32_t>*>(platform::map_shared(seg, 4096));
  const int pid = platform::spawn_process(
      platform::executable_path(), {"bench", "--mp-pong", std::to_string(seg)}, nullptr, "", {seg});
  const platform::Handle h = platform::open_process(pid);
  const auto t = Clock::now();
  mp_pong(w, 0);
  const double s = seconds_since(t);
  platform::reap(h, true);
  platform::close_handle(h);
  platform::unmap(w, 4096);
  platform::close_handle(seg);
  return s / kRounds;
}

}  // namespace

int main(int argc, char** argv) {
  const auto args = platform::program_arguments(argc, argv);
  if (args.size() >= 2 && args[1] == "--exit") return 0;
  if (args.size() >= 4 && args[1] == "--raw-pong") {
    raw_pong(platform::win32::widen(args[2]).c_str(), platform::win32::widen(args[3]).c_str(),
             kRounds);
    return 0;
  }
  if (args.size() >= 3 && args[1] == "--mp-pong") {
    const auto seg = static_cast<platform::Handle>(std::strtoll(args[2].c_str(), nullptr, 10));
    mp_pong(static_cast<std::atomic<std::uint32_t>*>(platform::map_shared(seg, 4096)), 1);
    return 0;
  }
  std::vector<double> raw, mp;
  for (int i = 0; i < kStarts; ++i) {
    raw.push_back(raw_start_wait());
    mp.push_back(mp_start_wait());
  }
  const double rs = median(raw), ms = median(mp);
  std::printf(
      "process start+wait   raw CreateProcessW %8.2f ms   mp spawn_process+reap %8.2f ms   ratio "
      "%.2f\n",
      rs * 1e3, ms * 1e3, ms / rs);
  raw.clear();
  mp.clear();
  for (int i = 0; i < 5; ++i) {
    raw.push_back(raw_ping_pong());
    mp.push_back(mp_ping_pong());
  }
  const double rp = median(raw), mpp = median(mp);
  std::printf(
      "cross-process ping-pong (per round trip)   raw named events %8.2f us   mp wait object %8.2f "
      "us   ratio %.2f\n",
      rp * 1e6, mpp * 1e6, mpp / rp);
}
