// lib/sharedctypes.cpp — the guarded copy behind Value/Array of types that are not lock-free
// (CPython: multiprocessing/sharedctypes.py).
#include "mp/sharedctypes.hpp"

#include "support/futex_lock.hpp"

namespace mp::detail {

// The guard is the FutexLock at the start of the block (zero-filled memory is an unlocked lock).
// It is robust: a process killed during a copy does not block the others (they take it over).
void guarded_copy(void* block_base, void* dst, const void* src, std::size_t size) {
  struct Wide {
    char bytes[64];
  };
  static_assert(!kIndivisible<Wide> && kDataOffset<Wide> >= sizeof(FutexLock));
  auto* guard = static_cast<FutexLock*>(block_base);
  guard->acquire(nullptr);
  std::memcpy(dst, src, size);
  guard->release();
}

}  // namespace mp::detail
