// Tests of the OS layer itself (lib/platform/), built on every platform, the ported part of it on
// Windows (run under Wine there): the capabilities the library stands on, without the library.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "mp/errors.hpp"
#include "support/code_ref.hpp"
#include "support/futex_lock.hpp"
#include "platform/handle.hpp"
#include "platform/handle_passing.hpp"
#include "platform/io.hpp"
#include "platform/process.hpp"
#include "platform/shared_memory.hpp"
#include "platform/system.hpp"
#include "platform/wait.hpp"
#include "segment.hpp"
#ifdef _WIN32
#  include "platform/win32.hpp"
#else
#  include <dlfcn.h>
#endif

namespace {

using namespace std::chrono_literals;
namespace platform = mp::platform;

using platform_test::Segment;

TEST(SharedMemory, IsZeroFilledAndSizedAsAsked) {
  Segment s(10000);
  EXPECT_EQ(platform::shared_memory_size(s.handle), 10000u);
  const auto* p = static_cast<const unsigned char*>(s.base);
  for (std::size_t i = 0; i < s.size; ++i) ASSERT_EQ(p[i], 0) << i;
}

TEST(SharedMemory, TwoViewsSeeTheSameBytes) {
  Segment s(4096);
  void* second = platform::map_shared(s.handle, s.size);
  ASSERT_NE(second, s.base);
  std::memcpy(s.base, "hello", 6);
  EXPECT_STREQ(static_cast<const char*>(second), "hello");
  platform::unmap(second, s.size);
  EXPECT_STREQ(static_cast<const char*>(s.base), "hello");  // the first view outlives the second
}

TEST(SharedMemory, ADuplicatedHandleOutlivesTheOriginal) {
  const platform::Handle h = platform::create_shared_memory(64);
  const platform::Handle dup = platform::duplicate_handle(h);
  void* a = platform::map_shared(h, 64);
  platform::close_handle(h);
  static_cast<char*>(a)[0] = 'x';
  void* b = platform::map_shared(dup, 64);
  EXPECT_EQ(static_cast<char*>(b)[0], 'x');
  platform::unmap(a, 64);
  platform::unmap(b, 64);
  platform::close_handle(dup);
}

// The wait object, on a shared word and on a process-private one.
class Wait : public testing::TestWithParam<bool> {
 protected:
  std::atomic<std::uint32_t>* word(std::size_t i) {
    return GetParam() ? segment_.word(i) : &private_words_[i];
  }
  Segment segment_{4096};
  std::atomic<std::uint32_t> private_words_[256] = {};
};

TEST_P(Wait, ReturnsAtOnceWhenTheWordDiffers) {
  word(0)->store(7);
  const platform::Nanos forever = 3600s;
  EXPECT_TRUE(platform::wait_on_address(word(0), 8, &forever));
}

TEST_P(Wait, TimesOut) {
  const platform::Nanos t = 30ms;
  const auto start = platform::Clock::now();
  bool woke = true;
  // A spurious wake-up may return true; a time-out must come by the deadline (widely bounded).
  while (woke && platform::Clock::now() - start < 10s)
    woke = platform::wait_on_address(word(0), 0, &t);
  EXPECT_FALSE(woke);
}

TEST_P(Wait, WakesAWaitingThread) {
  std::atomic<bool> done{false};
  std::thread waiter([&] {
    const platform::Nanos slice = 30s;
    while (word(1)->load() == 0) platform::wait_on_address(word(1), 0, &slice);
    done = true;
  });
  word(1)->store(1);
  platform::wake_address(word(1), 1);
  waiter.join();
  EXPECT_TRUE(done);
}

TEST_P(Wait, WakeAllReachesEveryWaiterAndNeighboursStayAsleepOrRecheck) {
  constexpr int kThreads = 4;
  std::atomic<int> woken{0};
  std::thread threads[kThreads];
  // Words 2 and 66 share a bucket on Windows (64 buckets per segment): waking one must still wake
  // all waiters of the other word only spuriously, never lose a wake-up of its own.
  for (auto& t : threads)
    t = std::thread([&] {
      const platform::Nanos slice = 30s;
      while (word(2)->load() == 0) platform::wait_on_address(word(2), 0, &slice);
      ++woken;
    });
  std::thread neighbour([&] {
    const platform::Nanos slice = 30s;
    while (word(66)->load() == 0) platform::wait_on_address(word(66), 0, &slice);
  });
  word(2)->store(1);
  platform::wake_address(word(2), INT32_MAX);
  for (auto& t : threads) t.join();
  EXPECT_EQ(woken.load(), kThreads);
  word(66)->store(1);
  platform::wake_address(word(66), 1);
  neighbour.join();
}

// A ping-pong of many rounds: every wake-up must arrive (a lost one hangs until the 30 s slice).
TEST_P(Wait, PingPongLosesNoWakeUp) {
  constexpr std::uint32_t kRounds = 2000;
  std::atomic<std::uint32_t>* w = word(3);
  std::thread peer([&] {
    const platform::Nanos slice = 30s;
    for (std::uint32_t i = 1; i <= kRounds; i += 2) {
      for (std::uint32_t v; (v = w->load()) != i;)
        ASSERT_TRUE(platform::wait_on_address(w, v, &slice)) << i;
      w->store(i + 1);
      platform::wake_address(w, 1);
    }
  });
  const platform::Nanos slice = 30s;
  for (std::uint32_t i = 0; i < kRounds; i += 2) {
    for (std::uint32_t v; (v = w->load()) != i;)
      ASSERT_TRUE(platform::wait_on_address(w, v, &slice)) << i;
    w->store(i + 1);
    platform::wake_address(w, 1);
  }
  peer.join();
  EXPECT_EQ(w->load(), kRounds);
}

INSTANTIATE_TEST_SUITE_P(Platform, Wait, testing::Values(true, false),
                         [](const auto& info) { return info.param ? "shared" : "private"; });

TEST(Identity, PidAndTidAreThisProcessAndThread) {
  EXPECT_GT(platform::current_pid(), 0);
  EXPECT_FALSE(platform::process_dead(platform::current_pid()));
  int other = 0;
  std::thread([&] { other = platform::current_tid(); }).join();
  EXPECT_NE(other, platform::current_tid());
}

// ---- named segments (mp::SharedMemory): POSIX shm names; Windows `Local\` sections, gone with
// their last handle or view.
std::string unique_shm_name() {
  unsigned char bytes[8];
  platform::random_bytes(bytes, sizeof bytes);
  std::string name = "mp-test-" + std::to_string(platform::current_pid()) + "-";
  for (unsigned char b : bytes) name += "0123456789abcdef"[b & 15];
  return name;
}

std::error_code shm_error(auto&& call) {
  try {
    call();
  } catch (const std::system_error& e) {
    return e.code();
  }
  return {};
}

// A named segment's handle and view, released at the end of the scope.
struct Named {
  Named(platform::Handle h, std::size_t n) : handle(h), size(n), base(platform::map_shared(h, n)) {}
  ~Named() {
    platform::unmap(base, size);
    platform::close_handle(handle);
  }
  char* bytes() const { return static_cast<char*>(base); }
  platform::Handle handle;
  std::size_t size;
  void* base;
};

TEST(NamedShm, CreateAttachExactSizeAndExists) {
  const std::string name = unique_shm_name();
  {
    Named made(platform::create_named_shm(name, 10001), 10001);
    std::memcpy(made.bytes(), "hello", 6);
    EXPECT_EQ(shm_error([&] { platform::close_handle(platform::create_named_shm(name, 5)); }),
              std::errc::file_exists);
    const platform::Handle h = platform::open_shm(name);
    EXPECT_EQ(platform::shared_memory_size(h), 10001u);  // not rounded to a page
    Named seen(h, 10001);
    EXPECT_STREQ(seen.bytes(), "hello");
    seen.bytes()[10000] = 'z';
    EXPECT_EQ(made.bytes()[10000], 'z');
    platform::unlink_shm(name);  // POSIX: the name goes now; Windows: with the last view
  }
  EXPECT_EQ(shm_error([&] { platform::close_handle(platform::open_shm(name)); }),
            std::errc::no_such_file_or_directory);
}

TEST(NamedShm, ANameLivesWhileAViewDoesEvenWithoutHandles) {
  const std::string name = unique_shm_name();
  const platform::Handle h = platform::create_named_shm(name, 100);
  void* view = platform::map_shared(h, 100);
  platform::close_handle(h);  // only the view is left
  const platform::Handle again = platform::open_shm(name);
  EXPECT_EQ(platform::shared_memory_size(again), 100u);
  platform::close_handle(again);
  platform::unmap(view, 100);
  platform::unlink_shm(name);
  EXPECT_EQ(shm_error([&] { platform::close_handle(platform::open_shm(name)); }),
            std::errc::no_such_file_or_directory);
}

TEST(NamedShm, BadOrMissingNamesAreRefused) {
  const auto invalid = std::errc::invalid_argument;
  EXPECT_EQ(shm_error([] { platform::check_shm_name(""); }), invalid);
  EXPECT_EQ(shm_error([] { platform::check_shm_name("a/b"); }), invalid);
  EXPECT_EQ(shm_error([] { platform::check_shm_name(".."); }), invalid);
  EXPECT_EQ(shm_error([] { platform::check_shm_name(std::string("a\0b", 3)); }), invalid);
#ifdef _WIN32
  EXPECT_EQ(shm_error([] { platform::check_shm_name("Global\\x"); }), invalid);
#endif
  EXPECT_EQ(shm_error([] { platform::check_shm_name(std::string(256, 'a')); }),
            std::errc::filename_too_long);
  EXPECT_NO_THROW(platform::check_shm_name(std::string(255, 'a')));
  EXPECT_EQ(shm_error([] { platform::close_handle(platform::open_shm(unique_shm_name())); }),
            std::errc::no_such_file_or_directory);
}

#ifdef _WIN32
// An opener that finds a section before its maker has written the header waits for it (bounded),
// and refuses a section another program made.
TEST(NamedShm, AnOpenerWaitsForTheHeaderAndRefusesForeignSections) {
  const std::string name = unique_shm_name();
  const std::wstring wide = L"Local\\" + std::wstring(name.begin(), name.end());
  HANDLE raw = ::CreateFileMappingW(INVALID_HANDLE_VALUE, nullptr, PAGE_READWRITE, 0, 65536 + 4096,
                                    wide.c_str());
  ASSERT_NE(raw, nullptr);
  auto* header = static_cast<platform::win32::SectionHeader*>(
      ::MapViewOfFile(raw, FILE_MAP_ALL_ACCESS, 0, 0, sizeof(platform::win32::SectionHeader)));
  ASSERT_NE(header, nullptr);
  std::thread maker([&] {
    platform::sleep_for(100ms);
    header->size = 3000;
    header->key = 12345;
    std::atomic_ref(header->magic)
        .store(platform::win32::kNamedSectionMagic, std::memory_order_release);
  });
  const platform::Handle h = platform::open_shm(name);
  maker.join();
  EXPECT_EQ(platform::shared_memory_size(h), 3000u);
  platform::close_handle(h);
  ::UnmapViewOfFile(header);
  ::CloseHandle(raw);

  const std::string foreign = unique_shm_name();
  const std::wstring wide_foreign = L"Local\\" + std::wstring(foreign.begin(), foreign.end());
  raw = ::CreateFileMappingW(INVALID_HANDLE_VALUE, nullptr, PAGE_READWRITE, 0, 65536 + 4096,
                             wide_foreign.c_str());
  ASSERT_NE(raw, nullptr);
  EXPECT_EQ(shm_error([&] { platform::close_handle(platform::open_shm(foreign)); }),
            std::errc::invalid_argument);
  ::CloseHandle(raw);
}
#endif

// ---- code lookup for spawn (ELF build ids on Linux, PE CodeView records on Windows)
int add_seven(int x) { return x + 7; }

TEST(Modules, AFunctionResolvesBackFromItsCodeRef) {
  const auto ref = mp::detail::CodeRef::of(&add_seven);
  EXPECT_EQ(ref.module, "");  // the main executable
  EXPECT_FALSE(ref.build_id.empty());
#ifdef _WIN32
  EXPECT_NE(ref.build_id.rfind("pe:", 0), 0u) << "no CodeView record: is -Wl,--build-id passed?";
#endif
  auto* f = ref.resolve<int (*)(int)>();
  EXPECT_EQ(f, &add_seven);
  EXPECT_EQ(f(35), 42);
}

TEST(Modules, ALibraryFunctionResolvesBackWithItsModule) {
#ifdef _WIN32
  HMODULE kernel32 = ::GetModuleHandleW(L"kernel32.dll");
  ASSERT_NE(kernel32, nullptr);
  void* symbol = reinterpret_cast<void*>(::GetProcAddress(kernel32, "GetCurrentProcessId"));
#else
  void* symbol = ::dlsym(RTLD_DEFAULT, "getpid");  // libc's, not a stub in this executable
#endif
  ASSERT_NE(symbol, nullptr);
  const platform::CodeLocation loc = platform::locate_code(symbol);
  EXPECT_FALSE(loc.module.empty());
  EXPECT_EQ(platform::resolve_code(loc), symbol);
}

TEST(Modules, AMismatchedBuildIdOrMissingModuleIsRejected) {
  platform::CodeLocation loc = platform::locate_code(reinterpret_cast<const void*>(&add_seven));
  platform::CodeLocation other = loc;
  other.build_id.back() = other.build_id.back() == '0' ? '1' : '0';
  EXPECT_THROW(platform::resolve_code(other), mp::ProcessError);
  other = loc;
  other.build_id.clear();
  EXPECT_THROW(platform::resolve_code(other), mp::ProcessError);
  other = loc;
  other.module = "no-such-module-anywhere";
  EXPECT_THROW(platform::resolve_code(other), mp::ProcessError);
  const auto data = std::make_unique<int>(1);  // the heap is in no module
  EXPECT_THROW(platform::locate_code(data.get()), std::invalid_argument);
}

// ---- processes: this binary run again as the child (MP_PLATFORM_CHILD=<role> in its environment;
// argv[1] the shared segment's handle, the rest the role's arguments).
constexpr const char* kChildVar = "MP_PLATFORM_CHILD";
constexpr std::size_t kSegment = 65536;

int spawn_child(const std::string& role, platform::Handle segment,
                const std::vector<std::string>& extra = {},
                const std::vector<platform::Handle>& inherit = {}) {
  std::vector<std::string> args{platform::executable_path(), std::to_string(segment)};
  args.insert(args.end(), extra.begin(), extra.end());
  std::vector<platform::Handle> handles{segment};
  handles.insert(handles.end(), inherit.begin(), inherit.end());
  return platform::spawn_process(platform::executable_path(), args, kChildVar, role, handles);
}

// Reaps the child within `limit`, killing it (and failing) if it has not ended by then.
int reap_within(platform::Handle process, std::chrono::seconds limit = 60s) {
  const auto deadline = platform::Clock::now() + limit;
  while (platform::Clock::now() < deadline) {
    if (auto code = platform::reap(process, false)) return *code;
    platform::sleep_for(5ms);
  }
  ADD_FAILURE() << "child did not end within " << limit.count() << " s; killing it";
  platform::send_signal(process, platform::kKillSignal);
  return platform::reap(process, true).value_or(-1000);
}

// Rounds of a ping-pong on a word of a shared segment, between two processes.
constexpr std::uint32_t kRounds = 500;
bool ping_pong(std::atomic<std::uint32_t>* w, std::uint32_t first) {
  const platform::Nanos slice = 30s;
  for (std::uint32_t i = first; i < kRounds; i += 2) {
    for (std::uint32_t v; (v = w->load()) != i;)
      if (!platform::wait_on_address(w, v, &slice)) return false;
    w->store(i + 1);
    platform::wake_address(w, 1);
  }
  return true;
}

TEST(Process, ChildSharesMemoryAndTheWaitObject) {
  Segment s(kSegment);
  const int pid = spawn_child("ping", s.handle);
  const platform::Handle process = platform::open_process(pid);
  EXPECT_TRUE(ping_pong(s.word(0), 0));
  EXPECT_EQ(reap_within(process), 7);
  EXPECT_EQ(s.word(0)->load(), kRounds);
  platform::close_handle(process);
}

TEST(Process, ArgumentsArriveExactly) {
  Segment s(kSegment);
  const std::vector<std::string> args{"plain",
                                      "two words",
                                      "",
                                      "quote\"inside",
                                      "trailing\\",
                                      "back\\\\\"slash",
                                      "tab\tnew\nline",
                                      "caf\xc3\xa9 \xe2\x82\xac"};
  const platform::Handle process = platform::open_process(spawn_child("echo", s.handle, args));
  ASSERT_EQ(reap_within(process), 0);
  platform::close_handle(process);
  std::string expected;
  for (const auto& a : args) expected += a + '\0';
  EXPECT_EQ(std::string(static_cast<const char*>(s.base), expected.size()), expected);
}

TEST(Process, TerminatedChildReportsMinusSigterm) {
  Segment s(kSegment);
  const platform::Handle process = platform::open_process(spawn_child("sleep", s.handle));
  // Wait until the child runs (it raises word 0), then terminate it while it sleeps.
  const platform::Nanos slice = 30s;
  for (std::uint32_t v; (v = s.word(0)->load()) == 0;)
    ASSERT_TRUE(platform::wait_on_address(s.word(0), v, &slice));
  platform::send_signal(process, platform::kTerminateSignal);
  EXPECT_EQ(reap_within(process), -platform::kTerminateSignal);
  platform::close_handle(process);
}

// A child finds a function of the parent's program by its location (what spawn sends), and
// refuses one whose build id differs.
void write_answer(void* base) { static_cast<std::atomic<std::uint32_t>*>(base)[1].store(42); }

TEST(Process, ChildCallsAFunctionByItsLocationAndRefusesAnotherBuild) {
  const auto ref = mp::detail::CodeRef::of(&write_answer);
  for (const bool same : {true, false}) {
    Segment s(kSegment);
    std::string build_id = ref.build_id;
    if (!same) build_id.back() = build_id.back() == '0' ? '1' : '0';
    const platform::Handle process = platform::open_process(
        spawn_child("call", s.handle, {ref.module, build_id, std::to_string(ref.offset)}));
    EXPECT_EQ(reap_within(process), same ? 0 : 3);
    EXPECT_EQ(s.word(1)->load(), same ? 42u : 0u);
    platform::close_handle(process);
  }
}

// The lifeline's view of the parent (lib/support/lifeline.cpp): a child sees this process.
TEST(Process, ChildSeesItsParentPid) {
  Segment s(kSegment);
  const platform::Handle process = platform::open_process(spawn_child("parent", s.handle));
  EXPECT_EQ(reap_within(process), 0);
  EXPECT_EQ(s.word(1)->load(), static_cast<std::uint32_t>(platform::current_pid()));
  platform::close_handle(process);
}

// kill_and_reap: for a child no process handle was opened for (lib/process.cpp).
TEST(Process, KillAndReapEndsAChild) {
  Segment s(kSegment);
  const int pid = spawn_child("sleep", s.handle);
  const platform::Nanos slice = 30s;
  for (std::uint32_t v; (v = s.word(0)->load()) == 0;)
    ASSERT_TRUE(platform::wait_on_address(s.word(0), v, &slice));
  EXPECT_FALSE(platform::process_dead(pid));
  platform::kill_and_reap(pid);
  EXPECT_TRUE(platform::process_dead(pid));
  platform::kill_and_reap(pid);  // again: nothing left to do, no error
}

// A waiter killed while it waits (Windows: TerminateProcess, with the waiter counted in the
// word's bucket) leaves no wake-up behind that a later waiter of the same word keeps passing on
// to it: that wait still ends (a spurious wake-up or its timeout). It spun forever before.
TEST(Process, AKilledWaiterLeavesNoWakeUpForOthersToChase) {
  Segment s(kSegment);
  const int pid = spawn_child("sleep", s.handle);
  const platform::Nanos slice = 30s;
  for (std::uint32_t v; (v = s.word(0)->load()) == 0;)
    ASSERT_TRUE(platform::wait_on_address(s.word(0), v, &slice));
#ifdef _WIN32
  // The child counts itself as a waiter of word 1 just after it set word 0.
  const auto counted = [&] {
    std::uint32_t n = 0;
    for (const auto& w : platform::win32::locate_shared(s.word(1))->header->waiters) n += w.load();
    return n != 0;
  };
  for (const auto until = platform::Clock::now() + 30s; !counted();) {
    ASSERT_LT(platform::Clock::now(), until) << "the child never waited";
    platform::sleep_for(1ms);
  }
#endif
  platform::kill_and_reap(pid);
  platform::wake_address(s.word(1), 1);  // a token for the dead waiter
  std::atomic<bool> done{false};
  std::thread waiter([&] {
    const platform::Nanos t = 200ms;
    platform::wait_on_address(s.word(1), 0, &t);
    done = true;
  });
  const auto until = platform::Clock::now() + 20s;
  while (!done && platform::Clock::now() < until) platform::sleep_for(5ms);
  EXPECT_TRUE(done) << "a 200 ms wait did not end within 20 s";
  s.word(1)->store(1);  // ends a wait stuck without the fix, so the test reports instead of hanging
  platform::wake_address(s.word(1), 1);
  waiter.join();
}

// A child attaches to a named segment by its name and sees its exact size; the name exists for
// it, and a missing one does not.
TEST(Process, ChildAttachesANamedSegmentByName) {
  Segment s(kSegment);
  const std::string name = unique_shm_name();
  constexpr std::size_t kSize = 70001;
  {
    Named made(platform::create_named_shm(name, kSize), kSize);
    made.bytes()[kSize - 1] = 'p';
    const platform::Handle process =
        platform::open_process(spawn_child("named", s.handle, {name, std::to_string(kSize)}));
    EXPECT_EQ(reap_within(process), 0);
    platform::close_handle(process);
    EXPECT_EQ(made.bytes()[0], 'c');
  }
  platform::unlink_shm(name);
}

// The robust lock (lib/futex_lock) on the wait object: a holder killed while holding it is found
// dead (process_dead) and the lock taken over, in another process.
TEST(RobustLock, KilledHolderIsTakenOver) {
  Segment s(kSegment);
  auto* lock = new (static_cast<char*>(s.base) + 64) mp::detail::FutexLock;
  const platform::Handle process = platform::open_process(spawn_child("hold", s.handle));
  const platform::Nanos slice = 30s;
  for (std::uint32_t v; (v = s.word(0)->load()) == 0;)
    ASSERT_TRUE(platform::wait_on_address(s.word(0), v, &slice));
  ASSERT_TRUE(lock->locked());
  const std::chrono::nanoseconds poll{0};
  EXPECT_EQ(lock->acquire(&poll), mp::detail::Acquire::timed_out);  // the holder lives
  platform::send_signal(process, platform::kKillSignal);
  reap_within(process);
  const std::chrono::nanoseconds bound = 30s;
  EXPECT_EQ(lock->acquire(&bound), mp::detail::Acquire::owner_died);
  EXPECT_TRUE(lock->held_by_this_process());
  lock->release();
  platform::close_handle(process);
}

// The lifeline: a child's own children end when it is killed (Windows: its kill-on-close job;
// Linux: the library's lifeline is above this layer, so the check is Windows-only).
TEST(Process, GrandchildEndsWithItsKilledParent) {
#ifndef _WIN32
  GTEST_SKIP() << "Linux's lifeline is lib/lifeline.cpp (a pipe the child watches), tested by "
                  "test_reliability";
#endif
  Segment s(kSegment);
  const platform::Handle process = platform::open_process(spawn_child("spawner", s.handle));
  const platform::Nanos slice = 30s;
  for (std::uint32_t v; (v = s.word(0)->load()) == 0;)
    ASSERT_TRUE(platform::wait_on_address(s.word(0), v, &slice));
  const int grandchild = static_cast<int>(s.word(2)->load());
  ASSERT_GT(grandchild, 0);
  EXPECT_FALSE(platform::process_dead(grandchild));
  platform::send_signal(process, platform::kKillSignal);
  reap_within(process);
  const auto deadline = platform::Clock::now() + 30s;
  while (!platform::process_dead(grandchild) && platform::Clock::now() < deadline)
    platform::sleep_for(10ms);
  EXPECT_TRUE(platform::process_dead(grandchild)) << "the grandchild outlived its killed parent";
  platform::close_handle(process);
}

// ---- pipes, sockets and named pipes (platform/io.hpp)

// Closes a handle at the end of a scope.
struct Owned {
  explicit Owned(platform::Handle handle = platform::kInvalidHandle) : h(handle) {}
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;
  ~Owned() { reset(); }
  void reset() {
    platform::close_handle(h);
    h = platform::kInvalidHandle;
  }
  platform::Handle h;
};

// The OSError code `fn` throws (-1: none thrown).
template <class F>
int os_error(F fn) {
  try {
    fn();
  } catch (const mp::OSError& e) {
    return e.code().value();
  }
  return -1;
}

const platform::Nanos kBound = 30s;     // a wait that must succeed
const platform::Nanos kNothing = 50ms;  // a wait that must time out

platform::Clock::time_point soon() { return platform::Clock::now() + 50ms; }
platform::Clock::time_point bound() { return platform::Clock::now() + kBound; }

// Reads exactly `n` bytes (by kBound).
std::string read_exactly(platform::Handle h, std::size_t n) {
  std::string out(n, '\0');
  const auto deadline = bound();
  for (std::size_t got = 0; got < n;) {
    const std::size_t k = platform::read_some_until(h, out.data() + got, n - got, deadline);
    if (k == 0) return out.substr(0, got);
    got += k;
  }
  return out;
}

// Sends "ping" one way and "pong" back.
void round_trip(platform::Handle a, platform::Handle b) {
  platform::write_all(a, "ping", 4);
  EXPECT_EQ(read_exactly(b, 4), "ping");
  platform::write_all_until(b, "pong", 4, bound());
  EXPECT_EQ(read_exactly(a, 4), "pong");
}

TEST(Io, PipeRoundTripWithTimeouts) {
  const auto r_w = platform::make_pipe();
  const platform::Handle r = r_w.first, w = r_w.second;
  Owned read_end(r), write_end(w);
  EXPECT_FALSE(platform::wait_readable(r, &kNothing));
  char buf[16];
  EXPECT_EQ(os_error([&] { platform::read_some_until(r, buf, sizeof buf, soon()); }), ETIMEDOUT);
  platform::write_all(w, "hello", 5);
  EXPECT_TRUE(platform::wait_readable(r, &kBound));
  EXPECT_EQ(platform::wait_any({r}, &kBound), std::vector<std::size_t>{0});
  EXPECT_EQ(read_exactly(r, 5), "hello");
  EXPECT_FALSE(platform::wait_readable(r, &kNothing));  // drained
  EXPECT_EQ(os_error([&] { platform::read_some_until(r, buf, sizeof buf, soon()); }), ETIMEDOUT);
  platform::write_all(w, "again", 5);  // the pipe still works after a timed-out read
  EXPECT_EQ(read_exactly(r, 5), "again");
}

TEST(Io, DuplexPairCarriesLargeTransfersAndTimesOutWrites) {
  const auto a_b = platform::socket_pair();
  const platform::Handle a = a_b.first, b = a_b.second;
  Owned first(a), second(b);
  char c = 0;
  std::size_t got = 0;
  EXPECT_EQ(platform::try_read(b, &c, 1, got), platform::TryRead::would_block);
  round_trip(a, b);
  // More than any pipe or socket buffer, while the other end reads it.
  std::string big(4 << 20, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7 + i / 4093);
  std::string received;
  std::thread reader([&] { received = read_exactly(b, big.size()); });
  platform::write_all(a, big.data(), big.size());
  reader.join();
  EXPECT_TRUE(received == big);
  // Nobody reads: a write of more than the buffer holds times out.
  EXPECT_EQ(os_error([&] { platform::write_all_until(a, big.data(), big.size(), soon()); }),
            ETIMEDOUT);
}

TEST(Io, EndOfFileWhenThePeerCloses) {
  {
    const auto a_b = platform::socket_pair();
    const platform::Handle a = a_b.first, b = a_b.second;
    Owned first(a), second(b);
    platform::write_all(a, "x", 1);
    first.reset();
    EXPECT_EQ(read_exactly(b, 1), "x");
    EXPECT_TRUE(platform::wait_readable(b, &kBound));
    char c;
    EXPECT_EQ(platform::read_some_until(b, &c, 1, bound()), 0u);
    EXPECT_EQ(platform::read_some(b, &c, 1), 0u);
    EXPECT_TRUE(platform::peer_closed(b));
    EXPECT_EQ(platform::read_token(b), 0);
    EXPECT_FALSE(platform::write_token(b));
    EXPECT_EQ(os_error([&] { platform::write_all(b, "y", 1); }), EPIPE);
  }
  {
    const auto r_w = platform::make_pipe();
    const platform::Handle r = r_w.first, w = r_w.second;
    Owned read_end(r), write_end(w);
    write_end.reset();
    EXPECT_EQ(platform::read_to_end(r), "");
  }
  {
    const auto r_w = platform::make_pipe();
    const platform::Handle r = r_w.first, w = r_w.second;
    Owned read_end(r), write_end(w);
    read_end.reset();
    EXPECT_EQ(os_error([&] { platform::write_all(w, "z", 1); }), EPIPE);
  }
}

TEST(Io, WakeTokensAndReadySets) {
  const auto a_b = platform::socket_pair();
  const platform::Handle a = a_b.first, b = a_b.second;
  Owned first(a), second(b);
  EXPECT_EQ(platform::read_token(b), -1);
  EXPECT_FALSE(platform::peer_closed(b));
  EXPECT_TRUE(platform::write_token(a));
  EXPECT_TRUE(platform::wait_readable(b, &kBound));
  EXPECT_EQ(platform::read_token(b), 1);
  Owned event(platform::make_event());
  Owned set(platform::make_ready_set(b, event.h));
  EXPECT_FALSE(platform::wait_readable(set.h, &kNothing));
  platform::set_event(event.h, true);
  EXPECT_TRUE(platform::wait_readable(set.h, &kBound));
  EXPECT_TRUE(platform::wait_readable(set.h, &kBound));  // stays set
  platform::set_event(event.h, false);
  EXPECT_FALSE(platform::wait_readable(set.h, &kNothing));
  EXPECT_TRUE(platform::write_token(a));
  EXPECT_TRUE(platform::wait_readable(set.h, &kBound));
}

// More handles than one WaitForMultipleObjects takes (64).
TEST(Io, WaitAnyReportsEveryReadyHandleOfMany) {
  constexpr std::size_t kPairs = 70;
  std::vector<std::unique_ptr<Owned>> ends;
  std::vector<platform::Handle> writers, readers;
  for (std::size_t i = 0; i < kPairs; ++i) {
    const auto r_w = platform::socket_pair();
    const platform::Handle r = r_w.first, w = r_w.second;
    ends.push_back(std::make_unique<Owned>(r));
    ends.push_back(std::make_unique<Owned>(w));
    readers.push_back(r);
    writers.push_back(w);
  }
  EXPECT_TRUE(platform::wait_any(readers, &kNothing).empty());
  // Ready beyond the first 64 alone, while the wait sleeps (most likely: the write comes 200 ms
  // later; the result is the same if it comes first): the wait must wake for it.
  const auto start = platform::Clock::now();
  std::thread writer([&] {
    platform::sleep_for(200ms);
    platform::write_all(writers[66], "b", 1);
  });
  EXPECT_EQ(platform::wait_any(readers, &kBound), std::vector<std::size_t>{66});
  EXPECT_LT(platform::Clock::now() - start, kBound / 2);
  writer.join();
  platform::write_all(writers[5], "a", 1);
  std::vector<std::size_t> ready;
  const auto deadline = bound();
  while (ready.size() < 2 && platform::Clock::now() < deadline)
    ready = platform::wait_any(readers, &kBound);
  EXPECT_EQ(ready, (std::vector<std::size_t>{5, 66}));
  EXPECT_EQ(read_exactly(readers[66], 1), "b");
  EXPECT_EQ(platform::wait_any(readers, &kBound), std::vector<std::size_t>{5});
}

TEST(Io, NamedListenerAcceptsClients) {
  std::string dir;
  const std::string address = platform::private_socket_address(dir);
  {
    Owned listener(platform::listen_unix(address, 8));
    platform::set_nonblocking(listener.h);
    EXPECT_FALSE(platform::try_accept(listener.h).has_value());
    EXPECT_FALSE(platform::wait_readable(listener.h, &kNothing));
    for (int i = 0; i < 2; ++i) {  // the listener keeps listening after an accept
      Owned client(platform::connect_unix(address));
      ASSERT_TRUE(platform::wait_readable(listener.h, &kBound));
      const auto accepted = platform::try_accept(listener.h);
      ASSERT_TRUE(accepted.has_value());
      Owned server(*accepted);
      round_trip(client.h, server.h);
      EXPECT_EQ(platform::peer_pid(server.h), platform::current_pid());
      EXPECT_TRUE(platform::peer_is_same_user(server.h));
      client.reset();
      char c;
      EXPECT_EQ(platform::read_some_until(server.h, &c, 1, bound()), 0u);
    }
  }
  platform::unlink_path(address);
  if (!dir.empty()) platform::remove_directory(dir);
  EXPECT_THROW(platform::connect_unix(address), mp::OSError);  // nobody listens any more
}

// Guarantee: clients that connect back to back before an accept are all accepted, each with its
// own connection. On Windows the second opens the listener's spare pipe instance before
// ConnectNamedPipe runs on it (ERROR_PIPE_CONNECTED). Before: the listener took that instance for
// one still waiting (ERROR_IO_INCOMPLETE for ever), spun, and offered no instance, so every later
// client waited out its 20 s (Connection.SlowPeersDoNotDelayALegitimateClient under Wine).
TEST(Io, NamedListenerAcceptsClientsThatConnectedBeforeTheAccept) {
  std::string dir;
  const std::string address = platform::private_socket_address(dir);
  {
    Owned listener(platform::listen_unix(address, 8));
    platform::set_nonblocking(listener.h);
    for (int round = 0; round < 3; ++round) {
      Owned first(platform::connect_unix(address)), second(platform::connect_unix(address));
      platform::write_all(first.h, "1", 1);
      platform::write_all(second.h, "2", 1);
      std::string seen;
      for (int i = 0; i < 2; ++i) {
        ASSERT_TRUE(platform::wait_readable(listener.h, &kBound)) << "round " << round;
        const auto accepted = platform::try_accept(listener.h);
        ASSERT_TRUE(accepted.has_value()) << "round " << round << ", accept " << i;
        Owned server(*accepted);
        const std::string which = read_exactly(server.h, 1);
        seen += which;
        platform::write_all(server.h, which.data(), 1);
      }
      std::sort(seen.begin(), seen.end());
      EXPECT_EQ(seen, "12");
      EXPECT_EQ(read_exactly(first.h, 1), "1");
      EXPECT_EQ(read_exactly(second.h, 1), "2");
    }
  }
  platform::unlink_path(address);
  if (!dir.empty()) platform::remove_directory(dir);
}

TEST(Io, TcpLoopbackRoundTrip) {
  Owned listener(platform::listen_tcp("127.0.0.1", 0, 8));
  const std::uint16_t port = platform::local_port(listener.h);
  ASSERT_GT(port, 0);
  platform::set_nonblocking(listener.h);
  EXPECT_FALSE(platform::try_accept(listener.h).has_value());
  Owned client(platform::connect_tcp("127.0.0.1", port));
  ASSERT_TRUE(platform::wait_readable(listener.h, &kBound));
  const auto accepted = platform::try_accept(listener.h);
  ASSERT_TRUE(accepted.has_value());
  Owned server(*accepted);
  round_trip(client.h, server.h);
  char c;
  std::size_t got = 0;
  EXPECT_EQ(platform::try_read(server.h, &c, 1, got), platform::TryRead::would_block);
  EXPECT_EQ(os_error([&] { platform::read_some_until(server.h, &c, 1, soon()); }), ETIMEDOUT);
  EXPECT_FALSE(platform::wait_readable(server.h, &kNothing));
  EXPECT_EQ(platform::wait_any({listener.h, server.h}, &kNothing), std::vector<std::size_t>{});
  platform::write_all(client.h, "q", 1);
  EXPECT_EQ(platform::wait_any({listener.h, server.h}, &kBound), std::vector<std::size_t>{1});
  EXPECT_EQ(read_exactly(server.h, 1), "q");  // accepted sockets block, whatever the listener
  EXPECT_FALSE(platform::peer_pid(server.h).has_value());
  EXPECT_TRUE(platform::peer_is_same_user(server.h));
  // The peer's numeric address and port (Listener::last_accepted()): the client's own port.
  const auto peer = platform::peer_tcp_address(server.h);
  ASSERT_TRUE(peer.has_value());
  EXPECT_EQ(peer->first, "127.0.0.1");
  EXPECT_EQ(peer->second, platform::local_port(client.h));
  client.reset();
  EXPECT_EQ(platform::read_some_until(server.h, &c, 1, bound()), 0u);
}

// ---- handle passing (platform/handle_passing.hpp)

TEST(HandlePassing, DatagramsCarryTaggedHandles) {
  const auto a_b = platform::datagram_pair();
  const platform::Handle a = a_b.first, b = a_b.second;
  Owned sender(a), receiver(b);
  Segment s(4096);
  std::memcpy(s.base, "shared", 7);
  std::uint64_t tag = 0;
  platform::Handle h = platform::kInvalidHandle;
  EXPECT_FALSE(platform::receive_descriptor(b, tag, h, true));
  ASSERT_TRUE(platform::send_descriptor(a, 42, s.handle));
  ASSERT_TRUE(platform::send_descriptor(a, 43, s.handle));
  // Peeking leaves the datagram queued; receiving takes it.
  const std::pair<bool, std::uint64_t> steps[] = {{true, 42}, {true, 42}, {false, 42}, {false, 43}};
  for (const auto& [peek, expected] : steps) {
    ASSERT_TRUE(platform::receive_descriptor(b, tag, h, peek));
    EXPECT_EQ(tag, expected);
    Owned received(h);
    EXPECT_EQ(platform::shared_memory_size(h), 4096u);
    void* view = platform::map_shared(h, 4096);
    EXPECT_STREQ(static_cast<const char*>(view), "shared");
    platform::unmap(view, 4096);
  }
  EXPECT_FALSE(platform::receive_descriptor(b, tag, h, false));
}

TEST(HandlePassing, ChildUsesHandlesPassedToIt) {
  Segment s(kSegment);
  const auto a_b = platform::socket_pair();
  const platform::Handle a = a_b.first, b = a_b.second;
  Owned parent_end(a), child_end(b);
  const auto d_send_d_receive = platform::datagram_pair();
  const platform::Handle d_send = d_send_d_receive.first, d_receive = d_send_d_receive.second;
  Owned datagram_sender(d_send), datagram_receiver(d_receive);
  const auto r_w = platform::make_pipe();
  const platform::Handle r = r_w.first, w = r_w.second;
  Owned read_end(r), write_end(w);
  Segment passed(4096), by_datagram(4096);
  // Sent before the child exists: the handles wait in the stream and the datagram pipe.
  platform::send_with_descriptors(a, "go", 2, {passed.handle, w});
  ASSERT_TRUE(platform::send_descriptor(d_send, 9, by_datagram.handle));
  const platform::Handle process = platform::open_process(spawn_child(
      "receive", s.handle, {std::to_string(b), std::to_string(d_receive)}, {b, d_receive}));
  write_end.reset();  // the child holds the only write end now
  // Until end of file: the child's close of the write end it received (bounded: a child that
  // failed before receiving leaves the end in flight, open).
  std::string text;
  char buf[64];
  const auto deadline = platform::Clock::now() + 60s;
  for (std::size_t n; (n = platform::read_some_until(r, buf, sizeof buf, deadline)) > 0;)
    text.append(buf, n);
  EXPECT_EQ(text, "written by the child");
  EXPECT_EQ(reap_within(process), 0);
  platform::close_handle(process);
  EXPECT_STREQ(static_cast<const char*>(passed.base), "stream");
  EXPECT_STREQ(static_cast<const char*>(by_datagram.base), "datagram 9");
}

int child_main(const std::string& role, int argc, char** argv) {
  const auto segment = static_cast<platform::Handle>(std::strtoll(argv[1], nullptr, 10));
  void* base = platform::map_shared(segment, kSegment);
  auto* words = static_cast<std::atomic<std::uint32_t>*>(base);
  int code = 1;
  if (role == "ping") {
    code = ping_pong(&words[0], 1) ? 7 : 2;
  } else if (role == "echo") {
    std::string all;
    const std::vector<std::string> args = platform::program_arguments(argc, argv);
    for (std::size_t i = 2; i < args.size(); ++i) all += args[i] + '\0';
    std::memcpy(base, all.data(), std::min(all.size(), kSegment));
    code = 0;
  } else if (role == "call") {
    // argv[2..4]: a CodeLocation (module, build id, offset) of void(void* segment).
    const std::vector<std::string> args = platform::program_arguments(argc, argv);
    const platform::CodeLocation loc{args.at(2), args.at(3), std::stoull(args.at(4))};
    try {
      reinterpret_cast<void (*)(void*)>(platform::resolve_code(loc))(base);
      code = 0;
    } catch (const mp::ProcessError&) {
      code = 3;
    }
  } else if (role == "parent") {
    words[1].store(static_cast<std::uint32_t>(platform::parent_pid()));
    code = 0;
  } else if (role == "named") {
    // argv[2]: a named segment's name, argv[3]: its size.
    const std::string name = argv[2];
    const std::size_t size = std::stoull(argv[3]);
    code = 10;
    try {
      Named seen(platform::open_shm(name), size);
      if (platform::shared_memory_size(seen.handle) != size) return 11;
      if (seen.bytes()[size - 1] != 'p') return 12;
      if (shm_error([&] { platform::close_handle(platform::create_named_shm(name, 1)); }) !=
          std::errc::file_exists)
        return 13;
      if (shm_error([&] { platform::close_handle(platform::open_shm(name + "-not")); }) !=
          std::errc::no_such_file_or_directory)
        return 14;
      seen.bytes()[0] = 'c';
      code = 0;
    } catch (const std::exception&) {
    }
  } else if (role == "hold") {
    auto* lock =
        std::launder(reinterpret_cast<mp::detail::FutexLock*>(static_cast<char*>(base) + 64));
    lock->acquire(nullptr);
    words[1].store(0);
    words[0].store(1);
    platform::wake_address(&words[0], 1);
    for (;;) platform::wait_on_address(&words[1], 0, nullptr);  // until killed, holding the lock
  } else if (role == "spawner") {
    // Starts a sleeping grandchild on a segment of its own, reports its pid in word 2, then sleeps.
    const platform::Handle own = platform::create_shared_memory(kSegment);
    void* own_base = platform::map_shared(own, kSegment);
    const int grandchild = spawn_child("sleep", own);
    auto* own_words = static_cast<std::atomic<std::uint32_t>*>(own_base);
    for (std::uint32_t v; (v = own_words[0].load()) == 0;)
      platform::wait_on_address(&own_words[0], v, nullptr);
    words[2].store(static_cast<std::uint32_t>(grandchild));
    words[1].store(0);
    words[0].store(1);
    platform::wake_address(&words[0], 1);
    for (;;) platform::wait_on_address(&words[1], 0, nullptr);  // until killed
  } else if (role == "receive") {
    // argv[2]: a stream end with two handles waiting (a segment, a pipe's write end); argv[3]: a
    // datagram end with one (a segment).
    const auto stream = static_cast<platform::Handle>(std::strtoll(argv[2], nullptr, 10));
    const auto datagrams = static_cast<platform::Handle>(std::strtoll(argv[3], nullptr, 10));
    char go[2];
    std::vector<platform::Handle> handles;
    std::uint64_t tag = 0;
    platform::Handle third = platform::kInvalidHandle;
    if (platform::receive_with_descriptors(stream, go, sizeof go, handles) && handles.size() == 2 &&
        platform::receive_descriptor(datagrams, tag, third, false)) {
      void* view = platform::map_shared(handles[0], 4096);
      std::memcpy(view, "stream", 7);
      platform::unmap(view, 4096);
      view = platform::map_shared(third, 4096);
      const std::string text = "datagram " + std::to_string(tag);
      std::memcpy(view, text.c_str(), text.size() + 1);
      platform::unmap(view, 4096);
      platform::write_all(handles[1], "written by the child", 20);
      code = 0;
    }
    for (platform::Handle h : handles) platform::close_handle(h);
    platform::close_handle(third);
  } else if (role == "sleep") {
    words[1].store(0);
    words[0].store(1);
    platform::wake_address(&words[0], 1);
    for (;;) platform::wait_on_address(&words[1], 0, nullptr);  // until terminated
  }
  platform::unmap(base, kSegment);
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* role = std::getenv(kChildVar); role && argc >= 2)
    return child_main(role, argc, argv);
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
