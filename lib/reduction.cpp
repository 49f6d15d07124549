// Serialization support: type tags and handle passing for spawned children.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "mp/reduction.hpp"
#include "platform/handle.hpp"
#include "platform/system.hpp"
#include "reduction_impl.hpp"

namespace mp::reduction {
namespace {
thread_local std::vector<platform::Handle>* t_sending = nullptr;
thread_local const std::vector<platform::Handle>* t_receiving = nullptr;
thread_local const detail::ReceiveMapScope::Map* t_received = nullptr;
}  // namespace

namespace detail {

std::uint64_t hash_type_name(const char* name) noexcept {
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (; *name; ++name) {
    h ^= static_cast<unsigned char>(*name);
    h *= 1099511628211ull;
  }
  return h;
}

void throw_type_mismatch(const char* expected) {
  throw UnpicklingError("type mismatch: the data received is not a " +
                        platform::demangle(expected));
}

SendScope::SendScope(std::vector<platform::Handle>& out) : previous_(t_sending) {
  t_sending = &out;
}
SendScope::~SendScope() { t_sending = previous_; }
ReceiveScope::ReceiveScope(const std::vector<platform::Handle>& inherited)
    : previous_(t_receiving) {
  t_receiving = &inherited;
}
ReceiveScope::~ReceiveScope() { t_receiving = previous_; }
ReceiveMapScope::ReceiveMapScope(const Map& received) : previous_(t_received) {
  t_received = &received;
}
ReceiveMapScope::~ReceiveMapScope() { t_received = previous_; }

}  // namespace detail

std::uint64_t send_handle(native_handle handle, const char* what) {
  if (!t_sending)
    throw std::runtime_error(
        std::string(what) + " objects should only be shared between processes through inheritance");
  const auto h = static_cast<platform::Handle>(handle);
  if (std::find(t_sending->begin(), t_sending->end(), h) == t_sending->end())
    t_sending->push_back(h);
  return static_cast<std::uint64_t>(h);
}

native_handle receive_handle(std::uint64_t token) {
  if (t_received) {
    for (const auto& [t, fd] : *t_received)
      if (t == token) return platform::duplicate_handle(fd);
  }
  const auto h = static_cast<platform::Handle>(token);
  if (!t_receiving || std::find(t_receiving->begin(), t_receiving->end(), h) == t_receiving->end())
    throw UnpicklingError("mp: a handle in the data was not inherited by this process");
  return platform::duplicate_handle(h);
}

bool spawning() noexcept { return t_sending != nullptr; }

}  // namespace mp::reduction
