// Fuzz target: the items of a pool chunk (mp/pool_jobs.hpp: ItemReader, [u32 count] then each
// value, raw values as their bytes), as the parent decodes a worker's results and as a worker
// decodes a chunk's arguments.
//   byte 0: the decoder. 0-6: the parent's results, decode_values<T> with T = long,
//           std::pair<int, double>, std::string, std::vector<int>, std::tuple<std::string, long>,
//           std::optional<std::string>, Nothing (a void task); 7-9: a worker's run_chunk with
//           arguments (long), (std::string), (std::vector<int>, int).
//   bytes 1-2: the number of results the parent expects (u16, little-endian); parent side only.
//   the rest: the chunk's bytes.
// Contract: decodes, or throws mp::UnpicklingError; what decoded encodes again to bytes that
// decode to the same encoding.
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "mp/pool_jobs.hpp"

namespace {

using mp::detail::pool::ItemReader;
using mp::detail::pool::ItemWriter;
using mp::detail::pool::Nothing;
using mp::detail::pool::Outcome;

template <class T>
std::string encode(const std::vector<T>& values) {
  std::string out;
  ItemWriter w(out);
  w.count(static_cast<std::uint32_t>(values.size()));
  for (const T& v : values) w.write(v);
  return out;
}

// The parent: a chunk's results as decode_values reads them, then in place as map() does.
template <class T>
void parent(const std::string& bytes, std::size_t expected) {
  Outcome o;
  o.ok = true;
  o.bytes = bytes;
  std::vector<T> values;
  try {
    values = mp::detail::pool::decode_values<T>(o, expected);
  } catch (const mp::UnpicklingError&) {
    return;
  }
  if (values.size() != expected) __builtin_trap();
  const std::string again = encode(values);
  Outcome o2;
  o2.ok = true;
  o2.bytes = again;
  if (encode(mp::detail::pool::decode_values<T>(o2, expected)) != again) __builtin_trap();
  // In place (map(): decode_into), the same bytes.
  if constexpr (std::is_default_constructible_v<T>) {
    std::vector<T> dst(expected);
    ItemReader in(bytes.data(), bytes.size());
    if (in.count() != expected) __builtin_trap();
    in.read_into(dst.data(), expected);
    in.finish();
  }
}

long neg(long x) { return ~x; }
std::string twice(std::string s) { return s + s; }
std::size_t total(std::vector<int> v, int k) { return v.size() ^ static_cast<std::size_t>(k); }

// A worker: run_chunk decodes the arguments and writes one result per item.
template <class Fn, class Args>
void worker(Fn fn, const std::string& bytes) {
  std::string out;
  try {
    mp::detail::pool::run_chunk<Fn, Args>(reinterpret_cast<mp::detail::AnyFunction>(fn),
                                          bytes.data(), bytes.size(), out);
  } catch (const mp::UnpicklingError&) {
    return;
  }
  std::uint32_t n = 0, m = 0;
  std::memcpy(&n, bytes.data(), sizeof n);
  if (out.size() < sizeof m) __builtin_trap();
  std::memcpy(&m, out.data(), sizeof m);
  if (m != n) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 3) return 0;
  const std::size_t expected = data[1] | (std::size_t{data[2]} << 8);
  const std::string bytes(reinterpret_cast<const char*>(data) + 3, size - 3);
  switch (data[0] % 10) {
    case 0:
      parent<long>(bytes, expected);
      break;
    case 1:
      parent<std::pair<int, double>>(bytes, expected);
      break;
    case 2:
      parent<std::string>(bytes, expected);
      break;
    case 3:
      parent<std::vector<int>>(bytes, expected);
      break;
    case 4:
      parent<std::tuple<std::string, long>>(bytes, expected);
      break;
    case 5:
      parent<std::optional<std::string>>(bytes, expected);
      break;
    case 6:
      parent<Nothing>(bytes, expected);
      break;
    case 7:
      worker<long (*)(long), std::tuple<long>>(&neg, bytes);
      break;
    case 8:
      worker<std::string (*)(std::string), std::tuple<std::string>>(&twice, bytes);
      break;
    case 9:
      worker<std::size_t (*)(std::vector<int>, int), std::tuple<std::vector<int>, int>>(&total,
                                                                                        bytes);
      break;
  }
  return 0;
}
