// Windows part of platform/process.hpp: CreateProcessW passing exactly the listed handles
// (PROC_THREAD_ATTRIBUTE_HANDLE_LIST), every child that ends with its owner (a daemonic one) in
// one kill-on-close job object (the lifeline: it dies with its owner however the owner ends; a
// non-daemonic child outlives a killed owner, as in CPython), exit codes as CPython's
// popen_spawn_win32 (a terminated child reports -SIGTERM). No fork: at_fork_in_child is a no-op,
// fork_process, on_exit_first, inheritable_descriptors and close_descriptors_except are not
// defined (their callers, the fork and forkserver start methods, are not built on Windows).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cwctype>
#include <map>
#include <mutex>
#include <vector>

#include "platform/process.hpp"
#include "platform/win32.hpp"

#include <shellapi.h>
#include <winternl.h>

namespace mp::platform {

namespace {

// The exit code TerminateProcess gives (CPython's popen_spawn_win32 TERMINATE), reported as
// -SIGTERM.
constexpr UINT kTerminatedCode = 0x10000;

// Quoted so that CommandLineToArgvW and the C runtime give back exactly `arg`: backslashes are
// literal except before a quote, where they are doubled (and the quote escaped).
void append_quoted(std::wstring& out, const std::wstring& arg) {
  if (!arg.empty() && arg.find_first_of(L" \t\n\v\"") == std::wstring::npos) {
    out += arg;
    return;
  }
  out += L'"';
  for (std::size_t i = 0;; ++i) {
    std::size_t backslashes = 0;
    while (i < arg.size() && arg[i] == L'\\') {
      ++i;
      ++backslashes;
    }
    if (i == arg.size()) {
      out.append(backslashes * 2, L'\\');  // before the closing quote
      break;
    }
    if (arg[i] == L'"') {
      out.append(backslashes * 2 + 1, L'\\');
      out += L'"';
    } else {
      out.append(backslashes, L'\\');
      out += arg[i];
    }
  }
  out += L'"';
}

// The caller's environment with `name` set to `value`, sorted case-insensitively as
// CreateProcessW expects, as a double-NUL-terminated block.
std::wstring environment_with(const std::wstring& name, const std::wstring& value) {
  std::vector<std::wstring> vars;
  if (wchar_t* block = ::GetEnvironmentStringsW()) {
    for (const wchar_t* p = block; *p; p += std::wcslen(p) + 1) vars.emplace_back(p);
    ::FreeEnvironmentStringsW(block);
  }
  auto upper = [](std::wstring s) {
    for (auto& c : s) c = static_cast<wchar_t>(std::towupper(c));
    return s;
  };
  auto key = [&](const std::wstring& v) { return upper(v.substr(0, v.find(L'=', 1))); };
  if (!name.empty()) {
    const std::wstring k = upper(name);
    std::erase_if(vars, [&](const std::wstring& v) { return key(v) == k; });
    vars.push_back(name + L"=" + value);
  }
  std::stable_sort(vars.begin(), vars.end(),
                   [&](const auto& a, const auto& b) { return key(a) < key(b); });
  std::wstring out;
  for (const auto& v : vars) {
    out += v;
    out += L'\0';
  }
  out += L'\0';
  return out;
}

// The job every daemonic child joins: closed (so each of them killed) when this process ends.
HANDLE lifeline_job() {
  static HANDLE job = [] {
    HANDLE j = ::CreateJobObjectW(nullptr, nullptr);
    if (!j) return j;
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION info{};
    info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
    if (!::SetInformationJobObject(j, JobObjectExtendedLimitInformation, &info, sizeof info)) {
      ::CloseHandle(j);
      return HANDLE{};
    }
    return j;
  }();
  if (!job)
    throw_error(static_cast<int>(::GetLastError()), "cannot create the children's job object");
  return job;
}

// Process handles of the children this process started, by pid: held until reaped, so the pid
// cannot be reused meanwhile (open_process duplicates from here).
std::mutex g_children_lock;
std::map<int, HANDLE>& children() {
  static auto* m = new std::map<int, HANDLE>;
  return *m;
}

// Handles the child gets: `inherit`, and the caller's standard handles (duplicated inheritable).
struct InheritList {
  std::vector<HANDLE> handles;
  std::vector<HANDLE> temporaries;  // closed after the launch
  std::vector<HANDLE> made_inheritable;
  ~InheritList() {
    for (HANDLE h : temporaries) ::CloseHandle(h);
    for (HANDLE h : made_inheritable) ::SetHandleInformation(h, HANDLE_FLAG_INHERIT, 0);
  }
  HANDLE add_std(DWORD which) {
    HANDLE h = ::GetStdHandle(which);
    if (!h || h == INVALID_HANDLE_VALUE) return nullptr;
    HANDLE dup = nullptr;
    if (!::DuplicateHandle(::GetCurrentProcess(), h, ::GetCurrentProcess(), &dup, 0, TRUE,
                           DUPLICATE_SAME_ACCESS))
      return nullptr;  // a console pseudo-handle: the child gets its own console's
    temporaries.push_back(dup);
    handles.push_back(dup);
    return dup;
  }
};

}  // namespace

int spawn_process(const std::string& executable, const std::vector<std::string>& args,
                  const char* env_name, const std::string& env_value,
                  const std::vector<Handle>& inherit, bool ends_with_owner) {
  const std::wstring exe = win32::widen(executable);
  std::wstring command_line;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (i) command_line += L' ';
    append_quoted(command_line, win32::widen(args[i]));
  }
  std::wstring env =
      environment_with(env_name ? win32::widen(env_name) : std::wstring(), win32::widen(env_value));

