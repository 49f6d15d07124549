// Internal: the handle tables behind reduction::send_handle()/receive_handle().
#pragma once

#include <cstdint>
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

}  // namespace mp::reduction::detail
