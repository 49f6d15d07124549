// Fuzz target: the manager wire protocol after the handshake (lib/managers.cpp, CPython:
// managers.py Server.serve_client / dispatch). The first byte selects the side:
//   even: the server. The rest is a sequence of frames (u32 length, bytes; the last may be
//         truncated or lie about its length); each is written into a socket pair and read back by
//         the real frame reader, then all the requests are decoded and executed in order by a fresh
//         server holding the built-in types (create, call, incref, decref, ...).
//   odd:  the client. The rest is what a server sends back: read as a frame, then decoded as a
//         response (result, or the remote exception rethrown).
// Contract: frames over the cap are refused before allocation (UnpicklingError); a short stream is
// EOFError/OSError; a bad request becomes an error response, never a crash; a bad response throws
// UnpicklingError or the remote error types. Calls that block by design (`acquire`, `wait`: a
// client may ask the server to wait forever) are not executed, to keep the run bounded.
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "managers_wire.hpp"
#include "mp/connection.hpp"
#include "mp/errors.hpp"

namespace {

void put(mp::Connection& writer, const std::uint8_t* p, std::size_t n) {
  const int fd = static_cast<int>(writer.fileno());
  while (n > 0) {
    const ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL);
    if (k <= 0) return;
    p += k;
    n -= static_cast<std::size_t>(k);
  }
}

// A request the server would wait on indefinitely (by design, not a decoding issue).
bool blocks(const std::string& frame) {
  if (frame.size() < 13 || frame[0] != 1) return false;  // Op::call
  std::uint32_t n = 0;
  std::memcpy(&n, frame.data() + 9, 4);
  const std::string_view name = std::string_view(frame).substr(13, n);
  return name == "acquire" || name == "wait";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t* pos = data + 1;
  const std::uint8_t* end = data + size;
  auto [writer, reader] = mp::Pipe(true);
  const auto fd = reader.fileno();
  if (data[0] % 2 == 0) {
    std::vector<std::string> requests;
    while (end - pos >= 4) {
      std::uint32_t n = 0;
      std::memcpy(&n, pos, 4);
      const std::size_t chunk = 4 + std::min<std::size_t>(n, static_cast<std::size_t>(end - pos) - 4);
      put(writer, pos, chunk);
      pos += chunk;
      if (pos == end) writer.close();  // the last frame may be short: the reader sees EOF
      try {
        std::string frame = mp::managers::detail::wire::recv_frame(fd);
        if (!blocks(frame)) requests.push_back(std::move(frame));
      } catch (const mp::UnpicklingError&) {
        break;  // oversized frame or trailing bytes: the server closes the connection
      } catch (const mp::EOFError&) {
        break;
      } catch (const mp::OSError&) {
        break;
      }
    }
    for (const std::string& r : mp::managers::detail::wire::serve_requests(requests)) {
      try {
        (void)mp::managers::detail::wire::decode_response(r);  // what the server sends must decode
      } catch (const mp::RemoteError&) {
      } catch (const mp::Empty&) {
      } catch (const mp::Full&) {
      } catch (const mp::BrokenBarrierError&) {
      } catch (const mp::TimeoutError&) {
      }
    }
  } else {
    put(writer, pos, static_cast<std::size_t>(end - pos));
    writer.close();
    try {
      (void)mp::managers::detail::wire::decode_response(mp::managers::detail::wire::recv_frame(fd));
    } catch (const mp::UnpicklingError&) {
    } catch (const mp::EOFError&) {
    } catch (const mp::OSError&) {
    } catch (const mp::RemoteError&) {
    } catch (const mp::Empty&) {
    } catch (const mp::Full&) {
    } catch (const mp::BrokenBarrierError&) {
    } catch (const mp::TimeoutError&) {
    }
  }
  return 0;
}
