// mp::Pipe, Connection, Listener/Client and connection::wait under every start method
// (CPython: _TestConnection, _TestListenerClient, _TestListener, _TestWait).
#include <signal.h>
#include <unistd.h>

#include <array>
#include <thread>

#include "mp/connection.hpp"
#include "mp_test.hpp"

using namespace mp_test;

namespace {

// Echoes every message until the peer closes its end. `other` is the parent's end, which a
// forked child inherits: it is closed so that the parent's close() gives EOF here.
void echo_bytes(mp::Connection conn, mp::Connection other) {
  other.close();
  try {
    for (;;) conn.send_bytes(conn.recv_bytes());
  } catch (const mp::EOFError&) {
  }
}

void send_values(mp::Connection conn) {
  conn.send(42);
  conn.send(std::string("hello"));
  conn.send(std::vector<double>{1.5, 2.5});
  conn.send(std::variant<int, std::string>(std::string("v")));
  conn.close();
}

void send_after(mp::Connection conn, int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  conn.send(ms);
}

void client_sends(mp::connection::Address address, std::string key, int value) {
  mp::Connection c = mp::Client(address, key);
  c.send(value);
  std::exit(c.recv<int>() == value + 1 ? 0 : 7);
}

void client_wrong_key(mp::connection::Address address) {
  try {
    mp::Client(address, std::string("wrong key"));
  } catch (const mp::AuthenticationError&) {
    std::exit(0);
  }
  std::exit(8);
}

void big_sender(mp::Connection conn, std::size_t size) {
  conn.send_bytes(std::string(size, 'x'));
}

}  // namespace

class ConnectionTest : public StartMethodTest {};

