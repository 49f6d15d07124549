// A per-thread object, made on a thread's first use and destroyed when the thread ends: a plain
// thread_local, except on Windows. There mingw-w64's emulated TLS may free a thread_local's
// storage before its destructor runs (the destructor then works on freed memory: heap corruption
// when any thread that used it ends; GCC bug 80816), so the object lives on the heap behind a
// trivially destructible thread_local pointer and the OS's thread-exit callback destroys it
// (platform::at_thread_exit).
#pragma once

#ifdef _WIN32
#  include <memory>

#  include "platform/system.hpp"
#endif

namespace mp::detail {

// The calling thread's T; `Tag` tells apart objects of the same type.
template <class T, class Tag>
T& thread_object() {
#ifdef _WIN32
  static thread_local T* object = nullptr;
  if (!object) {
    auto made = std::make_unique<T>();
    platform::at_thread_exit(
        +[](void* p) { delete static_cast<T*>(p); }, made.get());
    object = made.release();
  }
  return *object;
#else
  static thread_local T object;
  return object;
#endif
}

}  // namespace mp::detail
