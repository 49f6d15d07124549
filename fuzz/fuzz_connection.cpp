// Fuzz target: connection framing (mp/connection.hpp, CPython: Connection._recv_bytes / recv).
// The first byte selects the reader (data[0] % 6) and the transport (data[0] / 6 % 2). Transport
// 0: a socket connection (as Listener/Client use) — the input after the first byte is written into
// one end exactly as a peer process would write it, then closed. Transport 1: a Pipe() — the input
// is placed into the shared-memory ring the reader receives from and published as a broken or
// hostile peer could, then the peer's end is closed. The reader reads messages until EOF: 0
// recv_bytes(), 1 recv_bytes(maxlength 1000), 2 recv<std::string>(), 3 recv<std::vector<int>>(),
// 4 recv_bytes_into(a 256-byte buffer), 5 recv with max_message_size 4096. With a Pipe, data[0] /
// 12 % 2 == 1 also places the input's first bytes into the ring's copy of its last small frame
// (PipeRing::copy), as if it held the frame at position 0: the receiver decodes those instead of
// the ring's (the same bytes, unless the input is too short to fill the copy). Contract: each message
// decodes, or throws EOFError (end of input), OSError (message longer than the maximum, corrupt
// frame, end of file mid-message), UnpicklingError (not a value of the type) or BufferTooShort; a
// bogus length never makes the receiver allocate more than was sent.
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "mp/connection.hpp"
#include "mp/errors.hpp"
#include "support/pipe_channel.hpp"

namespace {

std::pair<mp::Connection, mp::Connection> socket_connections() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) __builtin_trap();
  return {mp::Connection(fds[0], true, true), mp::Connection(fds[1], true, true)};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const int mode = data[0] % 6;
  const bool ring = (data[0] / 6) % 2 == 1;
  const bool copy = (data[0] / 12) % 2 == 1;
  auto [writer, reader] = ring ? mp::Pipe(true) : socket_connections();
  if (ring) {
    // The input is at most -max_len (64 KiB), below the ring's size: published in one store.
    mp::detail::PipeChannel* ch = mp::detail::ConnectionAccess::pipe(reader);
    mp::detail::PipeRing& r = mp::detail::PipeChannelAccess::in_ring(*ch);
    const std::size_t n = std::min(size - 1, mp::detail::kPipeRingBytes);
    for (std::size_t i = 0; i < n; ++i)
      mp::detail::PipeChannelAccess::in_data(*ch)[i] = static_cast<char>(data[1 + i]);
    if (copy) {
      std::uint64_t words[mp::detail::kPipeCopyBytes / 8] = {};
      std::memcpy(words, data + 1, std::min(n, sizeof words));
      for (std::size_t i = 0; i < std::size(words); ++i) r.copy[i].store(words[i]);
      r.copy_pos.store(0 | 1);
    }
    r.written.store((n + 7) & ~std::size_t{7});
    r.tail.store((n + 7) & ~std::size_t{7});
  } else {
    // Below a Unix socket pair's buffer: no reader needed.
    const int fd = static_cast<int>(writer.fileno());
    std::size_t off = 1;
    while (off < size) {
      const ssize_t n = ::send(fd, data + off, size - off, MSG_NOSIGNAL);
      if (n <= 0) break;
      off += static_cast<std::size_t>(n);
    }
  }
  writer.close();
  if (mode == 5) reader.set_max_message_size(4096);
  std::array<std::byte, 256> buf{};
  for (int i = 0; i < 1000; ++i) {  // every message in the input, then EOF
    try {
      switch (mode) {
        case 0:
          (void)reader.recv_bytes();
          break;
        case 1:
          (void)reader.recv_bytes(1000);
          break;
        case 2:
          (void)reader.recv<std::string>();
          break;
        case 3:
          (void)reader.recv<std::vector<int>>();
          break;
        case 4:
          (void)reader.recv_bytes_into(std::span<std::byte>(buf), 8);
          break;
        case 5:
          (void)reader.recv<std::vector<std::string>>();
          break;
      }
    } catch (const mp::EOFError&) {
      break;
    } catch (const mp::BufferTooShort&) {
    } catch (const mp::UnpicklingError&) {
    } catch (const mp::OSError&) {
      break;  // a message over the maximum closes the connection (as CPython); a corrupt ring
    }
  }
  return 0;
}
