// Tests of the POSIX-family OS layer: what the Linux-only calls (*_linux.cpp) and their portable
// fallbacks (*_portable.cpp, the posix-fallbacks preset) must both guarantee. Each test runs in
// both builds; a test that finds the Linux implementation's own property says so by its name.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "mp/errors.hpp"
#include "platform/handle.hpp"
#include "platform/handle_passing.hpp"
#include "platform/io.hpp"
#include "platform/process.hpp"
#include "platform/shared_memory.hpp"
#include "platform/system.hpp"
#include "platform/wait.hpp"
#ifdef MP_PLATFORM_POSIX_FALLBACKS
#  include "platform/portable.hpp"
#endif
#include "segment.hpp"

namespace {

using namespace std::chrono_literals;
namespace platform = mp::platform;

bool close_on_exec(int fd) {
  const int flags = ::fcntl(fd, F_GETFD);
  return flags >= 0 && (flags & FD_CLOEXEC);
}

// Closes the descriptors at the end of a test.
struct Fds {
  std::vector<int> fds;
  ~Fds() {
    for (int fd : fds) ::close(fd);
  }
  int add(int fd) {
    fds.push_back(fd);
    return fd;
  }
};

// Reaps `pid` within 30 s (SIGKILLing it first if it is still running then); its exit code, or
// -signal.
int reap(pid_t pid) {
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) return -1000;
    if (std::chrono::steady_clock::now() > deadline) {
      ADD_FAILURE() << "child " << pid << " did not end in 30 s";
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(2ms);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

// ---- descriptors: close-on-exec at creation (posix.hpp)

TEST(PosixDescriptors, EveryCreatedDescriptorIsCloseOnExec) {
  Fds f;
  auto [pr, pw] = platform::make_pipe();
  f.add(pr), f.add(pw);
  EXPECT_TRUE(close_on_exec(pr) && close_on_exec(pw));
  auto [sa, sb] = platform::socket_pair();
  f.add(sa), f.add(sb);
  EXPECT_TRUE(close_on_exec(sa) && close_on_exec(sb));
  auto [da, db] = platform::datagram_pair();
  f.add(da), f.add(db);
  EXPECT_TRUE(close_on_exec(da) && close_on_exec(db));
  const int dup = f.add(platform::duplicate_above(pr, 100));
  EXPECT_GE(dup, 100);
  EXPECT_TRUE(close_on_exec(dup));

  // A descriptor received over SCM_RIGHTS, whether peeked or taken.
  const int inheritable = f.add(::dup(pw));
  ASSERT_FALSE(close_on_exec(inheritable));
  ASSERT_TRUE(platform::send_descriptor(da, 42, inheritable));
  std::uint64_t tag = 0;
  platform::Handle got = platform::kInvalidHandle;
  ASSERT_TRUE(platform::receive_descriptor(db, tag, got, /*peek=*/true));
  f.add(got);
  EXPECT_EQ(tag, 42u);
  EXPECT_TRUE(close_on_exec(got));
  ASSERT_TRUE(platform::receive_descriptor(db, tag, got, /*peek=*/false));
  f.add(got);
  EXPECT_TRUE(close_on_exec(got));

  // move_descriptor: the target number, close-on-exec; the source closed.
  const int moved_from = ::dup(pr);
  ASSERT_GE(moved_from, 0);
  const int target = f.add(::dup(pr));
  platform::move_descriptor(moved_from, target);
  EXPECT_TRUE(close_on_exec(target));
  EXPECT_EQ(::fcntl(moved_from, F_GETFD), -1);
}

TEST(PosixDescriptors, AcceptedSocketsAreCloseOnExecAndBlocking) {
  Fds f;
  std::string dir;
  const std::string path = platform::path_socket_address(dir);
  const int listener = f.add(platform::listen_unix(path, 4));
  platform::set_nonblocking(listener);  // accepted sockets stay blocking all the same
  EXPECT_FALSE(platform::try_accept(listener).has_value());  // nothing pending: at once
  const int client = f.add(platform::connect_unix(path));
  EXPECT_TRUE(close_on_exec(client));
  const platform::Nanos bound = 30s;
  ASSERT_TRUE(platform::wait_readable(listener, &bound));
  const std::optional<platform::Handle> accepted = platform::try_accept(listener);
  ASSERT_TRUE(accepted.has_value());
  f.add(*accepted);
  EXPECT_TRUE(close_on_exec(*accepted));
  EXPECT_FALSE(::fcntl(*accepted, F_GETFL) & O_NONBLOCK);
  platform::unlink_path(path);
  platform::remove_directory(dir);
}

// ---- no SIGPIPE, whatever the program's disposition (io.hpp)

TEST(PosixDescriptors, WritesToAClosedPeerAreEpipeNotSigpipe) {
  struct sigaction old {};
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ASSERT_EQ(::sigaction(SIGPIPE, &dfl, &old), 0);  // a SIGPIPE would now end this process
  Fds f;
  auto [a, b] = platform::socket_pair();
  f.add(a);
  ::close(b);
  const char byte = 'x';
  int error = 0;
  try {
    platform::write_all(a, &byte, 1);
  } catch (const mp::OSError& e) {
    error = e.code().value();
  }
  EXPECT_TRUE(error == EPIPE || error == ECONNRESET) << error;
  EXPECT_FALSE(platform::write_token(a));
  EXPECT_THROW(platform::try_write(a, &byte, 1), mp::OSError);
  auto [ra, rb] = platform::datagram_pair();
  f.add(ra);
  ::close(rb);
  EXPECT_THROW(platform::send_descriptor(ra, 1, a), mp::OSError);
  ::sigaction(SIGPIPE, &old, nullptr);
}

// ---- a peer's end of file seen without reading (POLLRDHUP, or POLLHUP/peek)

TEST(PosixDescriptors, PeerClosedSeesOnlyAClosedPeer) {
  Fds f;
  auto [a, b] = platform::socket_pair();
  f.add(a);
  EXPECT_FALSE(platform::peer_closed(a));
  ASSERT_TRUE(platform::write_token(b));
  EXPECT_FALSE(platform::peer_closed(a));  // a token queued from a live peer
  EXPECT_EQ(platform::read_token(a), 1);
  EXPECT_EQ(platform::read_token(a), -1);
  EXPECT_FALSE(platform::peer_closed(a));
  ::close(b);
  EXPECT_TRUE(platform::peer_closed(a));
  EXPECT_EQ(platform::read_token(a), 0);
}

TEST(PosixDescriptors, PeerClosedInAnotherProcessIsSeen) {
  Fds f;
  auto [a, b] = platform::socket_pair();
  f.add(a);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) ::_exit(platform::write_token(b) ? 0 : 1);  // ends: its copy of b closes
  ::close(b);
  EXPECT_EQ(reap(pid), 0);
  EXPECT_EQ(platform::read_token(a), 1);
  EXPECT_TRUE(platform::peer_closed(a));
}

// ---- process liveness (wait.hpp)

TEST(PosixProcess, ProcessDeadSeesAnUnreapedChildAsEnded) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) ::_exit(0);
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!platform::process_dead(pid) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(1ms);
  EXPECT_TRUE(platform::process_dead(pid));
  // Not reaped by the look: the exit status is still ours to collect.
  int status = -1;
  EXPECT_EQ(::waitpid(pid, &status, WNOHANG), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_TRUE(platform::process_dead(pid));  // reaped: gone
}

