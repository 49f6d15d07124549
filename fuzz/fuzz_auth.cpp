// Fuzz target: the authkey handshake framing (lib/auth.hpp, CPython: deliver_challenge /
// answer_challenge) against a hostile peer whose bytes are the fuzz input. Contract: the
// handshake succeeds only if the peer knows the key, else throws mp::AuthenticationError or
// mp::EOFError (input exhausted); frames are capped before allocation.
#include <algorithm>
#include <cstring>
#include <string>

#include "auth.hpp"
#include "mp/errors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t* pos = data + 1;
  const std::uint8_t* end = data + size;
  mp::auth::Channel ch;
  ch.write_all = [](const void*, std::size_t) {};  // what we send is dropped
  ch.read_exact = [&](void* out, std::size_t n) {
    if (static_cast<std::size_t>(end - pos) < n) throw mp::EOFError();
    std::memcpy(out, pos, n);
    pos += n;
  };
  const std::string key = "fuzz key";
  try {
    switch (data[0] % 4) {
      case 0: mp::auth::answer_challenge(ch, key); break;
      case 1: mp::auth::deliver_challenge(ch, key); break;
      case 2: mp::auth::serve_handshake(ch, key); break;
      case 3: mp::auth::client_handshake(ch, key); break;
    }
  } catch (const mp::AuthenticationError&) {
  } catch (const mp::EOFError&) {
  }
  return 0;
}
