// Fuzz target: the spawn preparation data (lib/spawn_data.hpp, CPython: spawn.prepare's data), as
// a spawned child decodes it from the shared memory its parent filled. Contract: decodes or throws
// mp::UnpicklingError; no crash or sanitizer report. The first byte chooses whether the input is
// taken as a whole message (type tag included) or as a payload behind the right tag.
#include "fuzz_common.hpp"
#include "spawn_data.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] & 1) {
    try {
      (void)mp::reduction::loads<mp::detail::PreparationData>(in);
    } catch (const mp::UnpicklingError&) {
    }
  } else {
    mp_fuzz::decode_as<mp::detail::PreparationData>(in);
  }
  return 0;
}
