// The authkey handshake (lib/support/auth.hpp; CPython: connection.deliver_challenge/answer_challenge)
// over a connected pair (a socketpair; a duplex pipe on Windows), one side per thread: right and wrong keys, empty keys, hostile frames, and
// the constant-time compare.
#include "support/auth.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <future>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "mp_test.hpp"
#include "platform/handle.hpp"
#include "platform/io.hpp"
#include "platform/system.hpp"
#include "support/sha256.hpp"

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

std::string hex(const std::string& bytes) {
  return mp::platform::to_hex(bytes.data(), bytes.size());
}
std::string hex(const mp::detail::Sha256Digest& d) {
  return mp::platform::to_hex(d.data(), d.size());
}
std::string hmac_hex(const std::string& key, const std::string& message) {
  return hex(mp::auth::hmac_sha256(key, message));
}

// FIPS 180-2's examples (appendix B), and lengths around the padding's block boundaries (55 and
// 56 bytes: the length still fits / no longer fits the last block) against CPython's hashlib.
TEST(Auth, Sha256MatchesKnownAnswers) {
  using mp::detail::sha256;
  EXPECT_EQ(hex(sha256(nullptr, 0)),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(hex(sha256("abc", 3)),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  EXPECT_EQ(hex(sha256(two_blocks.data(), two_blocks.size())),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const std::string million(1'000'000, 'a');
  EXPECT_EQ(hex(sha256(million.data(), million.size())),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  const std::pair<std::size_t, const char*> lengths[] = {
      {55, "463eb28e72f82e0a96c0a4cc53690c571281131f672aa229e0d45ae59b598b59"},
      {56, "da2ae4d6b36748f2a318f23e7ab1dfdf45acdc9d049bd80e59de82a60895f562"},
      {63, "29af2686fd53374a36b0846694cc342177e428d1647515f078784d69cdb9e488"},
      {64, "fdeab9acf3710362bd2658cdc9a29e8f9c757fcf9811603a8c447cd1d9151108"},
      {65, "4bfd2c8b6f1eec7a2afeb48b934ee4b2694182027e6d0fc075074f2fabb31781"},
      {119, "da18797ed7c3a777f0847f429724a2d8cd5138e6ed2895c3fa1a6d39d18f7ec6"},
      {120, "f52b23db1fbb6ded89ef42a23ce0c8922c45f25c50b568a93bf1c075420bbb7c"},
      {128, "471fb943aa23c511f6f72f8d1652d9c880cfa392ad80503120547703e56a2be5"}};
  for (const auto& [n, expected] : lengths) {
    std::string m;
    for (std::size_t i = 0; i < n; ++i) m.push_back(static_cast<char>(i % 251));
    EXPECT_EQ(hex(sha256(m.data(), m.size())), expected) << n << " bytes";
    // The same bytes fed in pieces of every size from 1 to 70 give the same digest.
    for (std::size_t piece = 1; piece <= 70; ++piece) {
      mp::detail::Sha256 h;
      for (std::size_t at = 0; at < n; at += piece)
        h.update(m.data() + at, std::min(piece, n - at));
      ASSERT_EQ(hex(h.finish()), expected) << n << " bytes in pieces of " << piece;
    }
  }
}

TEST(Auth, HmacMatchesRfc4231) {
  // Test case 1: a 20-byte key.
  EXPECT_EQ(hmac_hex(std::string(20, '\x0b'), "Hi There"),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  // Test case 2: a key shorter than the output.
  EXPECT_EQ(hmac_hex("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  // Test case 3: 50 bytes of 0xdd under a 20-byte key of 0xaa.
  EXPECT_EQ(hmac_hex(std::string(20, '\xaa'), std::string(50, '\xdd')),
            "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
  // Test case 4: a 25-byte key and 50 bytes of 0xcd.
  std::string key4;
  for (char c = 1; c <= 25; ++c) key4.push_back(c);
  EXPECT_EQ(hmac_hex(key4, std::string(50, '\xcd')),
            "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
  // Test cases 6 and 7: a 131-byte key, longer than the block (hashed first).
  const std::string long_key(131, '\xaa');
  EXPECT_EQ(hmac_hex(long_key, "Test Using Larger Than Block-Size Key - Hash Key First"),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
  EXPECT_EQ(hmac_hex(long_key,
                     "This is a test using a larger than block-size key and a larger than "
                     "block-size data. The key needs to be hashed before being used by the "
                     "HMAC algorithm."),
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
  // An empty message; a key of exactly one block (used as it is, not hashed).
  EXPECT_EQ(hmac_hex("key", ""),
            "5d5d139563c95b5967b9bd9a8c9b233a9dedb45072794cd232dc1b74832607d0");
  EXPECT_EQ(hmac_hex(std::string(64, 'k'), "m"),
            "3b7a8d453e76edb519238a515105a57508d0f169f480ebeee120a9e7803289fa");
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

#ifdef __linux__  // /proc/self/maps
namespace {
// The shared libraries this process has mapped (not its shared-memory mappings).
std::set<std::string> mapped_libraries() {
  std::ifstream maps("/proc/self/maps");
  std::set<std::string> files;
  std::string line;
  while (std::getline(maps, line)) {
    const auto slash = line.find('/');
    if (slash != std::string::npos && line.find(".so", slash) != std::string::npos)
      files.insert(line.substr(slash));
  }
  return files;
}
// Exits 0 if a handshake over a real Listener/Client pair loaded no library, else 1.
void report_new_mappings() {
  const std::set<std::string> before = mapped_libraries();
  {
    mp::Listener listener(std::nullopt, {.authkey = std::string("secret")});
    std::thread client([&] {
      mp::Connection c = mp::Client(listener.address(), std::string("secret"));
      c.send_bytes("hello");
    });
    auto conn = listener.accept();
    if (conn.recv_bytes() != "hello") std::exit(8);
    client.join();
  }
  std::set<std::string> added;
  for (const std::string& f : mapped_libraries())
    if (!before.count(f)) added.insert(f);
  for (const std::string& f : added)
    std::fprintf(stderr, "mapped by the handshake: %s\n", f.c_str());
  std::exit(added.empty() ? 0 : 1);
}
}  // namespace

// An authenticated connection loads no library: the HMAC is mp's own. A library loaded into the
// process stays, and every later fork copies its relocated pages (OpenSSL's libcrypto, which mp
// loaded here before, made each Pool(4) under fork 17% slower). Run in a spawned child, whose
// mappings no earlier test changed.
TEST(Auth, HandshakeLoadsNoLibrary) {
  mp::Process p(mp::get_context("spawn"), report_new_mappings);
  p.start();
  mp_test::join_or_fail(p);
  EXPECT_EQ(p.exitcode(), 0);
}
#endif
