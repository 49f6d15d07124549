// Windows part of platform/io.hpp. Pipes and socket pairs are overlapped named pipes (anonymous
// pipes cannot time out), so every blocking call can be bounded: an overlapped ReadFile/WriteFile
// waited for with a timeout and cancelled (CancelIoEx) when it passes. TCP is Winsock (started
// once). Listener/Client's Unix-socket calls take CPython's AF_PIPE addresses (\\.\pipe\NAME): a
// listener keeps one pipe instance waiting in ConnectNamedPipe and a spare, as CPython's
// PipeListener, and its Handle is an event set while a client waits, so it is waited on like any
// handle. Readiness of a pipe or a socket is a zero-byte overlapped read (complete once data or end
// of file is there); any number of handles can be waited on (WaitForMultipleObjects' 64 are split
// across helper threads).
// Errors: the conditions the contract names are POSIX codes in std::generic_category() (EPIPE
// when the peer is gone, ETIMEDOUT when a deadline passed), so shared code tests them without
// #ifs; any other failure carries the Win32/Winsock error in std::system_category().
// There is no SIGPIPE: ignore_sigpipe() does nothing.
#include <winsock2.h>
#include <ws2tcpip.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cctype>
#include <climits>
#include <cstdio>
#include <cwchar>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <utility>

#include "mp/errors.hpp"
#include "platform/io.hpp"
#include "platform/system.hpp"
#include "platform/wait.hpp"
#include "platform/win32.hpp"