TEST_P(ConnectionTest, DuplexPipeEchoesBytes) {
  auto [a, b] = mp::Pipe();
  mp::Process p(ctx(), echo_bytes, b, a);
  p.start();
  b.close();
  for (const std::string& msg : {std::string("abc"), std::string(), std::string(100000, 'z')}) {
    a.send_bytes(msg);
    ASSERT_TRUE(a.poll(kTimeout));
    EXPECT_EQ(a.recv_bytes(), msg);
  }
  a.close();
  join_or_fail(p);
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(ConnectionTest, SimplexPipeIsOneWay) {
  auto [r, w] = mp::Pipe(false);
  EXPECT_TRUE(r.readable());
  EXPECT_FALSE(r.writable());
  EXPECT_FALSE(w.readable());
  EXPECT_TRUE(w.writable());
  EXPECT_THROW(r.send(1), mp::OSError);
  EXPECT_THROW(w.recv<int>(), mp::OSError);
  mp::Process p(ctx(), send_values, w);
  p.start();
  w.close();
  EXPECT_EQ(r.recv<int>(), 42);
  EXPECT_EQ(r.recv<std::string>(), "hello");
  EXPECT_EQ(r.recv<std::vector<double>>(), (std::vector<double>{1.5, 2.5}));
  EXPECT_EQ((r.recv<std::variant<int, std::string>>()), (std::variant<int, std::string>(std::string("v"))));
  EXPECT_THROW(r.recv<int>(), mp::EOFError);
  join_or_fail(p);
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(ConnectionTest, LargeMessageAcrossProcesses) {
  auto [a, b] = mp::Pipe(false);
  const std::size_t size = 64u << 20;
  mp::Process p(ctx(), big_sender, b, size);
  p.start();
  b.close();
  const std::string got = a.recv_bytes();
  EXPECT_EQ(got.size(), size);
  EXPECT_EQ(got.find_first_not_of('x'), std::string::npos);
  join_or_fail(p);
}

TEST_P(ConnectionTest, PollTiming) {
  auto [a, b] = mp::Pipe();
  EXPECT_FALSE(a.poll());
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(a.poll(100ms));
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, 95ms);
  EXPECT_LT(waited, 2s);
  mp::Process p(ctx(), send_after, b, 50);
  p.start();
  EXPECT_TRUE(a.poll(kTimeout));
  EXPECT_EQ(a.recv<int>(), 50);
  join_or_fail(p);
}

TEST_P(ConnectionTest, WaitOverConnectionsAndSentinels) {
  auto [a1, b1] = mp::Pipe();
  auto [a2, b2] = mp::Pipe();
  EXPECT_TRUE(mp::connection::wait({a1, a2}, 10ms).empty());
  mp::Process p(ctx(), send_after, b2, 10);
  p.start();
  auto ready = mp::connection::wait({a1, a2}, kTimeout);
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_EQ(std::get<mp::Connection>(ready[0]).fileno(), a2.fileno());
  EXPECT_EQ(a2.recv<int>(), 10);
  // The process sentinel becomes ready when the child ends.
  ready = mp::connection::wait({a1, p}, kTimeout);
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_TRUE(std::holds_alternative<mp::Process>(ready[0]));
  join_or_fail(p);
  b1.send(1);
  EXPECT_EQ(mp::connection::wait({a1, a2}, kTimeout).size(), 1u);
}

TEST_P(ConnectionTest, ListenerClientWithRightAndWrongKeys) {
  for (const mp::connection::Address& address :
       {mp::connection::Address(std::string()), mp::connection::Address(mp::connection::TcpAddress{"127.0.0.1", 0})}) {
    std::optional<mp::connection::Address> addr;
    if (std::holds_alternative<mp::connection::TcpAddress>(address)) addr = address;
    mp::Listener listener(addr, 4, std::string("secret"));
    mp::Process good(ctx(), client_sends, listener.address(), std::string("secret"), 41);
    good.start();
    mp::Connection c = listener.accept();
    c.send(c.recv<int>() + 1);
    join_or_fail(good);
    EXPECT_EQ(good.exitcode(), 0);

    mp::Process bad(ctx(), client_wrong_key, listener.address());
    bad.start();
    EXPECT_THROW(listener.accept(), mp::AuthenticationError);
    join_or_fail(bad);
    EXPECT_EQ(bad.exitcode(), 0);
    listener.close();
    EXPECT_THROW(mp::Client(listener.address(), std::string("secret")), mp::OSError);
  }
}

TEST(Connection, ServerWithWrongKeyFailsOnClientSide) {
  mp::Listener listener(std::nullopt, 1, std::string("server key"));
  std::thread t([&] { EXPECT_THROW(listener.accept(), mp::AuthenticationError); });
  EXPECT_THROW(mp::Client(listener.address(), std::string("client key")), mp::AuthenticationError);
  t.join();
}

TEST(Connection, SilentPeerCannotStallAccept) {
  mp::Listener listener(std::nullopt, 1, std::string("key"));
  listener.set_handshake_timeout(200ms);
  // A raw client that connects and then says nothing.
  std::thread t([&] {
    mp::Connection raw = mp::Client(listener.address());
    EXPECT_FALSE(raw.recv_bytes().empty());  // the challenge, left unanswered
    EXPECT_THROW(raw.recv_bytes(), mp::EOFError);
  });
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(listener.accept(), mp::AuthenticationError);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  t.join();
}

TEST(Connection, NoAuthListener) {
  mp::Listener listener;
  std::thread t([&] {
    mp::Connection c = listener.accept();
    c.send(std::string("hi"));
  });
  mp::Connection c = mp::Client(listener.address());
  EXPECT_EQ(c.recv<std::string>(), "hi");
  t.join();
}

TEST(Connection, BytesApisAndBufferTooShort) {
  auto [a, b] = mp::Pipe();
  const std::string msg = "0123456789";
  a.send_bytes(msg, 2);
  EXPECT_EQ(b.recv_bytes(), "23456789");
  a.send_bytes(msg, 2, 3);
  EXPECT_EQ(b.recv_bytes(), "234");
  EXPECT_THROW(a.send_bytes(msg, 11), std::invalid_argument);
  EXPECT_THROW(a.send_bytes(msg, 5, 6), std::invalid_argument);

  std::array<char, 16> buf{};
  a.send_bytes(msg);
  EXPECT_EQ(b.recv_bytes_into(buf, 3), msg.size());
  EXPECT_EQ(std::string(buf.data() + 3, msg.size()), msg);
  std::vector<std::int32_t> ints(2);
  a.send_bytes(std::string(8, '\1'));
  EXPECT_EQ(b.recv_bytes_into(ints), 8u);
  EXPECT_EQ(ints[1], 0x01010101);
  a.send_bytes(msg);
  try {
    b.recv_bytes_into(buf, 10);
    FAIL() << "expected BufferTooShort";
  } catch (const mp::BufferTooShort& e) {
    EXPECT_EQ(e.message(), msg);
  }
  EXPECT_THROW(b.recv_bytes_into(buf, 17), std::invalid_argument);
  // maxlength: too long a message is an error and closes the connection (CPython).
  a.send_bytes(msg);
  EXPECT_THROW(b.recv_bytes(5), mp::OSError);
  EXPECT_TRUE(b.closed());
}

TEST(Connection, WrongTypeIsAClearError) {
  auto [a, b] = mp::Pipe();
  a.send(std::string("text"));
  EXPECT_THROW(b.recv<int>(), mp::UnpicklingError);
}

TEST(Connection, GarbageAndOversizedLengthsAreRejected) {
  auto [a, b] = mp::Pipe();
  b.set_max_message_size(1 << 20);
  const std::uint32_t huge = 0x7ffffff0;  // 2 GiB announced, nothing sent
  ::write(static_cast<int>(a.fileno()), &huge, sizeof huge);
  EXPECT_THROW(b.recv_bytes(), mp::OSError);
  // Under the cap but never sent in full: EOF mid-message is an error, and nothing big is
  // allocated up front.
  auto [c, d] = mp::Pipe();
  const std::uint32_t marker = 0xffffffffu;
  const std::uint64_t big = std::uint64_t{3} << 30;
  ::write(static_cast<int>(c.fileno()), &marker, sizeof marker);
  ::write(static_cast<int>(c.fileno()), &big, sizeof big);
  ::write(static_cast<int>(c.fileno()), "abc", 3);
  c.close();
  EXPECT_THROW(d.recv_bytes(), mp::OSError);
  // Garbage bytes as a typed message.
  auto [e, f] = mp::Pipe();
  e.send_bytes(std::string("\x01\x02\x03", 3));
  EXPECT_THROW(f.recv<std::string>(), mp::UnpicklingError);
}

TEST(Connection, WriteToClosedPeerIsAnErrorNotSigpipe) {
  auto [a, b] = mp::Pipe();
  b.close();
  EXPECT_THROW(a.send_bytes(std::string(1 << 20, 'x')), mp::OSError);
  auto [r, w] = mp::Pipe(false);
  r.close();
  EXPECT_THROW(w.send(1), mp::OSError);
}

TEST(Connection, ClosedConnection) {
  auto [a, b] = mp::Pipe();
  a.close();
  EXPECT_TRUE(a.closed());
  a.close();  // twice is fine
  EXPECT_THROW(a.send(1), mp::OSError);
  EXPECT_THROW(a.fileno(), mp::OSError);
  EXPECT_THROW(b.recv<int>(), mp::EOFError);
  EXPECT_TRUE(b.poll());  // EOF counts as readable
}

TEST(Connection, SharingOutsideSpawnIsRefused) {
  auto [a, b] = mp::Pipe();
  EXPECT_THROW(mp::reduction::dumps(a), std::runtime_error);
}

MP_INSTANTIATE_START_METHODS(ConnectionTest);
