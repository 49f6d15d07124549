// CPython's ShareableList layout (lib/shareable_list_layout.hpp).
#include "shareable_list_layout.hpp"

#include <cstring>
#include <stdexcept>
#include <type_traits>

namespace mp::detail::shareable_list {
namespace {

constexpr std::size_t kAlign = 8;
constexpr std::size_t kFormatSize = 8;
constexpr std::size_t kMaxMarked = 999'999;  // "999999s " fills the 8-byte format field
constexpr std::size_t kMaxItem = 9'999'999;  // "9999999s"
enum Code : std::int8_t { kValue = 0, kStr = 1, kBytes = 2, kNone = 3 };

[[noreturn]] void corrupt(const char* what) {
  throw std::invalid_argument(std::string("corrupt ShareableList segment: ") + what);
}

template <class T>
T load(std::span<const std::byte> s, std::size_t at) {
  T v;
  std::memcpy(&v, s.data() + at, sizeof v);
  return v;
}
template <class T>
void store(std::span<std::byte> s, std::size_t at, T v) {
  std::memcpy(s.data() + at, &v, sizeof v);
}

std::size_t text_size(const Value& v) {
  if (auto* s = std::get_if<std::string>(&v)) return s->size();
  if (auto* b = std::get_if<std::vector<std::byte>>(&v)) return b->size();
  return 0;
}
bool is_text(const Value& v) {
  return std::holds_alternative<std::string>(v) ||
         std::holds_alternative<std::vector<std::byte>>(v);
}

std::size_t slot_size(const Value& v) {
  if (!is_text(v)) return kAlign;
  const std::size_t n = text_size(v);
  if (n > kMaxItem)
    throw std::invalid_argument("ShareableList: a str/bytes item is limited to 9999999 bytes");
  return kAlign * (n / kAlign + 1);
}

enum class Kind { Int, Double, Bool, None, Text };
struct Format {
  Kind kind = Kind::Int;
  std::size_t n = 0;   // Text: the length in the format
  bool exact = false;  // Text: written by mp with the length marker
};

std::string format_text(std::span<const std::byte> s, std::size_t at) {
  char raw[kFormatSize];
  std::memcpy(raw, s.data() + at, kFormatSize);
  std::size_t len = kFormatSize;
  while (len > 0 && raw[len - 1] == '\0') --len;
  return std::string(raw, len);
}

Format parse(const std::string& f) {
  if (f == "q") return {Kind::Int};
  if (f == "d") return {Kind::Double};
  if (f == "xxxxxxx?") return {Kind::Bool};
  if (f == "xxxxxx?x") return {Kind::None};
  std::size_t digits = 0, n = 0;
  while (digits < f.size() && f[digits] >= '0' && f[digits] <= '9')
    n = n * 10 + static_cast<std::size_t>(f[digits++] - '0');
  if (digits == 0 || digits >= f.size() || f[digits] != 's') corrupt("unknown item format");
  const std::string rest = f.substr(digits + 1);
  if (!rest.empty() && rest != " ") corrupt("unknown item format");
  return {Kind::Text, n, !rest.empty()};
}

std::string format_of(const Value& v) {
  switch (v.index()) {
    case 0:
      return "xxxxxx?x";
    case 1:
      return "xxxxxxx?";
    case 2:
      return "q";
    case 3:
      return "d";
    default: {
      const std::size_t n = text_size(v);
      return std::to_string(n) + (n <= kMaxMarked ? "s " : "s");
    }
  }
}

Code code_of(const Value& v) {
  switch (v.index()) {
    case 0:
      return kNone;
    case 4:
      return kStr;
    case 5:
      return kBytes;
    default:
      return kValue;
  }
}

struct Places {
  std::size_t data = 0, formats = 0, codes = 0;
};
Places places(const Header& h) {
  Places p;
  p.data = kAlign * (h.length + 2);
  p.formats = p.data + h.offsets[h.length];
  p.codes = p.formats + kFormatSize * h.length;
  return p;
}

}  // namespace

std::size_t required_size(const std::vector<Value>& items) {
  std::size_t size = kAlign * (items.size() + 2) + (kFormatSize + 1) * items.size();
  for (const Value& v : items) size += slot_size(v);
  return size;
}

void write_list(std::span<std::byte> segment, const std::vector<Value>& items) {
  Header h;
  h.length = items.size();
  h.offsets.reserve(items.size() + 1);
  h.offsets.push_back(0);
  for (const Value& v : items) h.offsets.push_back(h.offsets.back() + slot_size(v));
  store<std::int64_t>(segment, 0, static_cast<std::int64_t>(h.length));
  for (std::size_t i = 0; i <= h.length; ++i)
    store<std::int64_t>(segment, kAlign * (i + 1), static_cast<std::int64_t>(h.offsets[i]));
  for (std::size_t i = 0; i < h.length; ++i) write_item(segment, h, i, items[i]);
}

Header read_header(std::span<const std::byte> s) {
  if (s.size() < 2 * kAlign) corrupt("too small");
  const std::int64_t n = load<std::int64_t>(s, 0);
  // Each item takes at least an offset, an 8-byte slot, a format and a code.
  if (n < 0 ||
      static_cast<std::uint64_t>(n) > (s.size() - 2 * kAlign) / (kAlign + kAlign + kFormatSize + 1))
    corrupt("bad length");
  Header h;
  h.length = static_cast<std::size_t>(n);
  h.offsets.resize(h.length + 1);
  const std::size_t data = kAlign * (h.length + 2);
  for (std::size_t i = 0; i <= h.length; ++i) {
    const std::int64_t o = load<std::int64_t>(s, kAlign * (i + 1));
    if (o < 0 || (i == 0 && o != 0) ||
        (i > 0 && static_cast<std::uint64_t>(o) < h.offsets[i - 1]) ||
        static_cast<std::uint64_t>(o) > s.size())
      corrupt("bad item offsets");
    h.offsets[i] = static_cast<std::uint64_t>(o);
  }
  if (h.offsets[h.length] > s.size() - data ||
      s.size() - data - h.offsets[h.length] < (kFormatSize + 1) * h.length)
    corrupt("item offsets past the end");
  return h;
}

std::string read_format(std::span<const std::byte> s, const Header& h, std::size_t i) {
  if (i >= h.length) throw std::out_of_range("Requested position out of range.");
  std::string f = format_text(s, places(h).formats + kFormatSize * i);
  const Format parsed = parse(f);
  if (parsed.exact) f.pop_back();
  return f;
}

Value read_item(std::span<const std::byte> s, const Header& h, std::size_t i) {
  if (i >= h.length) throw std::out_of_range("index out of range");
  const Places p = places(h);
  const Format f = parse(format_text(s, p.formats + kFormatSize * i));
  const auto code = load<std::int8_t>(s, p.codes + i);
  const std::size_t begin = p.data + h.offsets[i];
  const std::size_t slot = h.offsets[i + 1] - h.offsets[i];
  if (f.kind == Kind::Text ? f.n > slot : slot < kAlign) corrupt("item larger than its slot");
  if (code == kNone) return std::monostate{};
  if (code == kValue) {
    switch (f.kind) {
      case Kind::Int:
        return load<std::int64_t>(s, begin);
      case Kind::Double:
        return load<double>(s, begin);
      case Kind::Bool:
        return load<std::uint8_t>(s, begin + 7) != 0;
      case Kind::None:
        return load<std::uint8_t>(s, begin + 6) != 0;  // CPython: unpacks the bool
      case Kind::Text: {
        std::vector<std::byte> b(s.begin() + static_cast<std::ptrdiff_t>(begin),
                                 s.begin() + static_cast<std::ptrdiff_t>(begin + f.n));
        return b;
      }
    }
  }
  if ((code != kStr && code != kBytes) || f.kind != Kind::Text) corrupt("bad type code");
  std::size_t n = f.n;
  if (!f.exact && n == slot)  // written by CPython: NUL padding up to the slot's end
    while (n > 0 && s[begin + n - 1] == std::byte{0}) --n;
  const auto* first = reinterpret_cast<const char*>(s.data() + begin);
  if (code == kStr) return std::string(first, n);
  return std::vector<std::byte>(s.begin() + static_cast<std::ptrdiff_t>(begin),
                                s.begin() + static_cast<std::ptrdiff_t>(begin + n));
}

void write_item(std::span<std::byte> s, const Header& h, std::size_t i, const Value& v) {
  if (i >= h.length) throw std::out_of_range("assignment index out of range");
  const Places p = places(h);
  const std::size_t begin = p.data + h.offsets[i];
  const std::size_t slot = h.offsets[i + 1] - h.offsets[i];
  const std::size_t n = text_size(v);
  if (is_text(v) ? n > slot : slot < kAlign)
    throw std::invalid_argument("bytes/str item exceeds available storage");
  if (n > kMaxItem)
    throw std::invalid_argument("ShareableList: a str/bytes item is limited to 9999999 bytes");
  const std::string f = format_of(v);
  char raw[kFormatSize] = {};
  std::memcpy(raw, f.data(), f.size());
  std::memcpy(s.data() + p.formats + kFormatSize * i, raw, kFormatSize);
  store<std::int8_t>(s, p.codes + i, code_of(v));
  std::memset(s.data() + begin, 0, slot);
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, bool>) {
          store<std::uint8_t>(s, begin + 7, x ? 1 : 0);
        } else if constexpr (std::is_same_v<T, std::int64_t> || std::is_same_v<T, double>) {
          store<T>(s, begin, x);
        } else if constexpr (std::is_same_v<T, std::string> ||
                             std::is_same_v<T, std::vector<std::byte>>) {
          if (!x.empty()) std::memcpy(s.data() + begin, x.data(), x.size());
        }
      },
      v);
}

}  // namespace mp::detail::shareable_list