namespace mp::platform {

namespace {

using win32::native;
using win32::wrap;

[[noreturn]] void throw_wsa(const std::string& what) { throw_error(::WSAGetLastError(), what); }

std::atomic<bool> g_winsock{false};

void start_winsock() {
  static const int started = [] {
    WSADATA data;
    const int rc = ::WSAStartup(MAKEWORD(2, 2), &data);
    if (rc == 0) g_winsock.store(true);
    return rc;
  }();
  if (started != 0) throw_error(started, "WSAStartup");
}

SOCKET sock(Handle h) noexcept { return static_cast<SOCKET>(h); }

bool is_socket(Handle h) noexcept {
  if (!g_winsock.load()) return false;  // no socket exists before Winsock starts
  int type = 0;
  int len = sizeof type;
  return ::getsockopt(sock(h), SOL_SOCKET, SO_TYPE, reinterpret_cast<char*>(&type), &len) == 0;
}

bool is_pipe(Handle h) noexcept {
  return ::GetFileType(native(h)) == FILE_TYPE_PIPE && !is_socket(h);
}

bool is_listening(SOCKET s) noexcept {
  BOOL on = FALSE;
  int len = sizeof on;
  return ::getsockopt(s, SOL_SOCKET, SO_ACCEPTCONN, reinterpret_cast<char*>(&on), &len) == 0 && on;
}

// Whether a Win32 error means the pipe's other end is gone.
bool peer_gone(DWORD e) noexcept {
  return e == ERROR_BROKEN_PIPE || e == ERROR_NO_DATA || e == ERROR_PIPE_NOT_CONNECTED ||
         e == ERROR_HANDLE_EOF;
}
bool peer_gone_wsa(int e) noexcept {
  return e == WSAECONNRESET || e == WSAECONNABORTED || e == WSAESHUTDOWN || e == WSAENOTCONN;
}

DWORD millis_until(Clock::time_point deadline) noexcept {
  const auto left = deadline - Clock::now();
  const Nanos n = left < Nanos::zero() ? Nanos::zero() : Nanos(left);
  return win32::wait_millis(&n);
}

// The calling thread's event for its overlapped calls (each call completes before returning, so
// one event per thread serves them all). A plain handle closed by at_thread_exit: a thread_local
// with a destructor is not safe under mingw-w64 (lib/support/thread_object.hpp).
HANDLE thread_event() {
  thread_local HANDLE event = nullptr;
  if (!event) {
    HANDLE h = ::CreateEventW(nullptr, TRUE, FALSE, nullptr);
    if (!h) throw_last_error("CreateEvent");
    try {
      at_thread_exit(
          +[](void* p) { ::CloseHandle(static_cast<HANDLE>(p)); }, h);
    } catch (...) {
      ::CloseHandle(h);
      throw;
    }
    event = h;
  }
  return event;
}

// Readiness of a socket without blocking (WSAPoll); `events` POLLRDNORM or POLLWRNORM.
bool socket_ready(SOCKET s, short events, DWORD ms) {
  WSAPOLLFD p{};
  p.fd = s;
  p.events = events;
  const int r =
      ::WSAPoll(&p, 1, ms == INFINITE ? -1 : static_cast<INT>(std::min<DWORD>(ms, INT_MAX)));
  if (r < 0) throw_wsa("WSAPoll");
  return r > 0;
}

// send() of what fits now: the socket is switched to non-blocking for the call (Winsock has no
// MSG_DONTWAIT). Returns -1 with WSAGetLastError() set on failure.
int send_now(SOCKET s, const void* data, std::size_t size) {
  u_long on = 1;
  ::ioctlsocket(s, FIONBIO, &on);
  const int n = ::send(s, static_cast<const char*>(data),
                       static_cast<int>(std::min<std::size_t>(size, INT_MAX)), 0);
  const int e = ::WSAGetLastError();
  u_long off = 0;
  ::ioctlsocket(s, FIONBIO, &off);
  ::WSASetLastError(e);
  return n;
}

// recv() of what is there now (flags: 0 or MSG_PEEK), non-blocking as send_now. Returns -1 with
// WSAGetLastError() set on failure (WSAEWOULDBLOCK: nothing to read yet).
int recv_now(SOCKET s, void* data, std::size_t size, int flags) {
  u_long on = 1;
  ::ioctlsocket(s, FIONBIO, &on);
  const int n = ::recv(s, static_cast<char*>(data),
                       static_cast<int>(std::min<std::size_t>(size, INT_MAX)), flags);
  const int e = ::WSAGetLastError();
  u_long off = 0;
  ::ioctlsocket(s, FIONBIO, &off);
  ::WSASetLastError(e);
  return n;
}

// Whether a read from a connected socket would not block (data, end of file or an error). A
// non-blocking peek, not WSAPoll: a process killed (TerminateProcess) while one of its threads is
// inside WSAPoll leaves its sockets open under Wine 8 (wineserver keeps them, spinning on their
// input, and the peer never sees end of file); a process killed inside recv() does not.
bool socket_readable_now(SOCKET s) {
  char c;
  return recv_now(s, &c, 1, MSG_PEEK) >= 0 || ::WSAGetLastError() != WSAEWOULDBLOCK;
}

[[noreturn]] void throw_send_error(int e) {
  if (peer_gone_wsa(e)) throw_errno(EPIPE, "cannot write to the connection");
  throw_error(e, "cannot write to the connection");
}

// ---- objects behind a Handle that close_handle must know: named-pipe listeners and ready sets

struct PipeListener {
  std::wstring name;
  HANDLE instance = INVALID_HANDLE_VALUE;  // the instance waiting for a client
  OVERLAPPED ov{};                         // its ConnectNamedPipe; ov.hEvent is the Handle
  // A client opened the instance before ConnectNamedPipe ran: that call failed at once with
  // ERROR_PIPE_CONNECTED (or ERROR_NO_DATA: it has left again) and left `ov` marked pending, so
  // GetOverlappedResult would report ERROR_IO_INCOMPLETE for ever.
  bool connected = false;
  // The next instance, created before `instance` is handed out (as CPython's PipeListener), so a
  // client arriving meanwhile opens it instead of finding none (ERROR_PIPE_BUSY). It is always
  // younger than `instance`, which clients therefore open first (Windows gives a client the
  // oldest listening instance, Wine one that ConnectNamedPipe waits on): no client sits on the
  // spare unnoticed while `instance` waits.
  HANDLE spare = INVALID_HANDLE_VALUE;
};
struct ReadySet {
  Handle socket;
  Handle event;
};

std::mutex g_objects_lock;
std::map<HANDLE, std::shared_ptr<PipeListener>>& listeners() {
  static auto* m = new std::map<HANDLE, std::shared_ptr<PipeListener>>;
  return *m;
}
std::map<HANDLE, ReadySet>& ready_sets() {
  static auto* m = new std::map<HANDLE, ReadySet>;
  return *m;
}
std::shared_ptr<PipeListener> find_listener(Handle h) {
  std::lock_guard lock(g_objects_lock);
  auto& m = listeners();
  const auto it = m.find(native(h));
  return it == m.end() ? nullptr : it->second;
}
std::optional<ReadySet> find_ready_set(Handle h) {
  std::lock_guard lock(g_objects_lock);
  auto& m = ready_sets();
  const auto it = m.find(native(h));
  if (it == m.end()) return std::nullopt;
  return it->second;
}

bool is_pipe_address(const std::string& path) {
  static const char prefix[] = "\\\\.\\pipe\\";
  if (path.size() <= sizeof prefix - 1) return false;
  for (std::size_t i = 0; i < sizeof prefix - 1; ++i)
    if (std::tolower(static_cast<unsigned char>(path[i])) != prefix[i]) return false;
  return true;
}

std::wstring pipe_name(const std::string& path) {
  if (!is_pipe_address(path))
    throw std::invalid_argument("invalid named pipe address: '" + path +
                                "' (AF_PIPE addresses are \\\\.\\pipe\\NAME)");
  return win32::widen(path);
}

std::string random_hex(std::size_t bytes) {
  std::string raw(bytes, '\0');
  random_bytes(raw.data(), bytes);
  return to_hex(raw.data(), raw.size());
}

// A new pipe instance for `name` (overlapped, local clients only; bytes or messages).
HANDLE new_instance(const std::wstring& name, DWORD access, bool first, bool messages = false) {
  const DWORD type =
      messages ? PIPE_TYPE_MESSAGE | PIPE_READMODE_MESSAGE : PIPE_TYPE_BYTE | PIPE_READMODE_BYTE;
  HANDLE h = ::CreateNamedPipeW(
      name.c_str(), access | FILE_FLAG_OVERLAPPED | (first ? FILE_FLAG_FIRST_PIPE_INSTANCE : 0),
      type | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS, PIPE_UNLIMITED_INSTANCES, 65536, 65536, 0,
      nullptr);
  if (h == INVALID_HANDLE_VALUE)
    throw_last_error("cannot create the named pipe " + win32::narrow(name));
  return h;
}

// Windows ends a thread's pending I/O when the thread ends (on handles without a completion port),
// and Wine does the same: a ConnectNamedPipe that an accept() left pending for the next client was
// cancelled when the accepting thread ended, and that client was never accepted (a Listener
// accepting from short-lived threads hung). A listener's ConnectNamedPipe is therefore issued by
// one thread that lives as long as the process: an APC it runs while it sleeps alertably.
struct ConnectCall {
  HANDLE instance;
  OVERLAPPED* ov;
  DWORD error;
  HANDLE done;
};

void CALLBACK connect_in_issuer(ULONG_PTR arg) {
  auto* call = reinterpret_cast<ConnectCall*>(arg);
  call->error = ::ConnectNamedPipe(call->instance, call->ov) ? ERROR_SUCCESS : ::GetLastError();
  ::SetEvent(call->done);
}

DWORD WINAPI issuer_main(void*) {
  for (;;) ::SleepEx(INFINITE, TRUE);
}

// ConnectNamedPipe(instance, ov) issued by the issuer thread (by this one if it cannot start);
// ERROR_SUCCESS or the call's error.
DWORD connect_named_pipe(HANDLE instance, OVERLAPPED* ov) {
  static const HANDLE issuer = ::CreateThread(nullptr, 64 * 1024, issuer_main, nullptr,
                                              STACK_SIZE_PARAM_IS_A_RESERVATION, nullptr);
  if (issuer) {
    ConnectCall call{instance, ov, ERROR_SUCCESS, ::CreateEventW(nullptr, TRUE, FALSE, nullptr)};
    if (call.done) {
      if (::QueueUserAPC(connect_in_issuer, issuer, reinterpret_cast<ULONG_PTR>(&call))) {
        ::WaitForSingleObject(call.done, INFINITE);  // the issuer runs it at once
        ::CloseHandle(call.done);
        return call.error;
      }
      ::CloseHandle(call.done);
    }
  }
  return ::ConnectNamedPipe(instance, ov) ? ERROR_SUCCESS : ::GetLastError();
}

// Starts waiting for the next client on a fresh instance. A client that opened the instance
// before ConnectNamedPipe ran marks it connected and sets the event at once: a client waiting in
// WaitNamedPipe is released by CreateNamedPipe, so under a stream of clients this is common. One
// that has already closed its end (ERROR_NO_DATA) is handed out too, as CPython's PipeListener
// does: reading it gives what it wrote, then end of file.
void listen_next(PipeListener& l, bool first) {
  l.connected = false;
  if (l.spare != INVALID_HANDLE_VALUE) {
    l.instance = std::exchange(l.spare, INVALID_HANDLE_VALUE);
  } else {
    l.instance = new_instance(l.name, PIPE_ACCESS_DUPLEX, first);
  }
  ::ResetEvent(l.ov.hEvent);
  const DWORD e = connect_named_pipe(l.instance, &l.ov);  // ERROR_SUCCESS: the event is set
  if (e == ERROR_PIPE_CONNECTED || e == ERROR_NO_DATA) {
    l.connected = true;
    ::SetEvent(l.ov.hEvent);
  } else if (e != ERROR_SUCCESS && e != ERROR_IO_PENDING) {
    ::CloseHandle(l.instance);
    l.instance = INVALID_HANDLE_VALUE;
    throw_error(static_cast<int>(e), "ConnectNamedPipe");
  }
  try {
    l.spare = new_instance(l.name, PIPE_ACCESS_DUPLEX, false);
  } catch (const OSError&) {
    // Out of resources: the next listen_next makes its instance itself; clients retry meanwhile.
  }
}

}  // namespace

namespace win32 {

DWORD pipe_io(Handle h, bool write, void* data, std::size_t size, DWORD ms, DWORD& error) {
  OVERLAPPED ov{};
  ov.hEvent = thread_event();
  const DWORD n = static_cast<DWORD>(std::min<std::size_t>(size, 1u << 30));
  BOOL ok = write ? ::WriteFile(native(h), data, n, nullptr, &ov)
                  : ::ReadFile(native(h), data, n, nullptr, &ov);
  if (!ok && ::GetLastError() != ERROR_IO_PENDING) {
    error = ::GetLastError();
    return 0;
  }
  if (!ok && ::WaitForSingleObject(ov.hEvent, ms) != WAIT_OBJECT_0) ::CancelIoEx(native(h), &ov);
  DWORD done = 0;
  ok = ::GetOverlappedResult(native(h), &ov, &done, TRUE);
  error = ok ? 0 : ::GetLastError();
  return done;
}

std::pair<Handle, Handle> pipe_pair(bool duplex, bool messages) {
  static std::atomic<unsigned> counter{0};
  const std::string name = "\\\\.\\pipe\\mp-pair-" + std::to_string(::GetCurrentProcessId()) + "-" +
                           std::to_string(++counter) + "-" + random_hex(8);
  const std::wstring wname = win32::widen(name);
  HANDLE server =
      new_instance(wname, duplex ? PIPE_ACCESS_DUPLEX : PIPE_ACCESS_INBOUND, true, messages);
  HANDLE client = ::CreateFileW(
      wname.c_str(), duplex ? GENERIC_READ | GENERIC_WRITE : GENERIC_WRITE | FILE_READ_ATTRIBUTES,
      0, nullptr, OPEN_EXISTING, FILE_FLAG_OVERLAPPED, nullptr);
  DWORD mode = PIPE_READMODE_MESSAGE;
  if (client != INVALID_HANDLE_VALUE && messages && duplex &&
      !::SetNamedPipeHandleState(client, &mode, nullptr, nullptr)) {
    ::CloseHandle(client);
    client = INVALID_HANDLE_VALUE;
  }
  if (client == INVALID_HANDLE_VALUE) {
    const DWORD e = ::GetLastError();
    ::CloseHandle(server);
    throw_error(static_cast<int>(e), "cannot open the pipe's other end");
  }
  // Confirms the connection is ours (one instance only: a stranger first would have made our
  // CreateFileW fail with ERROR_PIPE_BUSY).
  if (!::ConnectNamedPipe(server, nullptr) && ::GetLastError() != ERROR_PIPE_CONNECTED) {
    const DWORD e = ::GetLastError();
    ::CloseHandle(server);
    ::CloseHandle(client);
    throw_error(static_cast<int>(e), "ConnectNamedPipe");
  }
  return {wrap(server), wrap(client)};
}

bool close_io_object(HANDLE h) noexcept {
  std::shared_ptr<PipeListener> listener;
  {
    std::lock_guard lock(g_objects_lock);
    if (auto it = listeners().find(h); it != listeners().end()) {
      listener = it->second;
      listeners().erase(it);
    } else if (ready_sets().erase(h)) {
      ::CloseHandle(h);
      return true;
    }
  }
  if (listener) {
    if (listener->instance != INVALID_HANDLE_VALUE && !listener->connected) {
      ::CancelIoEx(listener->instance, &listener->ov);
      DWORD n = 0;
      ::GetOverlappedResult(listener->instance, &listener->ov, &n, TRUE);
    }
    if (listener->instance != INVALID_HANDLE_VALUE) ::CloseHandle(listener->instance);
    if (listener->spare != INVALID_HANDLE_VALUE) ::CloseHandle(listener->spare);
    ::CloseHandle(h);
    return true;
  }
  if (is_socket(wrap(h))) {
    ::closesocket(reinterpret_cast<SOCKET>(h));
    return true;
  }
  return false;
}

}  // namespace win32

// ---- pipes and socket pairs

std::pair<Handle, Handle> make_pipe() { return win32::pipe_pair(false, false); }

std::pair<Handle, Handle> socket_pair() { return win32::pipe_pair(true, false); }

void ignore_sigpipe() noexcept {}

// ---- blocking reads and writes

void write_all(Handle h, const void* data, std::size_t size) {
  write_all_until(h, data, size, Clock::time_point::max());
}

std::size_t read_some(Handle h, void* data, std::size_t size) {
  return read_some_until(h, data, size, Clock::time_point::max());
}

std::string read_to_end(Handle h) {
  std::string out;
  char buf[4096];
  for (;;) {
    const std::size_t n = read_some(h, buf, sizeof buf);
    if (n == 0) return out;
    out.append(buf, n);
  }
}

TryRead try_read(Handle h, void* data, std::size_t size, std::size_t& got) {
  got = 0;
  if (is_socket(h)) {
    const int n = recv_now(sock(h), data, size, 0);
    if (n < 0 && ::WSAGetLastError() == WSAEWOULDBLOCK) return TryRead::would_block;
    if (n >= 0) {
      got = static_cast<std::size_t>(n);
      return TryRead::ok;
    }
    if (peer_gone_wsa(::WSAGetLastError())) return TryRead::ok;
    throw_wsa("cannot read from the connection");
  }
  if (!is_pipe(h)) return TryRead::unsupported;
  DWORD avail = 0;
  if (!::PeekNamedPipe(native(h), nullptr, 0, nullptr, &avail, nullptr)) {
    if (peer_gone(::GetLastError())) return TryRead::ok;
    throw_last_error("cannot read from the connection");
  }
  if (avail == 0) return TryRead::would_block;
  DWORD error = 0;
  got = win32::pipe_io(h, false, data, std::min<std::size_t>(size, avail), 0, error);
  if (error == ERROR_OPERATION_ABORTED && got == 0) return TryRead::would_block;
  if (error == ERROR_OPERATION_ABORTED || error == ERROR_MORE_DATA) error = 0;
  if (error && !peer_gone(error)) throw_error(static_cast<int>(error), "cannot read");
  return TryRead::ok;
}

std::size_t try_write(Handle h, const void* data, std::size_t size) {
  if (is_socket(h)) {
    const int n = send_now(sock(h), data, size);
    if (n >= 0) return static_cast<std::size_t>(n);
    if (::WSAGetLastError() == WSAEWOULDBLOCK) return 0;
    throw_send_error(::WSAGetLastError());
  }
  DWORD error = 0;
  const DWORD n = win32::pipe_io(h, true, const_cast<void*>(data), size, 0, error);
  if (error == 0 || error == ERROR_OPERATION_ABORTED) return n;
  if (peer_gone(error)) throw_errno(EPIPE, "cannot write to the connection");
  throw_error(static_cast<int>(error), "cannot write to the connection");
}

std::size_t read_some_until(Handle h, void* data, std::size_t size, Clock::time_point deadline) {
  if (is_socket(h)) {
    if (deadline != Clock::time_point::max()) {
      const Nanos left = std::max(Nanos::zero(), Nanos(deadline - Clock::now()));
      if (!wait_readable(h, &left)) throw_errno(ETIMEDOUT, "timed out");
    }
    const int n = ::recv(sock(h), static_cast<char*>(data),
                         static_cast<int>(std::min<std::size_t>(size, INT_MAX)), 0);
    if (n >= 0) return static_cast<std::size_t>(n);
    if (peer_gone_wsa(::WSAGetLastError())) return 0;
    throw_wsa("cannot read");
  }
  for (;;) {
    const DWORD ms = deadline == Clock::time_point::max() ? INFINITE : millis_until(deadline);
    DWORD error = 0;
    const DWORD n = win32::pipe_io(h, false, data, size, ms, error);
    if (error == 0 || error == ERROR_MORE_DATA) {  // MORE_DATA: the rest of a message follows
      if (n > 0 || size == 0) return n;
      continue;  // a zero-byte message (never sent by the library): not end of file
    }
    if (peer_gone(error)) return 0;
    if (error != ERROR_OPERATION_ABORTED) throw_error(static_cast<int>(error), "cannot read");
    if (n > 0) return n;
    if (Clock::now() >= deadline) throw_errno(ETIMEDOUT, "timed out");
  }
}

void write_all_until(Handle h, const void* data, std::size_t size, Clock::time_point deadline) {
  const bool forever = deadline == Clock::time_point::max();
  const char* p = static_cast<const char*>(data);
  if (is_socket(h)) {
    while (size > 0) {
      int n;
      if (forever) {
        n = ::send(sock(h), p, static_cast<int>(std::min<std::size_t>(size, INT_MAX)), 0);
      } else {
        if (!socket_ready(sock(h), POLLWRNORM, millis_until(deadline)))
          throw_errno(ETIMEDOUT, "timed out");
        n = send_now(sock(h), p, size);
        if (n < 0 && ::WSAGetLastError() == WSAEWOULDBLOCK) n = 0;
      }
      if (n < 0) throw_send_error(::WSAGetLastError());
      p += n;
      size -= static_cast<std::size_t>(n);
    }
    return;
  }
  while (size > 0) {
    DWORD error = 0;
    const DWORD n = win32::pipe_io(h, true, const_cast<char*>(p), size,
                                   forever ? INFINITE : millis_until(deadline), error);
    p += n;
    size -= n;
    if (error == 0) continue;
    if (peer_gone(error)) throw_errno(EPIPE, "cannot write to the connection");
    if (error != ERROR_OPERATION_ABORTED) throw_error(static_cast<int>(error), "cannot write");
    if (size > 0 && Clock::now() >= deadline) throw_errno(ETIMEDOUT, "timed out");
  }
}

// ---- readiness

namespace {

// The handles of one wait, each turned into something WaitForMultipleObjects sleeps on: a pipe
// or a connected socket gets a zero-byte overlapped read (complete once data or end of file is
// there), a listening socket an FD_ACCEPT event, a ready set its two parts; any other handle
// (process, event, a pipe listener's event) is waited on itself.
class Readiness {
 public:
  explicit Readiness(const std::vector<Handle>& handles) {
    try {
      for (std::size_t i = 0; i < handles.size(); ++i) {
        if (const auto set = find_ready_set(handles[i])) {
          add(set->socket, i);
          add(set->event, i);
        } else {
          add(handles[i], i);
        }
      }
    } catch (...) {
      finish();  // no read may stay pending on a freed OVERLAPPED
      throw;
    }
  }
  Readiness(const Readiness&) = delete;
  Readiness& operator=(const Readiness&) = delete;
  ~Readiness() { finish(); }

