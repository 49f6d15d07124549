// Internal: an exception carried from a pool worker to the parent (CPython pickles the
// exception object; pool.py's ExceptionWithTraceback).
#pragma once

#include <exception>
#include <string>
#include <string_view>

namespace mp::detail {

// Appends the exception's exact type name, message and (OSError) error code to `out`.
void encode_error(std::exception_ptr error, std::string& out);
// The exception again: the same type for the <stdexcept> types and mp's own errors, else
// mp::RemoteError(type name, message). Bytes that do not decode give an UnpicklingError.
std::exception_ptr decode_error(std::string_view bytes) noexcept;

}  // namespace mp::detail
