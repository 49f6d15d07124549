// Internal: the handle tables behind reduction::send_handle()/receive_handle().
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "platform/handle.hpp"

namespace mp::reduction::detail {

// While alive on a thread, send_handle() records handles into `out` (deduplicated).
class SendScope {
 public:
  explicit SendScope(std::vector<platform::Handle>& out);
  ~SendScope();
  SendScope(const SendScope&) = delete;
  SendScope& operator=(const SendScope&) = delete;

 private:
  std::vector<platform::Handle>* previous_;
};

// In a spawned child: the inherited handles receive_handle() may hand out (as duplicates).
class ReceiveScope {
 public:
  explicit ReceiveScope(const std::vector<platform::Handle>& inherited);
  ~ReceiveScope();
  ReceiveScope(const ReceiveScope&) = delete;
  ReceiveScope& operator=(const ReceiveScope&) = delete;

 private:
  const std::vector<platform::Handle>* previous_;
};

// In a process that received descriptors after it started (a pool worker, passed over a socket):
// receive_handle(token) gives a duplicate of the descriptor received for `token`.
class ReceiveMapScope {
 public:
  using Map = std::vector<std::pair<std::uint64_t, platform::Handle>>;
  explicit ReceiveMapScope(const Map& received);
  ~ReceiveMapScope();
  ReceiveMapScope(const ReceiveMapScope&) = delete;
  ReceiveMapScope& operator=(const ReceiveMapScope&) = delete;

 private:
  const Map* previous_;
};

}  // namespace mp::reduction::detail
