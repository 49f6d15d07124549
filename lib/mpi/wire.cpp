// The executor's messages (wire.hpp): fixed little headers, checked lengths.
#include "wire.hpp"

#include <climits>
#include <cstring>

#include "mp/errors.hpp"

namespace mp::mpi::wire {
namespace {

template <class T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

// Reads fixed-size fields from the front of `rest`.
struct Reader {
  std::string_view rest;
  const char* what;
  template <class T>
  T take() {
    if (rest.size() < sizeof(T))
      throw UnpicklingError(std::string("corrupt data: truncated ") + what + " message");
    T v;
    std::memcpy(&v, rest.data(), sizeof v);
    rest.remove_prefix(sizeof v);
    return v;
  }
};

}  // namespace

std::string encode_define(std::uint32_t fn, std::string_view runner, std::string_view function) {
  std::string out;
  out.reserve(8 + runner.size() + function.size());
  put(out, fn);
  put(out, static_cast<std::uint32_t>(runner.size()));
  out.append(runner);
  out.append(function);
  return out;
}

void append_task_header(std::string& out, std::uint64_t id, std::uint32_t fn) {
  out.resize(out.size() + kTaskHeader);
  put_task_header(out.data() + out.size() - kTaskHeader, id, fn);
}

void put_task_header(char* p, std::uint64_t id, std::uint32_t fn) {
  std::memcpy(p, &id, 8);
  std::memcpy(p + 8, &fn, 4);
}

void put_result_header(std::string& out, std::uint64_t id, bool ok, std::uint64_t ns) {
  if (out.size() < kResultHeader) out.resize(kResultHeader);
  char* p = out.data();
  std::memcpy(p, &id, 8);
  p[8] = ok ? 1 : 0;
  std::memcpy(p + 9, &ns, 8);
}

Define decode_define(std::string_view bytes) {
  Reader r{bytes, "define"};
  Define d;
  d.fn = r.take<std::uint32_t>();
  const auto n = r.take<std::uint32_t>();
  if (n > r.rest.size()) throw UnpicklingError("corrupt data: truncated define message");
  d.runner = r.rest.substr(0, n);
  d.function = r.rest.substr(n);
  return d;
}

Task decode_task(std::string_view bytes) {
  Reader r{bytes, "task"};
  Task t;
  t.id = r.take<std::uint64_t>();
  t.fn = r.take<std::uint32_t>();
  t.args = r.rest;
  return t;
}

Result decode_result(std::string_view bytes) {
  Reader r{bytes, "result"};
  Result res;
  res.id = r.take<std::uint64_t>();
  const auto ok = r.take<std::uint8_t>();
  if (ok > 1) throw UnpicklingError("corrupt data: bad result flag");
  res.ok = ok == 1;
  res.ns = r.take<std::uint64_t>();
  res.body = r.rest;
  return res;
}

Large decode_large(std::string_view bytes) {
  Reader r{bytes, "large"};
  Large l;
  l.tag = r.take<std::int32_t>();
  l.size = r.take<std::uint64_t>();
  if (!r.rest.empty()) throw UnpicklingError("corrupt data: trailing bytes in a large message");
  if (l.tag != kDefine && l.tag != kTask)
    throw UnpicklingError("corrupt data: bad tag in a large message");
  if (l.size <= kPostedBytes || l.size > static_cast<std::uint64_t>(INT_MAX))
    throw UnpicklingError("corrupt data: bad size in a large message");
  return l;
}

void put_large(char* p, std::int32_t tag, std::uint64_t size) {
  std::memcpy(p, &tag, 4);
  std::memcpy(p + 4, &size, 8);
}

Hello decode_hello(std::string_view bytes) {
  Reader r{bytes, "hello"};
  Hello h;
  h.pid = r.take<std::int32_t>();
  if (h.pid <= 0) throw UnpicklingError("corrupt data: bad pid in a hello message");
  h.host = r.rest;
  return h;
}

std::string encode_hello(std::int32_t pid, std::string_view host) {
  std::string out;
  put(out, pid);
  out.append(host);
  return out;
}

}  // namespace mp::mpi::wire
