// lib/support/load_time_global.hpp — process-wide objects made while the library loads.
#pragma once

#include <atomic>
#include "platform/wait.hpp"

namespace mp::detail {

// A process-wide object made before main (by the initializer below, while the library loads on
// one thread) and never destroyed, so exit handlers and static destructors may still use it.
//
// Why not a function-local static: its first use takes a guard, and a thread that forks while
// another thread is inside that first use leaves the child a guard marked "in progress" that no
// thread will ever finish (the child hangs on it). Made at load time, no fork can find the
// object half-made. A use from another static initializer that runs earlier makes it then (still
// on the loading thread). T's constructor may register its locks with platform::hold_across_fork.
template <class T>
class LoadTimeGlobal {
 public:
  constexpr LoadTimeGlobal() = default;
  LoadTimeGlobal(const LoadTimeGlobal&) = delete;
  LoadTimeGlobal& operator=(const LoadTimeGlobal&) = delete;

  T& get() {
    T* p = ptr_.load(std::memory_order_acquire);
    return p ? *p : make();
  }

 private:
  T& make() {
    T* p = new T;
    ptr_.store(p, std::memory_order_release);
    return *p;
  }
  std::atomic<T*> ptr_{nullptr};
};

}  // namespace mp::detail

// Defines `name`, a LoadTimeGlobal<T> made while the library loads.
#define MP_LOAD_TIME_GLOBAL(T, name)              \
  constinit ::mp::detail::LoadTimeGlobal<T> name; \
  [[maybe_unused]] const bool name##_made_at_load = (name.get(), true)