  InheritList list;
  STARTUPINFOEXW si{};
  si.StartupInfo.cb = sizeof si;
  si.StartupInfo.dwFlags = STARTF_USESTDHANDLES;
  si.StartupInfo.hStdInput = list.add_std(STD_INPUT_HANDLE);
  si.StartupInfo.hStdOutput = list.add_std(STD_OUTPUT_HANDLE);
  si.StartupInfo.hStdError = list.add_std(STD_ERROR_HANDLE);
  for (Handle h : inherit) {
    DWORD flags = 0;
    if (!::GetHandleInformation(win32::native(h), &flags))
      throw_last_error("cannot pass a handle to the child");
    if (!(flags & HANDLE_FLAG_INHERIT)) {
      if (!::SetHandleInformation(win32::native(h), HANDLE_FLAG_INHERIT, HANDLE_FLAG_INHERIT))
        throw_last_error("cannot pass a handle to the child");
      list.made_inheritable.push_back(win32::native(h));
    }
    list.handles.push_back(win32::native(h));
  }
  SIZE_T attr_size = 0;
  ::InitializeProcThreadAttributeList(nullptr, 1, 0, &attr_size);
  std::vector<unsigned char> attr_storage(attr_size);
  auto* attrs = reinterpret_cast<LPPROC_THREAD_ATTRIBUTE_LIST>(attr_storage.data());
  if (!::InitializeProcThreadAttributeList(attrs, 1, 0, &attr_size))
    throw_last_error("InitializeProcThreadAttributeList");
  struct AttrGuard {
    LPPROC_THREAD_ATTRIBUTE_LIST a;
    ~AttrGuard() { ::DeleteProcThreadAttributeList(a); }
  } attr_guard{attrs};
  const bool any = !list.handles.empty();
  if (any &&
      !::UpdateProcThreadAttribute(attrs, 0, PROC_THREAD_ATTRIBUTE_HANDLE_LIST, list.handles.data(),
                                   list.handles.size() * sizeof(HANDLE), nullptr, nullptr))
    throw_last_error("UpdateProcThreadAttribute");
  const HANDLE job = ends_with_owner ? lifeline_job() : nullptr;

  PROCESS_INFORMATION pi{};
  if (!::CreateProcessW(
          exe.c_str(), command_line.data(), nullptr, nullptr, any ? TRUE : FALSE,
          CREATE_SUSPENDED | CREATE_UNICODE_ENVIRONMENT | EXTENDED_STARTUPINFO_PRESENT, env.data(),
          nullptr, &si.StartupInfo, &pi))
    throw_last_error("cannot start " + executable);
  if (job && !::AssignProcessToJobObject(job, pi.hProcess)) {
    const DWORD e = ::GetLastError();
    ::TerminateProcess(pi.hProcess, kTerminatedCode);
    ::CloseHandle(pi.hThread);
    ::CloseHandle(pi.hProcess);
    throw_error(static_cast<int>(e), "cannot put the child in the lifeline job");
  }
  ::ResumeThread(pi.hThread);
  ::CloseHandle(pi.hThread);
  std::lock_guard lock(g_children_lock);
  children()[static_cast<int>(pi.dwProcessId)] = pi.hProcess;
  return static_cast<int>(pi.dwProcessId);
}

std::vector<std::string> program_arguments(int argc, char** argv) {
  int n = 0;
  wchar_t** wide = ::CommandLineToArgvW(::GetCommandLineW(), &n);
  if (!wide) return {argv, argv + argc};
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back(win32::narrow(wide[i]));
  ::LocalFree(wide);
  return out;
}

std::string executable_path() { return win32::module_path(nullptr); }

std::string executable_display_path() { return executable_path(); }

Handle open_process(int pid) {
  {
    std::lock_guard lock(g_children_lock);
    if (auto it = children().find(pid); it != children().end()) {
      HANDLE dup = nullptr;
      if (!::DuplicateHandle(::GetCurrentProcess(), it->second, ::GetCurrentProcess(), &dup, 0,
                             FALSE, DUPLICATE_SAME_ACCESS))
        throw_last_error("cannot open process " + std::to_string(pid));
      return win32::wrap(dup);
    }
  }
  HANDLE h = ::OpenProcess(SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION | PROCESS_TERMINATE,
                           FALSE, static_cast<DWORD>(pid));
  if (!h) throw_last_error("cannot open process " + std::to_string(pid));
  return win32::wrap(h);
}