TEST(PosixProcess, ProcessDeadSeesALiveProcessAsAlive) {
  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    char c;
    ::close(go[1]);
    while (::read(go[0], &c, 1) < 0 && errno == EINTR) {
    }
    ::_exit(0);
  }
  ::close(go[0]);
  EXPECT_FALSE(platform::process_dead(pid));
  EXPECT_FALSE(platform::process_dead(platform::current_pid()));
  EXPECT_FALSE(platform::process_dead(1));  // init: alive, another user's (EPERM is alive)
  ::close(go[1]);
  EXPECT_EQ(reap(pid), 0);
}

// ---- shared memory

TEST(PosixSharedMemory, AnonymousSegmentShowsExactlyItsSize) {
  for (std::size_t size :
       {std::size_t{1}, std::size_t{4095}, std::size_t{4096}, std::size_t{65537}}) {
    const platform::Handle h = platform::create_shared_memory(size);
    EXPECT_EQ(platform::shared_memory_size(h), size);
    auto* p = static_cast<unsigned char*>(platform::map_shared(h, size));
    for (std::size_t i = 0; i < size; ++i) ASSERT_EQ(p[i], 0) << i;
    std::memset(p, 0xab, size);
    auto* q = static_cast<unsigned char*>(platform::map_shared(h, size));
    EXPECT_NE(p, q);
    EXPECT_EQ(q[0], 0xab);
    EXPECT_EQ(q[size - 1], 0xab);
    platform::unmap(q, size);
    platform::unmap(p, size);
    platform::close_handle(h);
  }
}

TEST(PosixSharedMemory, AViewOfAZeroByteSegmentIsDistinct) {
  const platform::Handle h = platform::create_shared_memory(0);
  EXPECT_EQ(platform::shared_memory_size(h), 0u);
  void* a = platform::map_shared(h, 0);
  void* b = platform::map_shared(h, 0);
  EXPECT_NE(a, b);
  platform::unmap(a, 0);
  platform::unmap(b, 0);
  platform::close_handle(h);
}

