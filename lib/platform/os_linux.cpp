// Linux part of the internal OS API: memfd shared memory, futexes, pidfds, ELF module lookup.
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <linux/futex.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

#include "mp/errors.hpp"
#include "platform/os.hpp"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace mp::platform {

namespace {
// RAM plus swap, in bytes (0 if unknown): the most shared memory could ever hold.
std::uint64_t memory_capacity() noexcept {
  struct sysinfo si {};
  if (::sysinfo(&si) != 0) return 0;
  const auto unit = static_cast<std::uint64_t>(si.mem_unit ? si.mem_unit : 1);
  return (static_cast<std::uint64_t>(si.totalram) + static_cast<std::uint64_t>(si.totalswap)) * unit;
}
}  // namespace

Handle create_shared_memory(std::size_t size) {
  // A block larger than memory could ever back is refused at once (MemoryError), rather than
  // mapped sparse and failing at some later first touch. Also keeps off_t from wrapping.
  if (size > static_cast<std::size_t>(PTRDIFF_MAX)) throw std::bad_alloc();
  if (const std::uint64_t cap = memory_capacity(); cap != 0 && size > cap) throw std::bad_alloc();
  const int fd = static_cast<int>(::syscall(SYS_memfd_create, "mp", MFD_CLOEXEC));
  if (fd < 0) throw_last_error("memfd_create");
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    const int e = errno;
    ::close(fd);
    throw_error(e, "cannot size shared memory of " + std::to_string(size) + " bytes");
  }
  return fd;
}

std::size_t shared_memory_size(Handle h) {
  struct stat st {};
  if (::fstat(h, &st) != 0) throw_last_error("fstat");
  return static_cast<std::size_t>(st.st_size);
}

void* map_shared(Handle h, std::size_t size) {
  void* p = ::mmap(nullptr, size == 0 ? 1 : size, PROT_READ | PROT_WRITE, MAP_SHARED, h, 0);
  if (p == MAP_FAILED) throw_last_error("cannot map shared memory");
  return p;
}

void unmap(void* address, std::size_t size) noexcept {
  if (address) ::munmap(address, size == 0 ? 1 : size);
}

bool wait_on_address(std::atomic<std::uint32_t>* word, std::uint32_t expected, const Nanos* timeout) {
  timespec ts{};
  if (timeout) {
    const auto t = *timeout < Nanos::zero() ? Nanos::zero() : *timeout;
    ts.tv_sec = static_cast<time_t>(t.count() / 1000000000);
    ts.tv_nsec = static_cast<long>(t.count() % 1000000000);
  }
  // Not FUTEX_PRIVATE: the word is shared between processes. The timeout is relative.
  const long r = ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAIT, expected,
                           timeout ? &ts : nullptr, nullptr, 0);
  if (r == 0) return true;
  if (errno == ETIMEDOUT) return false;
  if (errno == EAGAIN || errno == EINTR) return true;
  throw_last_error("futex wait");
}

void wake_address(std::atomic<std::uint32_t>* word, int count) {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE, count, nullptr, nullptr, 0);
}

namespace {
// /proc's view, for when no pidfd can be opened (no descriptor to spare): the thread-group
// leader's state, and how many threads the group still has. A leader whose thread ended shows
// as a zombie while other threads run; the process has ended only when it is the last one.
bool process_dead_by_proc(int pid) noexcept {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/status", pid);
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT || errno == ESRCH;
  char buf[2048];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return true;
  buf[n] = '\0';
  const char* state = std::strstr(buf, "\nState:");
  const char* threads = std::strstr(buf, "\nThreads:");
  if (!state || !threads) return false;  // unreadable: never take a lock from a live holder
  state += 7;
  while (*state == ' ' || *state == '\t') ++state;
  const long count = std::strtol(threads + 9, nullptr, 10);
  return (*state == 'Z' || *state == 'X' || *state == 'x') && count <= 1;
}
}  // namespace

bool process_dead(int pid) noexcept {
  if (pid <= 0) return false;
  // A pidfd is readable only once the whole thread group has ended, which is the definition
  // needed here: a process whose main thread exited (pthread_exit in main, a raw SYS_exit) while
  // another thread still runs is alive, and may be inside a critical section.
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) {
    if (errno == ESRCH) return true;  // reaped, or never existed
    return process_dead_by_proc(pid);
  }
  pollfd p{fd, POLLIN, 0};
  const int r = ::poll(&p, 1, 0);
  ::close(fd);
  if (r < 0) return process_dead_by_proc(pid);
  return r > 0;
}

int current_tid() noexcept { return static_cast<int>(::syscall(SYS_gettid)); }

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
    if (info.si_code == CLD_EXITED) return info.si_status;
    return -info.si_status;  // CLD_KILLED / CLD_DUMPED: the signal number
  }
}

void send_signal(Handle process, int sig) {
  if (::syscall(SYS_pidfd_send_signal, process, sig, nullptr, 0) != 0 && errno != ESRCH)
    throw_last_error("pidfd_send_signal");
}

void set_parent_death_signal(int sig) noexcept { ::prctl(PR_SET_PDEATHSIG, sig); }

namespace {
void (*g_exit_hook)(int) = nullptr;
void on_exit_trampoline(int status, void*) {
  if (g_exit_hook) g_exit_hook(status);
}
}  // namespace