std::optional<int> reap(Handle process, bool block) {
  const DWORD r = ::WaitForSingleObject(win32::native(process), block ? INFINITE : 0);
  if (r == WAIT_TIMEOUT) return std::nullopt;
  if (r != WAIT_OBJECT_0) throw_last_error("cannot wait for a process");
  DWORD code = 0;
  if (!::GetExitCodeProcess(win32::native(process), &code)) throw_last_error("GetExitCodeProcess");
  const int pid = static_cast<int>(::GetProcessId(win32::native(process)));
  {
    std::lock_guard lock(g_children_lock);
    if (auto it = children().find(pid); it != children().end()) {
      ::CloseHandle(it->second);
      children().erase(it);
    }
  }
  if (code == kTerminatedCode) return -kTerminateSignal;
  return static_cast<int>(code);
}

void send_signal(Handle process, int sig) {
  // Windows has no signals: terminate and kill both end the process (as CPython), which then
  // reports -SIGTERM.
  (void)sig;
  if (!::TerminateProcess(win32::native(process), kTerminatedCode)) {
    const DWORD e = ::GetLastError();
    DWORD code = 0;
    if (e == ERROR_ACCESS_DENIED && ::GetExitCodeProcess(win32::native(process), &code) &&
        code != STILL_ACTIVE)
      return;  // already ended
    throw_error(static_cast<int>(e), "TerminateProcess");
  }
}

std::string signal_name(int sig) {
  switch (sig) {
    case 2:
      return "SIGINT";
    case 9:
      return "SIGKILL";
    case 15:
      return "SIGTERM";
    default:
      return "signal " + std::to_string(sig);
  }
}

void exit_now(int code) noexcept { ::_exit(code); }

[[noreturn]] void kill_self() noexcept {
  ::TerminateProcess(::GetCurrentProcess(), kTerminatedCode);
  for (;;) ::Sleep(INFINITE);
}

void kill_and_reap(int pid) noexcept {
  HANDLE h = nullptr;
  {
    std::lock_guard lock(g_children_lock);
    if (auto it = children().find(pid); it != children().end()) {
      h = it->second;
      children().erase(it);
    }
  }
  // Not one of ours, or reaped already: its pid may name another process now, never opened.
  if (!h) return;
  ::TerminateProcess(h, kTerminatedCode);  // fails harmlessly if it has ended
  ::WaitForSingleObject(h, INFINITE);
  ::CloseHandle(h);
}

namespace {

std::uint64_t creation_time(HANDLE process) {
  FILETIME created{}, exited{}, kernel{}, user{};
  if (!::GetProcessTimes(process, &created, &exited, &kernel, &user)) return ~std::uint64_t{0};
  return (static_cast<std::uint64_t>(created.dwHighDateTime) << 32) | created.dwLowDateTime;
}

}  // namespace

int open_handle_count() {
  DWORD n = 0;
  if (!::GetProcessHandleCount(::GetCurrentProcess(), &n))
    throw_last_error("GetProcessHandleCount");
  return static_cast<int>(n);
}

// Windows keeps the pid of the process that created this one, and never re-parents: that pid may
// name another process once the parent has ended. So the pid counts as the parent's only while
// a process with it runs that was created before this one (a reused pid belongs to a process
// created after the parent ended, hence after this one); otherwise 0 (as an orphan's reaper on
// Linux: "the parent has died"). lib/support/lifeline.cpp relies on exactly this.
int parent_pid() noexcept {
  static const DWORD recorded = [] {
    PROCESS_BASIC_INFORMATION info{};
    ULONG size = 0;
    if (::NtQueryInformationProcess(::GetCurrentProcess(), ProcessBasicInformation, &info,
                                    sizeof info, &size) < 0)
      return DWORD{0};
    return static_cast<DWORD>(info.InheritedFromUniqueProcessId);
  }();
  if (recorded == 0) return 0;
  HANDLE parent = ::OpenProcess(SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION, FALSE, recorded);
  if (!parent) return 0;
  const bool running = ::WaitForSingleObject(parent, 0) == WAIT_TIMEOUT;
  const bool older = creation_time(parent) <= creation_time(::GetCurrentProcess());
  ::CloseHandle(parent);
  return running && older ? static_cast<int>(recorded) : 0;
}

// The process is named after its executable's file already.
void name_process_after_executable() noexcept {}

// Ctrl-C (CTRL_C_EVENT, sent to every process of the console) ignored, or the default handling
// back. Inherited by the children this process starts afterwards, as an ignored SIGINT on POSIX.
void ignore_interrupts(bool ignore) noexcept { ::SetConsoleCtrlHandler(nullptr, ignore); }

// As CPython's manager server on Windows: Ctrl-C is ignored (the owner decides). Nothing to remove
// on termination: a named pipe's name goes with its last handle, and TerminateProcess runs no
// handler anyway.
void protect_server_from_group_signals(const std::string&, const std::string&) {
  ::SetConsoleCtrlHandler(nullptr, TRUE);
}

// No fork on Windows.
void at_fork_in_child(void (*)()) {}

void release_free_heap() noexcept {}  // no fork on Windows

}  // namespace mp::platform