// A segment some other program made by name (shm_open + ftruncate) maps from its first byte.
TEST(PosixSharedMemory, ASegmentMadeByAnotherProgramMapsFromByteZero) {
  unsigned char r[8];
  platform::random_bytes(r, sizeof r);
  char name[64];
  std::snprintf(name, sizeof name, "mp-test-posix-%02x%02x%02x%02x%02x%02x%02x%02x", r[0], r[1],
                r[2], r[3], r[4], r[5], r[6], r[7]);
  const std::string path = std::string("/") + name;
  const int fd = ::shm_open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(fd, 0);
  constexpr std::size_t kSize = 3 * 4096;
  ASSERT_EQ(::ftruncate(fd, kSize), 0);
  void* raw = ::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(raw, MAP_FAILED);
  std::memcpy(raw, "first", 6);
  std::memcpy(static_cast<char*>(raw) + kSize - 5, "last", 5);
  ::munmap(raw, kSize);
  ::close(fd);

  const platform::Handle h = platform::open_shm(name);
  EXPECT_EQ(platform::shared_memory_size(h), kSize);
  auto* p = static_cast<char*>(platform::map_shared(h, kSize));
  EXPECT_STREQ(p, "first");
  EXPECT_STREQ(p + kSize - 5, "last");
  platform::unmap(p, kSize);
  platform::close_handle(h);
  platform::unlink_shm(name);
}

#ifdef MP_PLATFORM_POSIX_FALLBACKS
// The fallback names an anonymous segment for two system calls (shm_open, shm_unlink). A process
// killed between them leaves a name in /dev/shm: it is "/mp-anon-<pid>", and the library's reaper
// of that process removes it (before, the name was random and stayed until reboot).
TEST(PosixSharedMemory, AProcessKilledWhileNamingAnAnonymousSegmentLeavesNothingOnceReaped) {
  Fds fds;
  int marker[2];
  ASSERT_EQ(::pipe(marker), 0);
  fds.add(marker[0]);
  fds.add(marker[1]);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    static int write_end = marker[1];
    platform::portable::anonymous_object_fault = [] {
      const char c = 'k';
      if (::write(write_end, &c, 1) != 1) ::_exit(3);
      ::kill(::getpid(), SIGKILL);
    };
    (void)platform::create_shared_memory(4096);
    ::_exit(0);  // not reached: killed in the window
  }
  const platform::Handle process = platform::open_process(static_cast<int>(pid));
  ::close(marker[1]);
  fds.fds.pop_back();
  char c = 0;
  ASSERT_EQ(::read(marker[0], &c, 1), 1) << "the child never reached the window";
  const std::string path = "/dev/shm/mp-anon-" + std::to_string(pid);
  // The child is killed (or about to be) with its name made and not yet removed.
  EXPECT_EQ(::access(path.c_str(), F_OK), 0) << path << ": the name is not the process's own";
  const std::optional<int> status = platform::reap(process, true);
  EXPECT_EQ(status, std::optional<int>(-SIGKILL));
  EXPECT_NE(::access(path.c_str(), F_OK), 0) << path << " left after the reap";
  ::shm_unlink(path.c_str() + std::strlen("/dev/shm"));  // the test leaves nothing, even failing
  platform::close_handle(process);
}

// A name left by an ended process of this pid neither stops this process from making anonymous
// segments nor stays.
TEST(PosixSharedMemory, ANameLeftUnderThisPidIsTakenOver) {
  const std::string name = "/mp-anon-" + std::to_string(::getpid());
  const int stale = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(stale, 0);
  ::close(stale);
  const platform::Handle h = platform::create_shared_memory(100);
  EXPECT_EQ(platform::shared_memory_size(h), 100u);
  EXPECT_NE(::access(("/dev/shm" + name).c_str(), F_OK), 0);
  platform::close_handle(h);
}
#endif

// ---- the wait object across fork (DESIGN.md §6, rules 5 and 6)

using platform_test::Segment;

// Waits until *w != v (30 s slices); false if a slice passes with no change.
bool wait_change(std::atomic<std::uint32_t>* w, std::uint32_t v) {
  const platform::Nanos slice = 30s;
  while (w->load() == v)
    if (!platform::wait_on_address(w, v, &slice) && w->load() == v) return false;
  return true;
}

TEST(PosixWait, ForkedChildPingPongsOnTheInheritedMapping) {
  Segment s(4096);
  constexpr std::uint32_t kRounds = 400;
  std::atomic<std::uint32_t>* w = s.word(5);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    for (std::uint32_t i = 1; i < kRounds; i += 2) {
      if (!wait_change(w, i - 1)) ::_exit(2);
      w->store(i + 1);
      platform::wake_address(w, 1);
    }
    ::_exit(0);
  }
  bool ok = true;
  for (std::uint32_t i = 0; i < kRounds && ok; i += 2) {
    w->store(i + 1);
    platform::wake_address(w, 1);
    ok = wait_change(w, i + 1);
  }
  EXPECT_TRUE(ok);
  EXPECT_EQ(reap(pid), 0);
  EXPECT_EQ(w->load(), kRounds);
}

