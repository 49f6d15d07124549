// lib/support/unique_handle.hpp — owns one platform::Handle (a descriptor; a HANDLE on Windows) and closes
// it with platform::close_handle when it goes, unless released first. Move-only.
#pragma once

#include <utility>

#include "platform/handle.hpp"

namespace mp::detail {

class UniqueHandle {
 public:
  UniqueHandle() noexcept = default;
  explicit UniqueHandle(platform::Handle h) noexcept : h_(h) {}
  UniqueHandle(UniqueHandle&& other) noexcept : h_(other.release()) {}
  UniqueHandle& operator=(UniqueHandle&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  UniqueHandle(const UniqueHandle&) = delete;
  UniqueHandle& operator=(const UniqueHandle&) = delete;
  ~UniqueHandle() { reset(); }

  platform::Handle get() const noexcept { return h_; }
  explicit operator bool() const noexcept { return h_ != platform::kInvalidHandle; }
  // Gives up ownership without closing.
  platform::Handle release() noexcept { return std::exchange(h_, platform::kInvalidHandle); }
  // Closes the handle held (if any) and holds `h`.
  void reset(platform::Handle h = platform::kInvalidHandle) noexcept {
    const platform::Handle old = std::exchange(h_, h);
    if (old != platform::kInvalidHandle) platform::close_handle(old);
  }

 private:
  platform::Handle h_ = platform::kInvalidHandle;
};

}  // namespace mp::detail
