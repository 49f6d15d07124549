// Shared helpers for the libFuzzer targets (see fuzz/README.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "mp/errors.hpp"
#include "mp/reduction.hpp"

namespace mp_fuzz {

// Decodes `bytes` as a T the way a receiving process does (reduction::loads). The type tag is
// prepended so the fuzzer reaches the value decoder; only the documented error may escape.
template <class T>
void decode_as(std::string_view bytes) {
  const std::uint64_t tag = mp::reduction::detail::type_tag<T>();
  std::string framed(reinterpret_cast<const char*>(&tag), sizeof tag);
  framed.append(bytes.data(), bytes.size());
  try {
    T value = mp::reduction::loads<T>(framed);
    // A value that decodes must encode again (no half-built value escapes).
    (void)mp::reduction::dumps(value);
  } catch (const mp::UnpicklingError&) {
  }
}

}  // namespace mp_fuzz
