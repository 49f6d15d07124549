// Windows part of the handle basics (platform/handle.hpp): errors, closing and duplicating HANDLEs,
// text conversion. Every HANDLE the library makes is non-inheritable; a child receives only the
// handles listed for it (process_win32.cpp).
#include <string>

#include "mp/errors.hpp"
#include "platform/win32.hpp"

namespace mp::platform {

namespace win32 {

std::wstring widen(const std::string& s) {
  if (s.empty()) return {};
  const int n = ::MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s.data(),
                                      static_cast<int>(s.size()), nullptr, 0);
  if (n <= 0) throw OSError(static_cast<int>(::GetLastError()), "invalid UTF-8: " + s);
  std::wstring w(static_cast<std::size_t>(n), L'\0');
  ::MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s.data(), static_cast<int>(s.size()),
                        w.data(), n);
  return w;
}

std::string narrow(const std::wstring& w) {
  if (w.empty()) return {};
  const int n = ::WideCharToMultiByte(CP_UTF8, 0, w.data(), static_cast<int>(w.size()), nullptr, 0,
                                      nullptr, nullptr);
  std::string s(static_cast<std::size_t>(n > 0 ? n : 0), '\0');
  if (n > 0)
    ::WideCharToMultiByte(CP_UTF8, 0, w.data(), static_cast<int>(w.size()), s.data(), n, nullptr,
                          nullptr);
  return s;
}

std::string error_text(DWORD code) {
  wchar_t* buf = nullptr;
  const DWORD n = ::FormatMessageW(
      FORMAT_MESSAGE_ALLOCATE_BUFFER | FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS,
      nullptr, code, 0, reinterpret_cast<wchar_t*>(&buf), 0, nullptr);
  std::string text = n ? narrow(std::wstring(buf, n)) : "error " + std::to_string(code);
  if (buf) ::LocalFree(buf);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == '.'))
    text.pop_back();
  return text;
}

DWORD wait_millis(const Nanos* timeout) noexcept {
  if (!timeout) return INFINITE;
  if (*timeout <= Nanos::zero()) return 0;
  const auto ms = (timeout->count() + 999999) / 1000000;
  return ms >= static_cast<long long>(INFINITE) ? INFINITE - 1 : static_cast<DWORD>(ms);
}

}  // namespace win32

// OSError's code is the Win32 error (GetLastError) in std::system_category(), as CPython's
// winerror; what() ends with the system's text.
void throw_error(int errnum, const std::string& what) {
  throw OSError(std::error_code(errnum, std::system_category()), what);
}

void throw_errno(int posix_errno, const std::string& what) {
  throw OSError(std::error_code(posix_errno, std::generic_category()), what);
}

void throw_last_error(const std::string& what) {
  throw_error(static_cast<int>(::GetLastError()), what);
}

void close_handle(Handle h) noexcept {
  if (h == kInvalidHandle || h == 0 || win32::close_io_object(win32::native(h))) return;
  ::CloseHandle(win32::native(h));
}

Handle duplicate_handle(Handle h) {
  HANDLE out = nullptr;
  if (!::DuplicateHandle(::GetCurrentProcess(), win32::native(h), ::GetCurrentProcess(), &out, 0,
                         FALSE, DUPLICATE_SAME_ACCESS))
    throw_last_error("cannot duplicate a handle");
  return win32::wrap(out);
}

void set_inheritable(Handle h, bool inheritable) {
  if (!::SetHandleInformation(win32::native(h), HANDLE_FLAG_INHERIT,
                              inheritable ? HANDLE_FLAG_INHERIT : 0))
    throw_last_error("SetHandleInformation");
}

}  // namespace mp::platform
