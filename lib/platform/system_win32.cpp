// Windows part of platform/system.hpp: environment (UTF-8 over the UTF-16 variables), CPU count,
// randomness (the CRT's rand_s: RtlGenRandom). Demangling is system_cxxabi.cpp, the code lookup for
// spawn modules_win32.cpp.
#define _CRT_RAND_S
#include <stdlib.h>

#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "platform/handle.hpp"
#include "platform/system.hpp"
#include "platform/win32.hpp"

namespace mp::platform {

std::optional<std::string> get_env(const char* name) {
  const std::wstring w = win32::widen(name);
  DWORD n = ::GetEnvironmentVariableW(w.c_str(), nullptr, 0);
  if (n == 0) return std::nullopt;
  std::wstring value(n, L'\0');
  n = ::GetEnvironmentVariableW(w.c_str(), value.data(), n);
  value.resize(n);
  return win32::narrow(value);
}

void unset_env(const char* name) { ::SetEnvironmentVariableW(win32::widen(name).c_str(), nullptr); }

void random_bytes(void* out, std::size_t size) {
  auto* p = static_cast<unsigned char*>(out);
  while (size > 0) {
    unsigned r = 0;
    if (rand_s(&r) != 0) throw_error(ERROR_GEN_FAILURE, "rand_s");
    const std::size_t n = size < sizeof r ? size : sizeof r;
    std::memcpy(p, &r, n);
    p += n;
    size -= n;
  }
}

unsigned cpu_count() noexcept {
  const DWORD n = ::GetActiveProcessorCount(ALL_PROCESSOR_GROUPS);
  return n > 0 ? static_cast<unsigned>(n) : 1u;
}

namespace {
// The functions at_thread_exit registered on one thread.
struct ThreadExitList {
  std::vector<std::pair<void (*)(void*), void*>> calls;
};
void WINAPI run_thread_exit_list(void* p) {
  auto* list = static_cast<ThreadExitList*>(p);
  for (auto it = list->calls.rbegin(); it != list->calls.rend(); ++it) it->first(it->second);
  delete list;
}
}  // namespace

void at_thread_exit(void (*fn)(void*), void* arg) {
  static const DWORD index = ::FlsAlloc(&run_thread_exit_list);
  if (index == FLS_OUT_OF_INDEXES) throw_last_error("FlsAlloc");
  auto* list = static_cast<ThreadExitList*>(::FlsGetValue(index));
  if (!list) {
    auto made = std::make_unique<ThreadExitList>();
    if (!::FlsSetValue(index, made.get())) throw_last_error("FlsSetValue");
    list = made.release();
  }
  list->calls.emplace_back(fn, arg);
}

}  // namespace mp::platform
