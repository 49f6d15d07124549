// Fuzz target: the ShareableList layout decoder (lib/shareable_list_layout.hpp), as an attacher
// reads a segment that another — possibly hostile or half-written — process filled. Contract:
// read_header/read_item/read_format decode or throw std::invalid_argument; write_item on a
// validated header stays inside the segment (ASan would report otherwise). The first byte
// chooses the item written back (0: none); the rest is the segment.
#include <cstring>
#include <stdexcept>
#include <vector>

#include "shareable_list_layout.hpp"

namespace sl = mp::detail::shareable_list;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t choice = data[0];
  // An exactly sized heap copy: ASan sees any read or write past the segment's end.
  std::vector<std::byte> segment(size - 1);
  if (size > 1) std::memcpy(segment.data(), data + 1, size - 1);
  try {
    const sl::Header h = sl::read_header(segment);
    for (std::size_t i = 0; i < h.length; ++i) {
      try {
        (void)sl::read_item(segment, h, i);
        (void)sl::read_format(segment, h, i);
      } catch (const std::invalid_argument&) {
      }
    }
    if (choice != 0 && h.length != 0) {
      static const sl::Value values[] = {
          std::monostate{},        true,
          std::int64_t{-1},        2.5,
          std::string("ab\0c", 4), std::vector<std::byte>(9, std::byte{1})};
      const sl::Value& v = values[choice % std::size(values)];
      const std::size_t i = (choice / std::size(values)) % h.length;
      try {
        sl::write_item(segment, h, i, v);
        if (sl::read_item(segment, h, i) != v) __builtin_trap();  // what was written reads back
      } catch (const std::invalid_argument&) {
      }
    }
  } catch (const std::invalid_argument&) {
  }
  return 0;
}