  bool any_ready() const {
    return std::any_of(sources_.begin(), sources_.end(), [](const auto& s) { return s->ready; });
  }

  // Sleeps until one source is signaled or `ms` passes.
  void sleep(DWORD ms) {
    std::vector<HANDLE> objects;
    for (const auto& s : sources_) objects.push_back(s->object);
    wait_objects(objects, ms);
  }

  // Ends the pending reads; the indexes (into the caller's handles) of the ready ones.
  std::vector<std::size_t> finish() {
    std::vector<std::size_t> ready;
    for (auto& s : sources_) {
      if (s->kind == Kind::read) {
        if (s->pending) {
          if (::WaitForSingleObject(s->object, 0) != WAIT_OBJECT_0)
            ::CancelIoEx(native(s->handle), &s->ov);
          DWORD n = 0;
          if (::GetOverlappedResult(native(s->handle), &s->ov, &n, TRUE) ||
              ::GetLastError() != ERROR_OPERATION_ABORTED)
            s->ready = true;  // data, end of file or an error: a read will not block
        }
        ::CloseHandle(s->ov.hEvent);
      } else if (s->kind == Kind::accept) {
        if (::WaitForSingleObject(s->object, 0) == WAIT_OBJECT_0) s->ready = true;
        ::WSAEventSelect(sock(s->handle), nullptr, 0);
        ::CloseHandle(s->object);
      } else if (s->kind == Kind::object) {
        if (!s->ready && ::WaitForSingleObject(s->object, 0) == WAIT_OBJECT_0) s->ready = true;
      }
      s->kind = Kind::done;
      if (s->ready && (ready.empty() || ready.back() != s->index)) ready.push_back(s->index);
    }
    std::sort(ready.begin(), ready.end());
    ready.erase(std::unique(ready.begin(), ready.end()), ready.end());
    return ready;
  }

