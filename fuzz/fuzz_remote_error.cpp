// Fuzz target: a pool worker's error reply (lib/support/remote_error.hpp, CPython: the pickled
// exception of pool.py's ExceptionWithTraceback), as the parent decodes it from the result queue.
// Contract: decode_error never throws, never crashes; it returns the rebuilt exception or an
// UnpicklingError. Also round-trips what it decoded (encode, decode again).
#include <exception>
#include <string>
#include <string_view>

#include "fuzz_common.hpp"
#include "support/remote_error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const std::exception_ptr e = mp::detail::decode_error(in);
  if (!e) __builtin_trap();
  std::string again;
  mp::detail::encode_error(e, again);
  if (!mp::detail::decode_error(again)) __builtin_trap();
  return 0;
}
