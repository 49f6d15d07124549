// Fuzz target: the authkey handshake framing (lib/support/auth.hpp, CPython: deliver_challenge /
// answer_challenge) against a hostile peer whose bytes are the fuzz input. Contract: the
// handshake succeeds only if the peer knows the key, else throws mp::AuthenticationError or
// mp::EOFError (input exhausted); frames are capped before allocation. Modes 4-5 feed the
// Handshake state machine directly (as lib/support/acceptor.cpp does), in pieces whose sizes come from the
// input: it never takes more than wanted(), and fails instead of throwing.
#include <algorithm>
#include <cstring>
#include <string>

#include "support/auth.hpp"
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
    switch (data[0] % 6) {
      case 0:
        mp::auth::answer_challenge(ch, key);
        break;
      case 1:
        mp::auth::deliver_challenge(ch, key);
        break;
      case 2:
        mp::auth::serve_handshake(ch, key);
        break;
      case 3:
        mp::auth::client_handshake(ch, key);
        break;
      default: {
        mp::auth::Handshake h(key, data[0] % 6 == 4 ? mp::auth::Handshake::Role::server
                                                    : mp::auth::Handshake::Role::client);
        while (pos < end && h.wanted() > 0) {
          const std::size_t piece =
              std::min<std::size_t>({static_cast<std::size_t>(*pos++ % 8 + 1), h.wanted(),
                                     static_cast<std::size_t>(end - pos)});
          h.feed(reinterpret_cast<const char*>(pos), piece);
          pos += piece;
          h.output().clear();
        }
        if (h.succeeded()) __builtin_trap();  // nobody in the input knows the key's answers
        break;
      }
    }
  } catch (const mp::AuthenticationError&) {
  } catch (const mp::EOFError&) {
  }
  return 0;
}
