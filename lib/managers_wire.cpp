// The managers' wire format (lib/managers_wire.hpp).
#include "managers_wire.hpp"

#include <cstring>
#include <stdexcept>

#include "mp/errors.hpp"

namespace mp::managers::detail::wire {
namespace {

template <class T>
T get_raw(std::string_view& in) {
  if (in.size() < sizeof(T)) throw UnpicklingError("truncated manager message");
  T v;
  std::memcpy(&v, in.data(), sizeof v);
  in.remove_prefix(sizeof v);
  return v;
}

std::string_view get_bytes(std::string_view& in, std::uint32_t max) {
  const auto n = get_raw<std::uint32_t>(in);
  if (n > max || n > in.size()) throw UnpicklingError("corrupt manager message: bad length");
  std::string_view s = in.substr(0, n);
  in.remove_prefix(n);
  return s;
}

[[noreturn]] void throw_remote(const std::string& type, const std::string& message) {
  if (type == "mp::Empty") throw Empty();
  if (type == "mp::Full") throw Full();
  if (type == "mp::BrokenBarrierError") throw BrokenBarrierError(message);
  if (type == "mp::TimeoutError") throw TimeoutError(message);
  if (type == "mp::KeyError") throw KeyError(message);
  if (type == "mp::IndexError") throw IndexError(message);
  throw RemoteError(type, message);
}

}  // namespace

void check_frame_size(std::size_t size) {
  if (size > kMaxFrame)
    throw std::length_error("manager message of " + std::to_string(size) +
                            " bytes exceeds the limit of " + std::to_string(kMaxFrame));
}

std::string encode_request(Op op, std::uint64_t id, std::string_view name, std::string_view args) {
  std::string out;
  out.reserve(1 + 8 + 4 + name.size() + args.size());
  put_raw(out, static_cast<std::uint8_t>(op));
  put_raw(out, id);
  put_raw(out, static_cast<std::uint32_t>(name.size()));
  out += name;
  out += args;
  return out;
}

Request decode_request(std::string_view in) {
  Request r{};
  r.op = static_cast<Op>(get_raw<std::uint8_t>(in));
  r.id = get_raw<std::uint64_t>(in);
  r.name = get_bytes(in, kMaxName);
  r.args = in;
  return r;
}

std::string encode_error(std::string_view type, std::string_view message) {
  std::string out(1, kError);
  put_raw(out, static_cast<std::uint32_t>(type.size()));
  out += type;
  out += message;
  return out;
}

std::string decode_response(std::string response) {
  std::string_view in(response);
  const auto status = get_raw<std::uint8_t>(in);
  if (status == kOk) return response.substr(1);
  if (status != kError) throw UnpicklingError("corrupt manager response: bad status");
  const std::string type(get_bytes(in, kMaxName));
  throw_remote(type, std::string(in));
}

std::uint64_t get_u64(std::string_view body) {
  if (body.size() != sizeof(std::uint64_t)) throw UnpicklingError("corrupt manager response");
  return get_raw<std::uint64_t>(body);
}

}  // namespace mp::managers::detail::wire