 private:
  enum class Kind { object, read, accept, done };
  struct Source {
    Kind kind = Kind::object;
    Handle handle = kInvalidHandle;
    std::size_t index = 0;
    HANDLE object = nullptr;
    bool ready = false;
    bool pending = false;  // a zero-byte read is in flight
    OVERLAPPED ov{};
  };

  void add(Handle h, std::size_t index) {
    auto s = std::make_unique<Source>();
    s->handle = h;
    s->index = index;
    if (is_socket(h)) {
      if (is_listening(sock(h)) ? socket_ready(sock(h), POLLRDNORM, 0)  // a pending connection
                                : socket_readable_now(sock(h))) {       // data or end of file
        s->ready = true;
        sources_.push_back(std::move(s));
        return;
      }
      const HANDLE event = ::CreateEventW(nullptr, TRUE, FALSE, nullptr);
      if (!event) throw_last_error("CreateEvent");
      s->object = event;
      if (is_listening(sock(h))) {
        s->kind = Kind::accept;
        if (::WSAEventSelect(sock(h), event, FD_ACCEPT | FD_CLOSE) != 0) {
          ::CloseHandle(event);
          throw_wsa("WSAEventSelect");
        }
      } else {
        s->kind = Kind::read;
        s->ov.hEvent = event;
        WSABUF buf{0, nullptr};
        DWORD flags = 0;
        if (::WSARecv(sock(h), &buf, 1, nullptr, &flags, &s->ov, nullptr) == 0 ||
            ::WSAGetLastError() != WSA_IO_PENDING)
          s->ready = true;  // data, end of file or an error: reading reports it
        else
          s->pending = true;
      }
    } else if (is_pipe(h)) {
      const HANDLE event = ::CreateEventW(nullptr, TRUE, FALSE, nullptr);
      if (!event) throw_last_error("CreateEvent");
      s->kind = Kind::read;
      s->object = s->ov.hEvent = event;
      if (::ReadFile(native(h), nullptr, 0, nullptr, &s->ov) ||
          ::GetLastError() != ERROR_IO_PENDING)
        s->ready = true;  // data, end of file or an error: reading reports it
      else
        s->pending = true;
    } else {
      s->object = native(h);
    }
    sources_.push_back(std::move(s));
  }

