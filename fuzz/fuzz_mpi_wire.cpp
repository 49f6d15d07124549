// Fuzz target: the messages between an MPIPoolExecutor and its worker ranks (lib/mpi/wire.hpp),
// as a worker decodes a define, task or large-message announcement and the client a result or hello. The first byte picks the
// decoder. Contract: each decoder returns views inside the input or throws mp::UnpicklingError;
// nothing else escapes, nothing is read out of bounds. What decodes is encoded again and must
// decode to the same fields.
#include <cstring>
#include <string>
#include <string_view>

#include "mp/errors.hpp"
#include "mpi/wire.hpp"

namespace wire = mp::mpi::wire;

namespace {
bool inside(std::string_view part, std::string_view whole) {
  return part.empty() ||
         (part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size());
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    switch (data[0] % 5) {
      case 0: {
        const wire::Define d = wire::decode_define(in);
        if (!inside(d.runner, in) || !inside(d.function, in)) __builtin_trap();
        const std::string again = wire::encode_define(d.fn, d.runner, d.function);
        const wire::Define e = wire::decode_define(again);
        if (e.fn != d.fn || e.runner != d.runner || e.function != d.function) __builtin_trap();
        break;
      }
      case 1: {
        const wire::Task t = wire::decode_task(in);
        if (!inside(t.args, in)) __builtin_trap();
        std::string again;
        wire::append_task_header(again, t.id, t.fn);
        again.append(t.args);
        const wire::Task u = wire::decode_task(again);
        if (u.id != t.id || u.fn != t.fn || u.args != t.args) __builtin_trap();
        break;
      }
      case 2: {
        const wire::Result r = wire::decode_result(in);
        if (!inside(r.body, in)) __builtin_trap();
        std::string again(wire::kResultHeader, '\0');
        wire::put_result_header(again, r.id, r.ok, r.ns);
        again.append(r.body);
        const wire::Result s = wire::decode_result(again);
        if (s.id != r.id || s.ok != r.ok || s.ns != r.ns || s.body != r.body) __builtin_trap();
        break;
      }
      case 4: {
        const wire::Large l = wire::decode_large(in);
        char again[wire::kLargeHeader];
        wire::put_large(again, l.tag, l.size);
        const wire::Large m = wire::decode_large(std::string_view(again, sizeof again));
        if (m.tag != l.tag || m.size != l.size) __builtin_trap();
        break;
      }
      default: {
        const wire::Hello h = wire::decode_hello(in);
        if (h.pid <= 0 || !inside(h.host, in)) __builtin_trap();
        if (wire::decode_hello(wire::encode_hello(h.pid, h.host)).host != h.host) __builtin_trap();
      }
    }
  } catch (const mp::UnpicklingError&) {
  }
  return 0;
}