// Whether the single-threaded process `pid` is (or within 10 s gets) blocked in a system call.
// Linux reads its state; elsewhere a wide sleep stands in.
bool asleep_soon(pid_t pid) {
#ifdef __linux__
  const std::string path = "/proc/" + std::to_string(pid) + "/stat";
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline) {
    char buf[512] = {};
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    const ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    const char* paren = n > 0 ? std::strrchr(buf, ')') : nullptr;
    if (paren && paren[1] == ' ' && paren[2] == 'S') return true;
    std::this_thread::sleep_for(1ms);
  }
  return false;
#else
  std::this_thread::sleep_for(200ms);
  return true;
#endif
}

// A waiter SIGKILLed while asleep leaves nothing that blocks the next waiter or waker of the word
// or of any word sharing its bucket.
TEST(PosixWait, AWaiterKilledAsleepBlocksNobody) {
  Segment s(4096);
  std::atomic<std::uint32_t>* ready = s.word(0);
  std::vector<pid_t> pids;
  for (int i = 0; i < 4; ++i) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ready->fetch_add(1);
      platform::wake_address(ready, INT32_MAX);
      const platform::Nanos forever = 3600s;
      for (;;) platform::wait_on_address(s.word(1 + i), 0, &forever);
    }
    pids.push_back(pid);
  }
  for (std::uint32_t v; (v = ready->load()) < 4;) ASSERT_TRUE(wait_change(ready, v));
  for (pid_t pid : pids) ASSERT_TRUE(asleep_soon(pid)) << pid;
  for (pid_t pid : pids) {
    ::kill(pid, SIGKILL);
    EXPECT_EQ(reap(pid), -SIGKILL);
  }
  // Every word the dead waited on, and their neighbours, several times over (glibc's condition
  // variables passed the first broadcast after such a kill and hung in the second).
  for (std::uint32_t round = 0; round < 3; ++round) {
    for (std::size_t i = 1; i < 64; ++i) {
      std::atomic<bool> woke{false};
      std::thread t([&] { woke = wait_change(s.word(i), round); });
      s.word(i)->store(round + 1);
      platform::wake_address(s.word(i), 1);
      t.join();
      EXPECT_TRUE(woke) << i;
    }
  }
}

// ---- sockets and randomness

TEST(PosixIo, PrivateSocketAddressAcceptsThisUser) {
  std::string dir;
  const std::string address = platform::private_socket_address(dir);
  Fds f;
  const int listener = f.add(platform::listen_unix(address, 4));
  const int client = f.add(platform::connect_unix(address));
  const platform::Nanos bound = 30s;
  ASSERT_TRUE(platform::wait_readable(listener, &bound));
  const std::optional<platform::Handle> c = platform::try_accept(listener);
  ASSERT_TRUE(c.has_value());
  f.add(*c);
  EXPECT_TRUE(platform::peer_is_same_user(*c));
  EXPECT_EQ(platform::peer_pid(*c), platform::current_pid());
  EXPECT_EQ(platform::peer_pid(client), platform::current_pid());
  platform::unlink_path(address);
  if (!dir.empty()) {
    platform::remove_directory(dir);
    struct stat st {};
    EXPECT_NE(::stat(dir.c_str(), &st), 0) << dir << " left behind";
  }
}

TEST(PosixIo, TcpPeersHaveNoPidAndPassTheUserCheck) {
  Fds f;
  const int listener = f.add(platform::listen_tcp("127.0.0.1", 0, 4));
  const int client = f.add(platform::connect_tcp("127.0.0.1", platform::local_port(listener)));
  const platform::Nanos bound = 30s;
  ASSERT_TRUE(platform::wait_readable(listener, &bound));
  const std::optional<platform::Handle> c = platform::try_accept(listener);
  ASSERT_TRUE(c.has_value());
  f.add(*c);
  EXPECT_FALSE(platform::peer_pid(*c).has_value());
  EXPECT_FALSE(platform::peer_pid(client).has_value());
  EXPECT_TRUE(platform::peer_is_same_user(*c));
}

TEST(PosixSystem, RandomBytesFillLargeBuffers) {
  std::vector<unsigned char> a(1000), b(1000);  // more than one getentropy call (256 bytes)
  platform::random_bytes(a.data(), a.size());
  platform::random_bytes(b.data(), b.size());
  EXPECT_NE(a, b);
  // The tail is random too (not left zero by a short call): 744 zero bytes in a row won't happen.
  EXPECT_NE(std::vector<unsigned char>(a.begin() + 256, a.end()),
            std::vector<unsigned char>(a.size() - 256, 0));
}

}  // namespace
