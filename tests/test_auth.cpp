// The authkey handshake (lib/support/auth.hpp; CPython: connection.deliver_challenge/answer_challenge)
// over a connected pair (a socketpair; a duplex pipe on Windows), one side per thread: right and wrong keys, empty keys, hostile frames, and
// the constant-time compare.
#include "support/auth.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <fstream>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "mp_test.hpp"
#include "platform/handle.hpp"
#include "platform/io.hpp"

namespace {

using namespace std::chrono_literals;

// One end of a connected pair (platform::socket_pair: a socketpair on POSIX, a duplex pipe on
// Windows) as an auth::Channel. Every read is bounded: a stuck handshake fails the test instead
// of hanging it.
class SocketEnd {
 public:
  explicit SocketEnd(mp::platform::Handle h) : h_(h) {
    ch_.write_all = [this](const void* p, std::size_t n) { mp::platform::write_all(h_, p, n); };
    ch_.read_exact = [this](void* p, std::size_t n) {
      const auto deadline = mp::platform::Clock::now() + 10s;
      for (char* c = static_cast<char*>(p); n > 0;) {
        const std::size_t r = mp::platform::read_some_until(h_, c, n, deadline);
        if (r == 0) throw mp::EOFError();
        c += r;
        n -= r;
      }
    };
  }
  ~SocketEnd() { close(); }
  void close() { mp::platform::close_handle(std::exchange(h_, mp::platform::kInvalidHandle)); }
  mp::auth::Channel& channel() { return ch_; }
  // Writes raw bytes (a hostile peer's frames).
  void send(const void* p, std::size_t n) { mp::platform::write_all(h_, p, n); }
  // Whether anything (bytes or end of file) can be read now.
  bool readable() const {
    const mp::platform::Nanos now{0};
    return mp::platform::wait_readable(h_, &now);
  }

