// Fuzz target: connection framing (mp/connection.hpp, CPython: Connection._recv_bytes / recv).
// The input after the first byte is written into one end of a socket pair exactly as a peer
// process would write it, then closed; the other end reads messages until EOF. The first byte
// selects the reader: 0 recv_bytes(), 1 recv_bytes(maxlength 1000), 2 recv<std::string>(),
// 3 recv<std::vector<int>>(), 4 recv_bytes_into(a 256-byte buffer), 5 recv with
// max_message_size 4096. Contract: each message decodes, or throws EOFError (end of input),
// OSError (message longer than the maximum), UnpicklingError (not a value of the type) or
// BufferTooShort; a bogus length never makes the receiver allocate more than was sent.
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "mp/connection.hpp"
#include "mp/errors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  auto [writer, reader] = mp::Pipe(true);
  // The input is at most -max_len (64 KiB), below a Unix socket pair's buffer: no reader needed.
  const int fd = static_cast<int>(writer.fileno());
  std::size_t off = 1;
  while (off < size) {
    const ssize_t n = ::send(fd, data + off, size - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += static_cast<std::size_t>(n);
  }
  writer.close();
  const int mode = data[0] % 6;
  if (mode == 5) reader.set_max_message_size(4096);
  std::array<std::byte, 256> buf{};
  for (int i = 0; i < 1000; ++i) {  // every message in the input, then EOF
    try {
      switch (mode) {
        case 0: (void)reader.recv_bytes(); break;
        case 1: (void)reader.recv_bytes(1000); break;
        case 2: (void)reader.recv<std::string>(); break;
        case 3: (void)reader.recv<std::vector<int>>(); break;
        case 4: (void)reader.recv_bytes_into(std::span<std::byte>(buf), 8); break;
        case 5: (void)reader.recv<std::vector<std::string>>(); break;
      }
    } catch (const mp::EOFError&) {
      break;
    } catch (const mp::BufferTooShort&) {
    } catch (const mp::UnpicklingError&) {
    } catch (const mp::OSError&) {
      break;  // a message over the maximum closes the connection (as CPython)
    }
  }
  return 0;
}
