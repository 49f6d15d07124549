// mp/errors.hpp — the exceptions of Python's multiprocessing, as C++ types.
//
// Python → C++: ProcessError, BufferTooShort, AuthenticationError, TimeoutError, BrokenBarrierError,
// RemoteError, queue.Empty/Full, EOFError and OSError keep their names. Python's ValueError is
// std::invalid_argument and misuse (AssertionError in CPython) is std::logic_error, each with
// CPython's message. OSError is a std::system_error carrying the OS error code and message.
#pragma once

#include <stdexcept>
#include <string>
#include <system_error>

#include "mp/export.hpp"

namespace mp {

// multiprocessing.ProcessError: the base of the module's own errors.
class MP_API ProcessError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Connection.recv_bytes_into(): the buffer is too small. `message()` holds the whole message.
class MP_API BufferTooShort : public ProcessError {
 public:
  explicit BufferTooShort(std::string message)
      : ProcessError("BufferTooShort: message of " + std::to_string(message.size()) + " bytes"),
        message_(std::move(message)) {}
  const std::string& message() const noexcept { return message_; }

 private:
  std::string message_;
};

// A pool's worker process ended while it ran a task (Pool, beyond CPython, whose Pool hangs then).
// what() names the pid and the signal ("SIGKILL") or the exit code; exitcode() is as
// Process::exitcode(): -N for signal N.
class MP_API WorkerLostError : public ProcessError {
 public:
  WorkerLostError(int pid, int exitcode);
  WorkerLostError(const std::string& message, int pid, int exitcode)
      : ProcessError(message), pid_(pid), exitcode_(exitcode) {}
  int pid() const noexcept { return pid_; }
  int exitcode() const noexcept { return exitcode_; }

 private:
  int pid_ = 0;
  int exitcode_ = 0;
};

// A wrong authkey, on either side of a Listener/Client or manager handshake.
class MP_API AuthenticationError : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

// multiprocessing.TimeoutError (e.g. AsyncResult.get with a timeout).
class MP_API TimeoutError : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

// threading.BrokenBarrierError: the Barrier was aborted, reset or timed out while waiting.
class MP_API BrokenBarrierError : public std::runtime_error {
 public:
  BrokenBarrierError() : std::runtime_error("BrokenBarrierError") {}
  using std::runtime_error::runtime_error;
};

// An exception thrown by a method of an object hosted by a manager. `type_name()` is the
// remote exception's type (demangled C++ name), what() carries the remote message.
class MP_API RemoteError : public std::runtime_error {
 public:
  RemoteError(std::string type_name, const std::string& message)
      : std::runtime_error(type_name + ": " + message), type_name_(std::move(type_name)) {}
  const std::string& type_name() const noexcept { return type_name_; }

 private:
  std::string type_name_;
};

// LookupError and its KeyError (a missing key) and IndexError (an index out of range), as raised by
// hosted list/dict proxies (CPython re-raises them in the caller as themselves).
class MP_API LookupError : public std::out_of_range {
 public:
  using std::out_of_range::out_of_range;
};
class MP_API KeyError : public LookupError {
 public:
  using LookupError::LookupError;
};
class MP_API IndexError : public LookupError {
 public:
  using LookupError::LookupError;
};

// queue.Empty and queue.Full.
class MP_API Empty : public std::runtime_error {
 public:
  Empty() : std::runtime_error("Empty") {}
};
class MP_API Full : public std::runtime_error {
 public:
  Full() : std::runtime_error("Full") {}
};

// EOFError: the other end of a connection is closed and nothing is left to read.
class MP_API EOFError : public std::runtime_error {
 public:
  EOFError() : std::runtime_error("EOFError") {}
  using std::runtime_error::runtime_error;
};

// OSError: an operating-system call failed; code() is the OS error (errno / GetLastError).
class MP_API OSError : public std::system_error {
 public:
  OSError(int errnum, const std::string& what)
      : std::system_error(errnum, std::system_category(), what) {}
  OSError(std::error_code ec, const std::string& what) : std::system_error(ec, what) {}
};

// pickle.PicklingError / UnpicklingError: a value cannot be serialized, or bytes received do not
// decode to the expected type (type mismatch, truncation, oversized length).
class MP_API PicklingError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
class MP_API UnpicklingError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace mp