 private:
  mp::platform::Handle h_;
  mp::auth::Channel ch_;
};

struct Pair {
  std::unique_ptr<SocketEnd> server, client;
  Pair() {
    const auto [a, b] = mp::platform::socket_pair();
    server = std::make_unique<SocketEnd>(a);
    client = std::make_unique<SocketEnd>(b);
  }
};

struct Outcome {
  bool handler_ran = false;  // the code after a successful handshake ("the handler")
  std::exception_ptr error;
};

// Runs the server handshake on a thread and the client on this one; each side runs its
// "handler" only if its handshake succeeded. A failing side closes its end (as a connection
// would), so the other side never waits for a message that will not come.
std::pair<Outcome, Outcome> handshake(const std::string& server_key,
                                      const std::string& client_key) {
  Pair p;
  Outcome server, client;
  std::thread t([&] {
    try {
      mp::auth::serve_handshake(p.server->channel(), server_key);
      server.handler_ran = true;
    } catch (...) {
      server.error = std::current_exception();
      p.server->close();
    }
  });
  try {
    mp::auth::client_handshake(p.client->channel(), client_key);
    client.handler_ran = true;
  } catch (...) {
    client.error = std::current_exception();
    p.client->close();
  }
  t.join();
  return {server, client};
}

bool is_auth_error(const std::exception_ptr& e) {
  if (!e) return false;
  try {
    std::rethrow_exception(e);
  } catch (const mp::AuthenticationError&) {
    return true;
  } catch (...) {
    return false;
  }
}

bool is_auth_or_eof(const std::exception_ptr& e) {
  if (!e) return false;
  try {
    std::rethrow_exception(e);
  } catch (const mp::AuthenticationError&) {
    return true;
  } catch (const mp::EOFError&) {
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace

TEST(Auth, SameKeyAuthenticatesBothSides) {
  auto [server, client] = handshake("secret key", "secret key");
  EXPECT_FALSE(server.error);
  EXPECT_FALSE(client.error);
  EXPECT_TRUE(server.handler_ran);
  EXPECT_TRUE(client.handler_ran);
}

// Guarantee: a wrong key runs no handler on either side; the side that checks the digest raises
// AuthenticationError, the other side AuthenticationError (or EOFError if the peer hung up).
TEST(Auth, WrongKeyFailsOnBothSides) {
  auto [server, client] = handshake("server key", "client key");
  EXPECT_FALSE(server.handler_ran);
  EXPECT_FALSE(client.handler_ran);
  EXPECT_TRUE(is_auth_error(server.error)) << "the server must detect the wrong digest";
  EXPECT_TRUE(is_auth_or_eof(client.error));
}

// The client checks the server too (mutual): a server that answers the client's challenge with
// the wrong key is refused by the client even if it let the client in.
TEST(Auth, ClientRefusesServerWithWrongKey) {
  Pair p;
  std::atomic<bool> client_in{false};
  std::thread t([&] {
    try {
      // A server that accepts anyone, then answers with another key.
      mp::auth::Channel& ch = p.server->channel();
      // deliver_challenge with the client's key would pass; use the other key for the answer.
      mp::auth::deliver_challenge(ch, "client key");
      mp::auth::answer_challenge(ch, "impostor key");
    } catch (...) {
      p.server->close();
    }
  });
  try {
    mp::auth::client_handshake(p.client->channel(), "client key");
    client_in = true;
  } catch (const mp::AuthenticationError&) {
  } catch (const mp::EOFError&) {
  }
  p.client->close();
  t.join();
  EXPECT_FALSE(client_in.load());
}

// Guarantee: an empty key is refused before anything is sent (CPython: AuthenticationError).
TEST(Auth, EmptyKeyIsRefused) {
  Pair p;
  EXPECT_THROW(mp::auth::serve_handshake(p.server->channel(), ""), mp::AuthenticationError);
  EXPECT_THROW(mp::auth::client_handshake(p.client->channel(), ""), mp::AuthenticationError);
  // Nothing was written by either side.
  EXPECT_FALSE(p.client->readable());
  EXPECT_FALSE(p.server->readable());
}

// Guarantee: a hostile length is refused before allocating (frames are capped at kMaxFrame).
TEST(Auth, OversizedFrameIsRefusedBeforeAllocation) {
  Pair p;
  const std::uint32_t huge = 0xFFFFFFF0u;
  p.server->send(&huge, sizeof huge);
  EXPECT_THROW(mp::auth::answer_challenge(p.client->channel(), "key"), mp::AuthenticationError);
}

TEST(Auth, GarbageChallengeIsAProtocolError) {
  Pair p;
  const std::string body = "#CHALLENGE#short";
  const auto n = static_cast<std::uint32_t>(body.size());
  p.server->send(&n, sizeof n);
  p.server->send(body.data(), body.size());
  EXPECT_THROW(mp::auth::answer_challenge(p.client->channel(), "key"), mp::AuthenticationError);
}

TEST(Auth, PeerHangingUpIsEof) {
  Pair p;
  p.server->close();
  EXPECT_THROW(mp::auth::answer_challenge(p.client->channel(), "key"), mp::EOFError);
}

TEST(Auth, HmacMatchesRfc4231) {
  // RFC 4231 test case 2.
  const std::string mac = mp::auth::hmac_sha256("Jefe", "what do ya want for nothing?");
  static const char* expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
  std::string hex;
  for (unsigned char c : mac) {
    static const char d[] = "0123456789abcdef";
    hex += d[c >> 4];
    hex += d[c & 15];
  }
  EXPECT_EQ(hex, expected);
}

TEST(Auth, ConstantTimeEqualIsCorrect) {
  EXPECT_TRUE(mp::auth::constant_time_equal("", ""));
  EXPECT_TRUE(mp::auth::constant_time_equal("abc", "abc"));
  EXPECT_FALSE(mp::auth::constant_time_equal("abc", "abd"));
  EXPECT_FALSE(mp::auth::constant_time_equal("abc", "ab"));
  EXPECT_FALSE(mp::auth::constant_time_equal(std::string("a\0b", 3), std::string("a\0c", 3)));
}

// Guarantee: digests are compared in constant time. A comparison that stops at the first
// difference is ~1000× faster on 1 MiB strings that differ in their first byte than on strings
// that differ in their last; the constant-time compare takes the same time for both. The bound
// (3×, the fastest of 41 runs each, alternating) tolerates a loaded machine.
TEST(Auth, CompareTimeDoesNotDependOnWhereStringsDiffer) {
  const std::string a(1 << 20, 'x');
  std::string first = a, last = a;
  first.front() = 'y';
  last.back() = 'y';
  auto time_of = [&](const std::string& b) {
    const auto t0 = std::chrono::steady_clock::now();
    const bool eq = mp::auth::constant_time_equal(a, b);
    const auto t1 = std::chrono::steady_clock::now();
    EXPECT_FALSE(eq);
    return std::chrono::duration<double, std::micro>(t1 - t0).count();
  };
  // The two kinds alternate, so a change in the host's load affects both alike.
  std::vector<double> firsts, lasts;
  for (int i = 0; i < 41; ++i) {
    firsts.push_back(time_of(first));
    lasts.push_back(time_of(last));
  }
  // The fastest of each: preemption on a loaded host only ever adds time.
  const double t_first = *std::min_element(firsts.begin(), firsts.end());
  const double t_last = *std::min_element(lasts.begin(), lasts.end());
  RecordProperty("compare_first_us", std::to_string(t_first));
  RecordProperty("compare_last_us", std::to_string(t_last));
  EXPECT_LT(t_last / t_first, 3.0)
      << "first-byte difference " << t_first << " µs, last-byte " << t_last << " µs";
  EXPECT_LT(t_first / t_last, 3.0);
}

#ifndef _WIN32  // HMAC is BCrypt's on Windows: an OS library, no libcrypto to load late
namespace {
bool libcrypto_mapped() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line))
    if (line.find("libcrypto") != std::string::npos) return true;
  return false;
}
// Exits with bit 0: libcrypto mapped at start; bit 1: mapped after an HMAC (which must be right).
void report_libcrypto() {
  int code = libcrypto_mapped() ? 1 : 0;
  if (mp::auth::hmac_sha256("Jefe", "what do ya want for nothing?").size() != 32) std::exit(8);
  code |= libcrypto_mapped() ? 2 : 0;
  std::exit(code);
}
}  // namespace

// libcrypto is loaded on the first handshake, not at start-up (lib/support/auth.cpp): a spawned child,
// which is this program started afresh, has not mapped it until it computes an HMAC.
TEST(Auth, LibcryptoIsLoadedOnFirstUse) {
  mp::Process p(mp::get_context("spawn"), report_libcrypto);
  p.start();
  mp_test::join_or_fail(p);
  EXPECT_EQ(p.exitcode(), 2);
}
#endif