  // WaitForMultipleObjects on any number of objects: beyond 64, helper threads wait on groups of
  // 63 plus a stop event, and wake the caller through `any`.
  static void wait_objects(const std::vector<HANDLE>& objects, DWORD ms) {
    if (objects.empty()) {
      ::Sleep(ms);
      return;
    }
    if (objects.size() <= MAXIMUM_WAIT_OBJECTS) {
      if (::WaitForMultipleObjects(static_cast<DWORD>(objects.size()), objects.data(), FALSE, ms) ==
          WAIT_FAILED)
        throw_last_error("WaitForMultipleObjects");
      return;
    }
    constexpr std::size_t kGroup = MAXIMUM_WAIT_OBJECTS - 1;
    const HANDLE any = ::CreateEventW(nullptr, TRUE, FALSE, nullptr);
    const HANDLE stop = ::CreateEventW(nullptr, TRUE, FALSE, nullptr);
    if (!any || !stop) {
      if (any) ::CloseHandle(any);
      throw_last_error("CreateEvent");
    }
    std::vector<std::thread> helpers;
    for (std::size_t at = kGroup; at < objects.size(); at += kGroup) {
      std::vector<HANDLE> group(
          objects.begin() + static_cast<std::ptrdiff_t>(at),
          objects.begin() + static_cast<std::ptrdiff_t>(std::min(at + kGroup, objects.size())));
      group.push_back(stop);
      helpers.emplace_back([group = std::move(group), any] {
        const DWORD r = ::WaitForMultipleObjects(static_cast<DWORD>(group.size()), group.data(),
                                                 FALSE, INFINITE);
        if (r != WAIT_OBJECT_0 + group.size() - 1) ::SetEvent(any);  // not the stop event
      });
    }
    std::vector<HANDLE> first(objects.begin(), objects.begin() + kGroup);
    first.push_back(any);
    ::WaitForMultipleObjects(static_cast<DWORD>(first.size()), first.data(), FALSE, ms);
    ::SetEvent(stop);
    for (auto& t : helpers) t.join();
    ::CloseHandle(any);
    ::CloseHandle(stop);
  }