void on_exit_first(void (*fn)(int status)) {
  g_exit_hook = fn;
  ::on_exit(&on_exit_trampoline, nullptr);
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
    if (path.size() > sizeof kDeleted - 1 && path.ends_with(kDeleted)) path.resize(path.size() - (sizeof kDeleted - 1));
    const std::string name = path.substr(path.find_last_of('/') + 1).substr(0, 15);  // comm: 15 chars
    if (!name.empty()) ::prctl(PR_SET_NAME, name.c_str(), 0, 0, 0);
  } catch (...) {
  }
}

void random_bytes(void* out, std::size_t size) {
  auto* p = static_cast<unsigned char*>(out);
  while (size > 0) {
    const ssize_t n = ::getrandom(p, size, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_last_error("getrandom");
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

// ---- shared libraries

void* open_library(const std::vector<std::string>& names, const std::string& what) {
  std::string errors;
  for (const std::string& name : names) {
    if (void* lib = ::dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL)) return lib;
    const char* err = ::dlerror();
    errors += std::string(errors.empty() ? "" : "; ") + (err ? err : name + ": unknown error");
  }
  throw std::runtime_error("mp: cannot load " + what + ": " + errors);
}

void* library_symbol(void* library, const char* symbol) {
  ::dlerror();
  void* p = ::dlsym(library, symbol);
  if (!p) {
    const char* err = ::dlerror();
    throw std::runtime_error(std::string("mp: ") + (err ? err : std::string("no symbol ") + symbol));
  }
  return p;
}

// ---- ELF modules

namespace {

std::string hex(const unsigned char* p, std::size_t n) {
  static const char digits[] = "0123456789abcdef";
  std::string s;
  s.reserve(2 * n);
  for (std::size_t i = 0; i < n; ++i) {
    s.push_back(digits[p[i] >> 4]);
    s.push_back(digits[p[i] & 15]);
  }
  return s;
}

std::string build_id_of(const dl_phdr_info* info) {
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_NOTE) continue;
    const auto* p = reinterpret_cast<const unsigned char*>(info->dlpi_addr + ph.p_vaddr);
    const auto* end = p + ph.p_memsz;
    while (p + sizeof(ElfW(Nhdr)) <= end) {
      const auto* note = reinterpret_cast<const ElfW(Nhdr)*>(p);
      const std::size_t name_size = (note->n_namesz + 3) & ~std::size_t{3};
      const std::size_t desc_size = (note->n_descsz + 3) & ~std::size_t{3};
      const auto* name = p + sizeof(ElfW(Nhdr));
      const auto* desc = name + name_size;
      if (note->n_type == NT_GNU_BUILD_ID && note->n_namesz == 4 && std::memcmp(name, "GNU", 4) == 0)
        return hex(desc, note->n_descsz);
      p = desc + desc_size;
    }
  }
  return {};
}

bool contains(const dl_phdr_info* info, std::uintptr_t address) {
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_LOAD) continue;
    const std::uintptr_t start = info->dlpi_addr + ph.p_vaddr;
    if (address >= start && address < start + ph.p_memsz) return true;
  }
  return false;
}

struct Search {
  std::uintptr_t address = 0;  // locate: the address to find
  const std::string* module = nullptr;  // resolve: the module to find
  bool found = false;
  bool first = true;
  CodeLocation loc;
  std::uintptr_t base = 0;
};

int visit(dl_phdr_info* info, size_t, void* data) {
  auto* s = static_cast<Search*>(data);
  // The first object reported is the main executable, whatever its dlpi_name says.
  const bool is_main = s->first;
  s->first = false;
  const std::string name = is_main ? std::string() : std::string(info->dlpi_name ? info->dlpi_name : "");
  if (s->module) {
    if (name != *s->module) return 0;
  } else if (!contains(info, s->address)) {
    return 0;
  }
  s->found = true;
  s->base = info->dlpi_addr;
  s->loc.module = name;
  s->loc.build_id = build_id_of(info);
  return 1;
}

}  // namespace

CodeLocation locate_code(const void* address) {
  Search s;
  s.address = reinterpret_cast<std::uintptr_t>(address);
  ::dl_iterate_phdr(&visit, &s);
  if (!s.found) throw std::invalid_argument("mp: the target function is in no loaded module");
  s.loc.offset = s.address - s.base;
  return s.loc;
}

void* resolve_code(const CodeLocation& loc) {
  Search s;
  s.module = &loc.module;
  ::dl_iterate_phdr(&visit, &s);
  if (!s.found && !loc.module.empty()) {
    // A library the parent had loaded with dlopen: load it here too (kept for the process' life).
    if (!::dlopen(loc.module.c_str(), RTLD_NOW | RTLD_GLOBAL)) {
      const char* err = ::dlerror();
      throw ProcessError("mp spawn: cannot load module '" + loc.module + "' in the child: " +
                         (err ? err : "unknown error"));
    }
    s = Search{};
    s.module = &loc.module;
    ::dl_iterate_phdr(&visit, &s);
  }
  if (!s.found) throw ProcessError("mp spawn: module '" + loc.module + "' is not loaded in the child");
  if (s.loc.build_id != loc.build_id) {
    throw ProcessError("mp spawn: the binary of module '" +
                       (loc.module.empty() ? std::string("<main executable>") : loc.module) +
                       "' differs between parent and child (build id " + loc.build_id + " vs " +
                       s.loc.build_id + "); was it rebuilt or replaced while the parent ran?");
  }
  return reinterpret_cast<void*>(s.base + loc.offset);
}

std::string signal_name(int sig) {
  const char* abbrev = ::sigabbrev_np(sig);  // glibc 2.32
  return abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

}  // namespace mp::platform
