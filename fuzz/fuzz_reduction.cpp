// Fuzz target: the serialization reader (mp::reduction::loads, CPython: pickle.loads of data
// received from another process). The first byte picks the type; the rest is the payload.
// Contract: any input either decodes or throws mp::UnpicklingError; no crash, no sanitizer
// report, no allocation beyond what the input's length allows.
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <variant>
#include <vector>

#include "fuzz_common.hpp"
#include "mp/heap.hpp"

namespace {

struct UserType {
  std::string label;
  std::vector<double> values;
  std::optional<std::map<int, std::string>> extra;
  template <class A>
  void serialize(A& ar) {
    ar(label, values, extra);
  }
};

struct Raw {  // trivially copyable: the memcpy path
  int a;
  double b;
  char c[5];
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  using namespace mp_fuzz;
  switch (data[0] % 16) {
    case 0:
      decode_as<int>(in);
      break;
    case 1:
      decode_as<double>(in);
      break;
    case 2:
      decode_as<bool>(in);
      break;
    case 3:
      decode_as<std::string>(in);
      break;
    case 4:
      decode_as<std::vector<int>>(in);
      break;
    case 5:
      decode_as<std::vector<std::string>>(in);
      break;
    case 6:
      decode_as<std::map<std::string, int>>(in);
      break;
    case 7:
      decode_as<std::unordered_map<int, std::vector<char>>>(in);
      break;
    case 8:
      decode_as<std::set<std::string>>(in);
      break;
    case 9:
      decode_as<std::tuple<int, std::string, std::optional<double>>>(in);
      break;
    case 10:
      decode_as<std::variant<int, std::string, std::vector<int>>>(in);
      break;
    case 11:
      decode_as<std::vector<std::vector<std::string>>>(in);
      break;
    case 12:
      decode_as<UserType>(in);
      break;
    case 13:
      decode_as<Raw>(in);
      break;
    case 14:
      decode_as<std::pair<bool, std::optional<std::string>>>(in);
      break;
    // A shared object outside a spawn bootstrap: must be refused, never map a random descriptor.
    case 15:
      decode_as<mp::heap::SharedBlock>(in);
      break;
  }
  return 0;
}
