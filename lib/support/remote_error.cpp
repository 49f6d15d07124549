// Exceptions across processes for pools (lib/support/remote_error.hpp).
#include "support/remote_error.hpp"

#include <cstdint>
#include <cstring>
#include <functional>
#include <new>
#include <stdexcept>
#include <typeinfo>
#include <utility>

#include "mp/errors.hpp"
#include "platform/system.hpp"

namespace mp::detail {
namespace {

template <class E>
std::exception_ptr make_plain(const std::string& message, int) {
  return std::make_exception_ptr(E(message));
}
template <class E>
std::exception_ptr make_bare(const std::string&, int) {
  return std::make_exception_ptr(E());
}

struct Known {
  const std::type_info& type;
  const char* name;
  std::exception_ptr (*make)(const std::string& message, int code);
};

// The types that come back as themselves, exact types only (a subclass is a RemoteError).
const Known kKnown[] = {
    {typeid(std::logic_error), "std::logic_error", &make_plain<std::logic_error>},
    {typeid(std::invalid_argument), "std::invalid_argument", &make_plain<std::invalid_argument>},
    {typeid(std::domain_error), "std::domain_error", &make_plain<std::domain_error>},
    {typeid(std::length_error), "std::length_error", &make_plain<std::length_error>},
    {typeid(std::out_of_range), "std::out_of_range", &make_plain<std::out_of_range>},
    {typeid(std::runtime_error), "std::runtime_error", &make_plain<std::runtime_error>},
    {typeid(std::range_error), "std::range_error", &make_plain<std::range_error>},
    {typeid(std::overflow_error), "std::overflow_error", &make_plain<std::overflow_error>},
    {typeid(std::underflow_error), "std::underflow_error", &make_plain<std::underflow_error>},
    {typeid(std::bad_alloc), "std::bad_alloc", &make_bare<std::bad_alloc>},
    {typeid(ProcessError), "mp::ProcessError", &make_plain<ProcessError>},
    {typeid(AuthenticationError), "mp::AuthenticationError", &make_plain<AuthenticationError>},
    {typeid(TimeoutError), "mp::TimeoutError", &make_plain<TimeoutError>},
    {typeid(BrokenBarrierError), "mp::BrokenBarrierError", &make_plain<BrokenBarrierError>},
    {typeid(Empty), "mp::Empty", &make_bare<Empty>},
    {typeid(Full), "mp::Full", &make_bare<Full>},
    {typeid(EOFError), "mp::EOFError", &make_plain<EOFError>},
    {typeid(PicklingError), "mp::PicklingError", &make_plain<PicklingError>},
    {typeid(UnpicklingError), "mp::UnpicklingError", &make_plain<UnpicklingError>},
};

void put_string(std::string& out, std::string_view s) {
  const auto n = static_cast<std::uint32_t>(s.size());
  out.append(reinterpret_cast<const char*>(&n), sizeof n);
  out.append(s);
}

bool get_string(std::string_view& in, std::string& s) {
  std::uint32_t n = 0;
  if (in.size() < sizeof n) return false;
  std::memcpy(&n, in.data(), sizeof n);
  in.remove_prefix(sizeof n);
  if (n > in.size()) return false;
  s.assign(in.data(), n);
  in.remove_prefix(n);
  return true;
}

}  // namespace

// Layout: [u8 tag: 0 known/std, 1 RemoteError, 2 OSError, 3 WorkerLostError][type][message]
// [i32 code][i32 pid].
void encode_error(std::exception_ptr error, std::string& out) {
  std::uint8_t tag = 0;
  std::string type, message;
  std::int32_t code = 0, pid = 0;
  try {
    std::rethrow_exception(error);
  } catch (const RemoteError& e) {
    tag = 1;
    type = e.type_name();
    message = e.what();
    if (message.rfind(type + ": ", 0) == 0) message.erase(0, type.size() + 2);
  } catch (const OSError& e) {
    tag = 2;
    type = "mp::OSError";
    message = e.what();
    code = e.code().value();
  } catch (const WorkerLostError& e) {
    tag = 3;
    type = "mp::WorkerLostError";
    message = e.what();
    code = e.exitcode();
    pid = e.pid();
  } catch (const std::exception& e) {
    type = platform::demangle(typeid(e).name());
    for (const Known& k : kKnown)
      if (typeid(e) == k.type) type = k.name;
    message = e.what();
  } catch (...) {
    type = "unknown exception";
  }
  out.push_back(static_cast<char>(tag));
  put_string(out, type);
  put_string(out, message);
  out.append(reinterpret_cast<const char*>(&code), sizeof code);
  out.append(reinterpret_cast<const char*>(&pid), sizeof pid);
}

std::exception_ptr decode_error(std::string_view in) noexcept {
  try {
    std::string type, message;
    std::int32_t code = 0, pid = 0;
    if (in.empty()) throw UnpicklingError("corrupt data: an empty error");
    const auto tag = static_cast<std::uint8_t>(in.front());
    in.remove_prefix(1);
    if (!get_string(in, type) || !get_string(in, message) || in.size() != sizeof code + sizeof pid)
      throw UnpicklingError("corrupt data: a truncated error");
    std::memcpy(&code, in.data(), sizeof code);
    std::memcpy(&pid, in.data() + sizeof code, sizeof pid);
    switch (tag) {
      case 1:
        return std::make_exception_ptr(RemoteError(type, message));
      case 2: {
        // what() already carries the OS message; keep it as it was.
        const std::string suffix = ": " + std::system_category().message(code);
        if (message.size() >= suffix.size() &&
            message.compare(message.size() - suffix.size(), suffix.size(), suffix) == 0)
          message.resize(message.size() - suffix.size());
        return std::make_exception_ptr(OSError(code, message));
      }
      case 3:
        return std::make_exception_ptr(WorkerLostError(message, pid, code));
      case 0:
        for (const Known& k : kKnown)
          if (type == k.name) return k.make(message, code);
        return std::make_exception_ptr(RemoteError(type, message));
      default:
        throw UnpicklingError("corrupt data: an unknown error tag");
    }
  } catch (...) {
    return std::current_exception();
  }
}

}  // namespace mp::detail
