// Internal: the managers' wire format (CPython: the (kind, result) tuples of managers.py's
// dispatch). Frames are the connection layer's (mp::Connection send_bytes/recv_bytes over an
// authenticated Listener/Client socket); these are their bodies, one request then one response:
//   request  = u8 op, u64 object id, u32 name length, name (type id or method name), arguments
//   response = u8 0, result bytes | u8 1, u32 type length, type name, message
// Nothing received is ever used as an address: types and methods are looked up by name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace mp::managers::detail {

enum class Op : std::uint8_t {
  call = 1,
  create = 2,
  incref = 3,
  decref = 4,
  shutdown = 5,
  number_of_objects = 6,
  ping = 7
};

namespace wire {

// A local (Unix-socket) client sends one preamble byte after the handshake: with a Pipe's shared
// memory attached (SCM_RIGHTS), both sides then exchange frames through it as a Pipe() does;
// without, frames go on the socket.
inline constexpr char kPreambleShared = 'M';

inline constexpr std::uint32_t kMaxFrame = 256u << 20;  // 256 MiB, both directions
inline constexpr std::uint32_t kMaxName = 4096;

// Throws std::length_error for a body over kMaxFrame, which the peer would refuse (checked before
// anything is sent).
void check_frame_size(std::size_t size);

// A request body.
std::string encode_request(Op op, std::uint64_t id, std::string_view name, std::string_view args);
struct Request {
  Op op;
  std::uint64_t id;
  std::string_view name;  // views into the decoded body
  std::string_view args;
};
// Throws UnpicklingError for a truncated body or a name over kMaxName.
Request decode_request(std::string_view body);

// Response bodies.
inline constexpr char kOk = '\0';
inline constexpr char kError = '\1';
std::string encode_error(std::string_view type, std::string_view message);
// The result bytes of a response, or throws what it carries: Empty, Full, BrokenBarrierError,
// TimeoutError, KeyError, IndexError as themselves, any other type as RemoteError; a corrupt body
// is UnpicklingError.
std::string decode_response(std::string response);

// Fixed-size integers in host order (both ends run on this machine's architecture).
template <class T>
void put_raw(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}
std::uint64_t get_u64(std::string_view body);  // the whole body; UnpicklingError otherwise

}  // namespace wire
}  // namespace mp::managers::detail
