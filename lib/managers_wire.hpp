// Internal: the manager wire protocol's decoders (lib/managers.cpp), exposed for the fuzz targets
// (fuzz/fuzz_managers.cpp) only. Not part of the public API.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mp::managers::detail::wire {

// Reads one frame (u32 length, then the bytes) from a stream socket, as both sides do. Throws
// UnpicklingError for a frame over the 256 MiB cap (before allocating) or trailing bytes,
// EOFError/OSError when the stream ends.
std::string recv_frame(std::intptr_t fd);
// Decodes a response body as a client does: the result bytes, or throws the remote error
// (RemoteError, Empty, Full, BrokenBarrierError, TimeoutError) or UnpicklingError.
std::string decode_response(std::string response);
// Decodes and executes request bodies in turn as one connection of a fresh server (the built-in
// types; no handshake, no socket) and returns the response bodies. Never throws for bad input:
// errors become error responses, as on the wire.
std::vector<std::string> serve_requests(const std::vector<std::string>& frames);

}  // namespace mp::managers::detail::wire