  std::vector<std::unique_ptr<Source>> sources_;
};

}  // namespace

std::vector<std::size_t> wait_any(const std::vector<Handle>& handles, const Nanos* timeout) {
  const auto deadline = timeout ? Clock::now() + *timeout : Clock::time_point::max();
  for (;;) {
    std::vector<std::size_t> ready;
    {
      Readiness r(handles);
      if (!r.any_ready()) r.sleep(timeout ? millis_until(deadline) : INFINITE);
      ready = r.finish();
    }
    if (!ready.empty() || (timeout && Clock::now() >= deadline)) return ready;
  }
}

bool wait_readable(Handle h, const Nanos* timeout) { return !wait_any({h}, timeout).empty(); }

bool wait_writable(Handle h, const Nanos* timeout) {
  if (is_socket(h)) return socket_ready(sock(h), POLLWRNORM, win32::wait_millis(timeout));
  // A pipe has no write readiness: a write that finds its buffer full waits (bounded by the
  // caller's deadline) for the reader instead.
  return true;
}

// ---- listening and connecting

Handle listen_unix(const std::string& path, int backlog) {
  (void)backlog;  // one instance waits and a spare is ready, as CPython's PipeListener; clients
                  // that find neither wait for one (connect_unix)
  auto l = std::make_shared<PipeListener>();
  l->name = pipe_name(path);
  l->ov.hEvent = ::CreateEventW(nullptr, TRUE, FALSE, nullptr);
  if (!l->ov.hEvent) throw_last_error("CreateEvent");
  try {
    listen_next(*l, true);
  } catch (...) {
    ::CloseHandle(l->ov.hEvent);
    throw;
  }
  std::lock_guard lock(g_objects_lock);
  listeners()[l->ov.hEvent] = l;
  return wrap(l->ov.hEvent);
}

Handle connect_unix(const std::string& path) {
  const std::wstring name = pipe_name(path);
  // As CPython's PipeClient: a busy listener (no instance waiting) is waited for, up to 20 s.
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  for (;;) {
    HANDLE h = ::CreateFileW(name.c_str(), GENERIC_READ | GENERIC_WRITE, 0, nullptr, OPEN_EXISTING,
                             FILE_FLAG_OVERLAPPED, nullptr);
    if (h != INVALID_HANDLE_VALUE) return wrap(h);
    const DWORD e = ::GetLastError();
    if (e != ERROR_PIPE_BUSY || Clock::now() >= deadline)
      throw_error(static_cast<int>(e), "cannot connect to '" + path + "'");
    ::WaitNamedPipeW(name.c_str(), std::min<DWORD>(millis_until(deadline), 1000));
  }
}

namespace {

SOCKET new_socket(int family, int type, int protocol) {
  start_winsock();
  return ::WSASocketW(family, type, protocol, nullptr, 0,
                      WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
}

// getaddrinfo for a TCP endpoint; calls fn(socket, addrinfo*) on each until it returns true.
template <class F>
Handle with_tcp_address(const std::string& host, std::uint16_t port, bool passive, F fn) {
  start_winsock();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  const int rc =
      ::getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0) throw_error(rc, "cannot resolve '" + host + "'");
  int last = 0;
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    const SOCKET s = new_socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (s == INVALID_SOCKET) {
      last = ::WSAGetLastError();
      continue;
    }
    if (fn(s, ai)) {
      ::freeaddrinfo(res);
      return static_cast<Handle>(s);
    }
    last = ::WSAGetLastError();
    ::closesocket(s);
  }
  ::freeaddrinfo(res);
  throw_error(
      last, "cannot " + std::string(passive ? "listen on " : "connect to ") + host + ":" + service);
}

void set_nodelay(SOCKET s) noexcept {
  const BOOL one = TRUE;
  ::setsockopt(s, IPPROTO_TCP, TCP_NODELAY, reinterpret_cast<const char*>(&one), sizeof one);
}

}  // namespace

