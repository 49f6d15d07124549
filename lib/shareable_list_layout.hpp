// Internal: CPython's ShareableList layout in a segment (multiprocessing/shared_memory.py), the
// decoder of untrusted bytes behind mp::shared_memory::ShareableList (fuzzed: fuzz/fuzz_shareable_list.cpp).
//
//   offset 0                  int64  n, the number of items
//   offset 8                  int64  offsets[0..n] of the item slots in the data area (offsets[0] = 0)
//   offset 8 (n + 2)          data area: slot i is [offsets[i], offsets[i+1]): 8 bytes for int,
//                             float, bool, None; 8 * (len / 8 + 1) bytes for str/bytes of len bytes
//   data + offsets[n]         n 8-byte struct formats, NUL-padded: "q", "d", "xxxxxxx?" (bool in
//                             the slot's last byte), "xxxxxx?x" (None), "<len>s" (str/bytes)
//   after them                n int8 type codes: 0 value as its format says, 1 str, 2 bytes, 3 None
// Native byte order (the segment never leaves the machine).
//
// mp writes a str/bytes format as "<len>s " (a trailing blank, which Python's struct ignores):
// <len> is then the exact length, so trailing NULs survive; a format without the blank is read
// as CPython means it (NULs stripped when <len> fills the slot).
//
// Guarantees: the decoder copies every field it uses out of the segment once and checks it
// before use, so bytes changed concurrently or written by a hostile process give
// std::invalid_argument (or a wrong but well-formed value), never an out-of-bounds access.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "mp/shared_memory.hpp"

namespace mp::detail::shareable_list {

using Value = shared_memory::ShareableList::value_type;

// The size of the segment that holds `items`. Throws std::invalid_argument for a str/bytes
// item too long for the format field (over 9,999,999 bytes).
std::size_t required_size(const std::vector<Value>& items);
// Writes `items` in the layout into `segment` (at least required_size(items) bytes).
void write_list(std::span<std::byte> segment, const std::vector<Value>& items);

// The validated header: the number of items and their slot offsets (n + 1 values, checked to
// increase and to fit the segment with the formats and codes). Throws std::invalid_argument.
struct Header {
  std::size_t length = 0;
  std::vector<std::uint64_t> offsets;
};
Header read_header(std::span<const std::byte> segment);
// Item i (< header.length) as its format and type code say. Throws std::invalid_argument.
Value read_item(std::span<const std::byte> segment, const Header& header, std::size_t i);
// Item i's format (Python's struct format, blank removed). Throws std::invalid_argument.
std::string read_format(std::span<const std::byte> segment, const Header& header, std::size_t i);
// Stores `v` as item i (format, type code, then the bytes; the rest of the slot zeroed).
// Throws std::invalid_argument "bytes/str item exceeds available storage".
void write_item(std::span<std::byte> segment, const Header& header, std::size_t i, const Value& v);

}  // namespace mp::detail::shareable_list
