// Fuzz target: the manager wire format after the handshake (lib/managers_wire.cpp,
// lib/managers_server.cpp; CPython: managers.py Server.serve_client / dispatch). Frames are the
// connection layer's (fuzz_connection covers their reader); this target feeds their bodies.
// The first byte selects the side:
//   even: the server. The rest is a sequence of frames (u32 length, bytes; the last may be
//         truncated); each body is decoded and executed in order by one fresh server core holding
//         the built-in types (create, call, incref, decref, ...), as one connection.
//   odd:  the client. The rest is a response body, decoded as a client does (result, or the
//         remote exception rethrown).
// Contract: a bad request becomes an error response, never a crash, and every response decodes;
// a bad response throws UnpicklingError or the remote error types. Calls that block by design
// (`acquire`, `wait`: a client may ask the server to wait forever) are not executed, to keep the
// run bounded.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "managers_server.hpp"
#include "managers_wire.hpp"
#include "mp/errors.hpp"

namespace {

// A request the server would wait on indefinitely (by design, not a decoding issue).
bool blocks(std::string_view frame) {
  if (frame.size() < 13 || frame[0] != 1) return false;  // Op::call
  std::uint32_t n = 0;
  std::memcpy(&n, frame.data() + 9, 4);
  const std::string_view name = frame.substr(13, n);
  return name == "acquire" || name == "wait";
}

void decode(std::string response) {
  try {
    (void)mp::managers::detail::wire::decode_response(std::move(response));
  } catch (const mp::UnpicklingError&) {
  } catch (const mp::RemoteError&) {
  } catch (const mp::LookupError&) {
  } catch (const mp::Empty&) {
  } catch (const mp::Full&) {
  } catch (const mp::BrokenBarrierError&) {
  } catch (const mp::TimeoutError&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const char* pos = reinterpret_cast<const char*>(data) + 1;
  const char* end = reinterpret_cast<const char*>(data) + size;
  if (data[0] % 2 == 0) {
    mp::managers::detail::ServerCore core("fuzz");
    while (end - pos >= 4) {
      std::uint32_t n = 0;
      std::memcpy(&n, pos, 4);
      pos += 4;
      if (n > mp::managers::detail::wire::kMaxFrame) break;  // the connection refuses it
      const std::string_view body(pos,
                                  std::min<std::size_t>(n, static_cast<std::size_t>(end - pos)));
      pos += body.size();
      if (blocks(body)) continue;
      bool stop = false;
      decode(core.respond(body, 0, stop));  // what the server sends must decode
    }
  } else {
    decode(std::string(pos, end));
  }
  return 0;
}