Handle listen_tcp(const std::string& host, std::uint16_t port, int backlog) {
  return with_tcp_address(host, port, true, [&](SOCKET s, addrinfo* ai) {
    // No SO_REUSEADDR: on Windows it lets another socket take the port (CPython sets it on POSIX
    // only); SO_EXCLUSIVEADDRUSE forbids that.
    const BOOL one = TRUE;
    ::setsockopt(s, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, reinterpret_cast<const char*>(&one),
                 sizeof one);
    return ::bind(s, ai->ai_addr, static_cast<int>(ai->ai_addrlen)) == 0 &&
           ::listen(s, backlog) == 0;
  });
}

Handle connect_tcp(const std::string& host, std::uint16_t port) {
  return with_tcp_address(host, port, false, [&](SOCKET s, addrinfo* ai) {
    if (::connect(s, ai->ai_addr, static_cast<int>(ai->ai_addrlen)) != 0) return false;
    set_nodelay(s);
    return true;
  });
}

std::uint16_t local_port(Handle listener) {
  if (!is_socket(listener)) return 0;  // a named pipe
  sockaddr_storage ss{};
  int len = sizeof ss;
  if (::getsockname(sock(listener), reinterpret_cast<sockaddr*>(&ss), &len) != 0)
    throw_wsa("getsockname");
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

std::optional<std::pair<std::string, std::uint16_t>> peer_tcp_address(Handle conn) {
  if (!is_socket(conn)) return std::nullopt;  // a named pipe
  sockaddr_storage ss{};
  int len = sizeof ss;
  if (::getpeername(sock(conn), reinterpret_cast<sockaddr*>(&ss), &len) != 0) return std::nullopt;
  char text[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    if (!::inet_ntop(AF_INET, &a->sin_addr, text, sizeof text)) return std::nullopt;
    return std::pair<std::string, std::uint16_t>(text, ntohs(a->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    if (!::inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof text)) return std::nullopt;
    return std::pair<std::string, std::uint16_t>(text, ntohs(a->sin6_port));
  }
  return std::nullopt;
}

std::optional<Handle> try_accept(Handle listener, int& error) noexcept {
  error = 0;
  if (const auto l = find_listener(listener)) {
    std::lock_guard lock(g_objects_lock);  // one accept at a time per process
    if (l->instance == INVALID_HANDLE_VALUE) {
      try {
        listen_next(*l, false);
      } catch (const OSError& e) {
        error = e.code().value();
        return std::nullopt;
      }
    }
    DWORD n = 0;
    if (!l->connected && !::GetOverlappedResult(l->instance, &l->ov, &n, FALSE)) {
      const DWORD e = ::GetLastError();
      if (e == ERROR_IO_INCOMPLETE) return std::nullopt;  // nobody waits
      if (e != ERROR_PIPE_CONNECTED) {  // the client left before it was accepted: start over
        ::CloseHandle(l->instance);
        l->instance = INVALID_HANDLE_VALUE;
        try {
          listen_next(*l, false);
        } catch (const OSError& e) {
          error = e.code().value();
        }
        return std::nullopt;
      }
    }
    const HANDLE connection = l->instance;
    l->instance = INVALID_HANDLE_VALUE;
    try {
      listen_next(*l, false);
    } catch (const OSError&) {
      // Retried by the next try_accept; this connection is good.
    }
    return wrap(connection);
  }
  const SOCKET s = ::accept(sock(listener), nullptr, nullptr);
  if (s == INVALID_SOCKET) {
    const int e = ::WSAGetLastError();
    if (e != WSAEWOULDBLOCK && e != WSAECONNRESET && e != WSAEINTR) error = e;
    return std::nullopt;
  }
  // An accepted socket inherits the listener's event selection and non-blocking mode: clear both
  // (accepted sockets are blocking). Windows sockets start non-inheritable (the listener's flag).
  ::WSAEventSelect(s, nullptr, 0);
  u_long off = 0;
  ::ioctlsocket(s, FIONBIO, &off);
  ::SetHandleInformation(reinterpret_cast<HANDLE>(s), HANDLE_FLAG_INHERIT, 0);
  sockaddr_storage ss{};
  int len = sizeof ss;
  if (::getsockname(s, reinterpret_cast<sockaddr*>(&ss), &len) == 0) set_nodelay(s);
  return static_cast<Handle>(s);
}

std::optional<Handle> try_accept(Handle listener) {
  int error = 0;
  const std::optional<Handle> h = try_accept(listener, error);
  if (error) throw_error(error, "accept failed");
  return h;
}

void set_nonblocking(Handle listener) {
  if (find_listener(listener)) return;  // try_accept never blocks on a pipe listener
  u_long on = 1;
  if (::ioctlsocket(sock(listener), FIONBIO, &on) != 0) throw_wsa("ioctlsocket");
}

void unlink_path(const std::string& path) noexcept {
  // A named pipe vanishes with its last handle.
  if (!path.empty() && !is_pipe_address(path)) {
    try {
      ::DeleteFileW(win32::widen(path).c_str());
    } catch (...) {
    }
  }
}

std::string private_socket_address(std::string& private_dir) {
  private_dir.clear();
  return "\\\\.\\pipe\\mp-" + std::to_string(::GetCurrentProcessId()) + "-" + random_hex(12);
}

std::string path_socket_address(std::string& private_dir) {
  return private_socket_address(private_dir);
}

std::string make_private_directory(const std::string& prefix) {
  wchar_t tmp[MAX_PATH + 1];
  const DWORD n = ::GetTempPathW(MAX_PATH + 1, tmp);
  if (n == 0 || n > MAX_PATH) throw_last_error("GetTempPathW");
  for (;;) {
    const std::string path = win32::narrow(std::wstring(tmp, n)) + prefix + random_hex(6);
    // The user's temporary directory is private to the user; the new directory inherits that.
    if (::CreateDirectoryW(win32::widen(path).c_str(), nullptr)) return path;
    if (::GetLastError() != ERROR_ALREADY_EXISTS)
      throw_last_error("cannot create a private directory in " + path);
  }
}

void remove_directory(const std::string& path) noexcept {
  try {
    ::RemoveDirectoryW(win32::widen(path).c_str());
  } catch (...) {
  }
}

std::optional<int> peer_pid(Handle connection) {
  if (is_socket(connection)) return std::nullopt;
  DWORD flags = 0;
  if (!::GetNamedPipeInfo(native(connection), &flags, nullptr, nullptr, nullptr))
    return std::nullopt;
  ULONG pid = 0;
  const BOOL ok = (flags & PIPE_SERVER_END)
                      ? ::GetNamedPipeClientProcessId(native(connection), &pid)
                      : ::GetNamedPipeServerProcessId(native(connection), &pid);
  if (!ok || pid == 0) return std::nullopt;
  return static_cast<int>(pid);
}

namespace {
// The user SID of a process's token, as bytes (empty when it cannot be read).
std::string process_user(HANDLE process) {
  HANDLE token = nullptr;
  if (!::OpenProcessToken(process, TOKEN_QUERY, &token)) return {};
  DWORD size = 0;
  ::GetTokenInformation(token, TokenUser, nullptr, 0, &size);
  std::string buf(size, '\0');
  std::string sid;
  if (size && ::GetTokenInformation(token, TokenUser, buf.data(), size, &size)) {
    const PSID p = reinterpret_cast<TOKEN_USER*>(buf.data())->User.Sid;
    sid.assign(static_cast<const char*>(p), ::GetLengthSid(p));
  }
  ::CloseHandle(token);
  return sid;
}
}  // namespace

bool peer_is_same_user(Handle connection) {
  if (is_socket(connection)) return true;  // TCP: the authkey decides, as CPython
  const auto pid = peer_pid(connection);
  if (!pid) return false;
  const HANDLE peer =
      ::OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, static_cast<DWORD>(*pid));
  if (!peer) return false;
  const std::string theirs = process_user(peer);
  ::CloseHandle(peer);
  return !theirs.empty() && theirs == process_user(::GetCurrentProcess());
}

// ---- Pipe() over shared memory: wake tokens

bool peer_closed(Handle socket) {
  if (is_socket(socket)) {
    char c;  // end of file or a reset (not WSAPoll: see socket_readable_now)
    const int n = recv_now(sock(socket), &c, 1, MSG_PEEK);
    return n == 0 || (n < 0 && ::WSAGetLastError() != WSAEWOULDBLOCK);
  }
  // A pipe whose writer has gone still delivers what it wrote first, then reports end of file.
  DWORD avail = 0;
  return !::PeekNamedPipe(native(socket), nullptr, 0, nullptr, &avail, nullptr) &&
         peer_gone(::GetLastError());
}

bool write_token(Handle socket) {
  const char token = 't';
  try {
    return try_write(socket, &token, 1) == 1;
  } catch (const OSError& e) {
    if (e.code() == std::error_code(EPIPE, std::generic_category())) return false;
    throw;
  }
}

int read_token(Handle socket) {
  char token;
  std::size_t got = 0;
  if (try_read(socket, &token, 1, got) != TryRead::ok) return -1;
  return static_cast<int>(got);
}

Handle make_event() {
  const HANDLE h = ::CreateEventW(nullptr, TRUE, FALSE, nullptr);
  if (!h) throw_last_error("CreateEvent");
  return wrap(h);
}

void set_event(Handle event, bool on) {
  if (!(on ? ::SetEvent(native(event)) : ::ResetEvent(native(event)))) throw_last_error("SetEvent");
}

Handle make_ready_set(Handle socket, Handle event) {
  // A handle of its own (an event never set) naming the pair: waits expand it to both parts.
  const Handle h = make_event();
  std::lock_guard lock(g_objects_lock);
  ready_sets()[native(h)] = ReadySet{socket, event};
  return h;
}

}  // namespace mp::platform
