// mp::shared_memory under every start method (CPython: _TestSharedMemory in
// Lib/test/_test_multiprocessing.py), plus the tracker's crash guarantees and gh-82300.
// On Windows a segment is a section named Local\NAME that lives while a handle to it is open
// (CPython's Windows SharedMemory: unlink() does nothing, nothing is tracked); the tests assert
// that there, and leave out fork, /dev/shm, the tracker's POSIX guarantees and the probe program.
#ifndef _WIN32
#  include <dirent.h>
#  include <sys/stat.h>
#endif

#include <csignal>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <regex>
#include <set>
#include <thread>

#include "mp/queues.hpp"
#include "mp/shared_memory.hpp"
#include "mp_test.hpp"
#include "shm_tracker.hpp"
#include "platform/wait.hpp"

using namespace mp_test;
using mp::shared_memory::ShareableList;
using mp::shared_memory::SharedMemory;
using Bytes = std::vector<std::byte>;

namespace {

bool segment_exists(const std::string& name) {
#ifdef _WIN32
  try {
    SharedMemory(name).close();
    return true;
  } catch (const mp::OSError& e) {
    if (e.code().value() != ENOENT) throw;
    return false;
  }
#else
  struct stat st {};
  return ::stat(("/dev/shm/" + name).c_str(), &st) == 0;
#endif
}

std::string pid_text() { return std::to_string(mp::platform::current_pid()); }

// The tracker's watcher works asynchronously: wait (bounded) until the name is gone.
bool gone_within(const std::string& name, std::chrono::nanoseconds timeout = kTimeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (segment_exists(name)) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

#ifndef _WIN32
std::set<std::string> dev_shm_entries() {
  std::set<std::string> out;
  if (DIR* d = ::opendir("/dev/shm")) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') out.insert(e->d_name);
    ::closedir(d);
  }
  return out;
}

std::string run(const std::string& command) {
  std::string out;
  FILE* f = ::popen(("timeout 60 " + command + " 2>&1").c_str(), "r");
  if (!f) return out;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  ::pclose(f);
  return out;
}
#endif

// Each test leaves nothing tracked by this process (so nothing for the watcher to remove).
class SharedMemoryTest : public StartMethodTest {
 protected:
  void TearDown() override {
    EXPECT_EQ(mp::detail::shm_tracker::registered_count(), 0u)
        << "a segment made by the test was not unlinked";
    StartMethodTest::TearDown();
  }
};

// ---- targets (plain functions: they run under spawn too)

void write_pattern(SharedMemory shm) {
  auto b = shm.buf();
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::byte>(i * 7);
  shm.close();
}

void attach_and_write(std::string name, int value) {
  SharedMemory shm(name);
  shm.buf()[0] = static_cast<std::byte>(value);
  shm.close();  // and exits: an attacher's exit never unlinks (gh-82300)
}

void edit_list(ShareableList sl) {
  sl.set(0, std::int64_t{-5});
  sl.set(1, std::string("child\0", 6));
  sl.set(-1, std::monostate{});
}

void create_and_wait(mp::Queue<std::string> names, bool track) {
  SharedMemory shm(std::nullopt, true, 4096, track);
  names.put(shm.name());
  for (;;) std::this_thread::sleep_for(1h);  // killed by the test
}

void create_and_exit(mp::Queue<std::string> names) {
  SharedMemory shm(std::nullopt, true, 100);
  ShareableList sl{1, "x"};
  names.put(shm.name());
  names.put(sl.shm().name());
}  // neither unlinked: the library removes them after this process ends

void create_and_abort(mp::Queue<std::string> names) {
  SharedMemory shm(std::nullopt, true, 100);
  names.put(shm.name());
  std::abort();
}

#ifndef _WIN32
void wait_for(mp::Event release) { release.wait(kTimeout); }

// Creates a segment, forks a grandchild that waits for `release`, then dies by SIGKILL.
void create_fork_and_die(mp::Queue<std::string> names, mp::Event release) {
  SharedMemory shm(std::nullopt, true, 64);
  mp::Process g(mp::get_context("fork"), wait_for, release);
  g.start();
  names.put(shm.name());
  ::kill(::getpid(), SIGKILL);
}
#endif

void use_manager_segment(SharedMemory shm, ShareableList sl) {
  shm.buf()[1] = std::byte{9};
  sl.set(0, 2.5);
}

}  // namespace

// ---------------------------------------------------------------- single process

TEST(SharedMemory, CreateAttachReadWrite) {
  SharedMemory shm(std::nullopt, true, 1000);
  EXPECT_TRUE(std::regex_match(shm.name(), std::regex("psm_[0-9a-f]{16}"))) << shm.name();
  EXPECT_EQ(shm.size(), 1000u);
  EXPECT_EQ(shm.buf().size(), 1000u);
  for (std::byte b : shm.buf()) ASSERT_EQ(b, std::byte{0});
  shm.buf()[999] = std::byte{0x5a};
  SharedMemory other(shm.name());
  EXPECT_EQ(other.size(), 1000u);  // exactly what the creator asked for, not page-rounded
  EXPECT_EQ(other.buf()[999], std::byte{0x5a});
  other.buf()[0] = std::byte{1};
  EXPECT_EQ(shm.buf()[0], std::byte{1});
#ifndef _WIN32
  struct stat st {};
  ASSERT_EQ(::stat(("/dev/shm/" + shm.name()).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
#endif
  other.close();
  EXPECT_TRUE(other.buf().empty());
  shm.close();
  shm.close();  // idempotent
  shm.unlink();
  EXPECT_FALSE(segment_exists(shm.name()));
}

TEST(SharedMemory, GivenNameLeadingSlashAndCopies) {
  const std::string name = "mp_test_" + pid_text();
  SharedMemory shm("/" + name, true, 10);
  EXPECT_EQ(shm.name(), name);
  SharedMemory copy = shm;
  copy.buf()[3] = std::byte{3};
  EXPECT_EQ(shm.buf()[3], std::byte{3});
  copy.close();  // a copy is the same object
  EXPECT_TRUE(shm.buf().empty());
  shm.unlink();
  EXPECT_FALSE(segment_exists(name));
}

TEST(SharedMemory, GeneratedNamesDiffer) {
  SharedMemory a(std::nullopt, true, 1), b(std::nullopt, true, 1);
  EXPECT_NE(a.name(), b.name());
  a.unlink();
  b.unlink();
}

TEST(SharedMemory, ErrorsAsCPython) {
#ifndef _WIN32
  const auto before = dev_shm_entries();
#endif
  try {
    SharedMemory missing("psm_no_such_segment_" + pid_text());
    FAIL() << "attached to a missing name";
  } catch (const mp::OSError& e) {
    EXPECT_EQ(e.code().value(), ENOENT);
  }
  SharedMemory shm(std::nullopt, true, 16);
  try {
    SharedMemory again(shm.name(), true, 16);
    FAIL() << "created an existing name";
  } catch (const mp::OSError& e) {
    EXPECT_EQ(e.code().value(), EEXIST);
  }
  EXPECT_EQ(shm.size(), 16u);  // the existing segment is untouched
  EXPECT_THROW(SharedMemory(std::nullopt, true, 0), std::invalid_argument);
  EXPECT_THROW(SharedMemory(std::nullopt, true, -1), std::invalid_argument);
  EXPECT_THROW((SharedMemory(std::nullopt)),
               std::invalid_argument);  // (parenthesized: not a declaration)
  // Absurd sizes fail cleanly and leave no name behind.
  EXPECT_THROW(SharedMemory(std::nullopt, true, std::int64_t{1} << 62), mp::OSError);
  EXPECT_THROW(SharedMemory(std::nullopt, true, std::numeric_limits<std::int64_t>::max()),
               mp::OSError);
  for (const std::string& bad :
       std::vector<std::string>{"", "a/b", std::string("a\0b", 3), std::string(300, 'x'), ".."}) {
    try {
      SharedMemory s(bad, true, 8);
      FAIL() << "accepted name '" << bad << "'";
    } catch (const mp::OSError& e) {
      EXPECT_TRUE(e.code().value() == EINVAL || e.code().value() == ENAMETOOLONG) << e.what();
    }
  }
  shm.unlink();
#ifdef _WIN32
  // unlink() does nothing on Windows (CPython's neither): the name lives while a handle does.
  EXPECT_NO_THROW(shm.unlink());
  EXPECT_TRUE(segment_exists(shm.name()));
  const std::string name = shm.name();
  shm.close();
  EXPECT_FALSE(segment_exists(name));
#else
  try {
    shm.unlink();
    FAIL() << "unlinked twice";
  } catch (const mp::OSError& e) {
    EXPECT_EQ(e.code().value(), ENOENT);
  }
  EXPECT_EQ(dev_shm_entries(), before);
#endif
}

// A segment gets its name only once complete: an attacher racing with the creator sees either
// no segment (ENOENT) or the whole of it, never an empty or half-sized one.
TEST(SharedMemory, AttacherNeverSeesAHalfMadeSegment) {
  const std::string name = "mp_test_race_" + pid_text();
  std::atomic<bool> done{false};
  std::atomic<int> seen{0}, bad{0};
  std::thread attacher([&] {
    while (!done.load()) {
      try {
        SharedMemory s(name);
        if (s.size() != 3 * 4096 + 5) ++bad;
        ++seen;
      } catch (const mp::OSError& e) {
        if (e.code().value() != ENOENT) ++bad;
      } catch (const std::exception&) {
        ++bad;  // e.g. "cannot mmap an empty file": a segment seen before it was sized
      }
    }
  });
  for (int i = 0; i < 2000; ++i) {
#ifdef _WIN32
    // The name lives while the attacher holds it: then it cannot be made again yet.
    try {
      SharedMemory shm(name, true, 3 * 4096 + 5);
      shm.unlink();
    } catch (const mp::OSError& e) {
      if (e.code().value() != EEXIST) throw;
    }
#else
    SharedMemory shm(name, true, 3 * 4096 + 5);
    shm.unlink();
#endif
  }
  done = true;
  attacher.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_FALSE(segment_exists(name));
}

TEST(SharedMemory, UntrackedSegmentIsLeftToTheUser) {
  SharedMemory shm(std::nullopt, true, 8, /*track=*/false);
  EXPECT_EQ(mp::detail::shm_tracker::registered_count(), 0u);
  shm.unlink();
}

// ---------------------------------------------------------------- ShareableList

TEST(ShareableList, ItemsAsCPython) {
  ShareableList sl{
      std::int64_t{1}, 2.5, true, "text", std::monostate{}, Bytes{std::byte{1}, std::byte{2}}};
  ASSERT_EQ(sl.size(), 6u);
  EXPECT_EQ(sl[0], ShareableList::value_type(std::int64_t{1}));
  EXPECT_EQ(sl[1], ShareableList::value_type(2.5));
  EXPECT_EQ(sl[2], ShareableList::value_type(true));
  EXPECT_EQ(sl[3], ShareableList::value_type(std::string("text")));
  EXPECT_EQ(sl[4], ShareableList::value_type(std::monostate{}));
  EXPECT_EQ(sl[-1], ShareableList::value_type(Bytes{std::byte{1}, std::byte{2}}));
  EXPECT_EQ(sl.format(), "qdxxxxxxx?4sxxxxxx?x2s");
  // CPython's sizes: 8 (length) + 7 * 8 (offsets) + 6 slots of 8 + 6 formats of 8 + 6 codes.
  EXPECT_EQ(sl.shm().size(), 8u + 56 + 48 + 48 + 6);
  sl.set(0, std::string("1234567"));  // fits the 8-byte slot
  EXPECT_EQ(sl[0], ShareableList::value_type(std::string("1234567")));
  EXPECT_THROW(sl.set(3, std::string(9, 'x')), std::invalid_argument);
  EXPECT_THROW(sl[6], std::out_of_range);
  EXPECT_THROW(sl[-7], std::out_of_range);
  EXPECT_THROW(sl.set(6, 1.0), std::out_of_range);
  EXPECT_EQ(sl.index(ShareableList::value_type(true)), 2u);
  EXPECT_EQ(sl.count(ShareableList::value_type(2.5)), 1u);
  EXPECT_THROW(sl.index(ShareableList::value_type(9.0)), std::invalid_argument);
  ShareableList other(std::nullopt, sl.shm().name());
  EXPECT_EQ(other.tolist(), sl.tolist());
  sl.shm().unlink();
}

TEST(ShareableList, KeepsTrailingNulsAndMultibyteUtf8) {
  const std::string nuls("ab\0\0", 4);
  const std::string utf8 =
      "h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93 \xf0\x9f\x98\x80";  // 4 multi-byte chars
  ShareableList sl{nuls, utf8, Bytes{std::byte{7}, std::byte{0}}, std::string(8, '\0')};
  ShareableList other(std::nullopt, sl.shm().name());
  EXPECT_EQ(other[0], ShareableList::value_type(nuls));
  EXPECT_EQ(other[1], ShareableList::value_type(utf8));
  EXPECT_EQ(other[2], ShareableList::value_type(Bytes{std::byte{7}, std::byte{0}}));
  EXPECT_EQ(other[3], ShareableList::value_type(std::string(8, '\0')));
  // A str exactly filling its slot keeps its NULs too.
  other.set(3, std::string("1234567\0\0\0\0\0\0\0\0\0", 16));
  EXPECT_EQ(sl[3], ShareableList::value_type(std::string("1234567\0\0\0\0\0\0\0\0\0", 16)));
  sl.shm().unlink();
}

TEST(ShareableList, EmptyListAndCorruptSegments) {
  ShareableList empty(std::vector<ShareableList::value_type>{});
  EXPECT_EQ(empty.size(), 0u);
  EXPECT_EQ(empty.shm().size(), 16u);  // as CPython
  empty.shm().unlink();
  SharedMemory garbage(std::nullopt, true, 64);
  std::memset(garbage.buf().data(), 0xff, 64);
  EXPECT_THROW(ShareableList(std::nullopt, garbage.name()), std::invalid_argument);
  garbage.unlink();
}

#ifndef _WIN32  // CPython and a shell are on the POSIX side only
// Interoperability with CPython's own ShareableList (skipped without python3 >= 3.8).
TEST(ShareableList, ReadableByCPythonAndBack) {
  if (run("python3 -c 'import multiprocessing.shared_memory'") != "") GTEST_SKIP() << "no python3";
  ShareableList sl{std::int64_t{-3}, 1.5, false, "abc", std::monostate{}, Bytes{std::byte{'z'}}};
  const std::string py =
      "from multiprocessing import shared_memory as s, resource_tracker as r\n"
      "l = s.ShareableList(name='" +
      sl.shm().name() +
      "')\n"
      "r.unregister(l.shm._name, 'shared_memory')\n"
      "print(list(l))\n"
      "l[3] = 'xyz!'\n";
  const std::string out = run("python3 -c \"" + py + "\"");
  EXPECT_EQ(out, "[-3, 1.5, False, 'abc', None, b'z']\n");
  EXPECT_EQ(sl[3], ShareableList::value_type(std::string("xyz!")));
  sl.shm().unlink();
}
#endif

// ---------------------------------------------------------------- across processes

class SharedMemoryProcess : public SharedMemoryTest {};

TEST_P(SharedMemoryProcess, PassedAsArgument) {
  SharedMemory shm(std::nullopt, true, 4096);
  mp::Process p(ctx(), write_pattern, shm);
  p.start();
  join_or_fail(p);
  EXPECT_EQ(p.exitcode(), 0);
  auto b = shm.buf();
  for (std::size_t i = 0; i < b.size(); ++i) ASSERT_EQ(b[i], static_cast<std::byte>(i * 7)) << i;
  shm.unlink();
}

TEST_P(SharedMemoryProcess, ShareableListPassedAsArgument) {
  ShareableList sl{std::int64_t{1}, "parent", 3.0};
  mp::Process p(ctx(), edit_list, sl);
  p.start();
  join_or_fail(p);
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(sl[0], ShareableList::value_type(std::int64_t{-5}));
  EXPECT_EQ(sl[1], ShareableList::value_type(std::string("child\0", 6)));
  EXPECT_EQ(sl[2], ShareableList::value_type(std::monostate{}));
  sl.shm().unlink();
}

// gh-82300: a process that attached and exited must not unlink the creator's segment.
TEST_P(SharedMemoryProcess, AttacherExitLeavesSegment) {
  SharedMemory shm(std::nullopt, true, 64);
  mp::Process p(ctx(), attach_and_write, shm.name(), 42);
  p.start();
  join_or_fail(p);
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(shm.buf()[0], std::byte{42});
  // A wrongly tracking attacher would have its segment removed just after its exit: give that a
  // moment to show (a correct library can never fail this).
  EXPECT_FALSE(gone_within(shm.name(), 200ms));
  SharedMemory again(shm.name());  // still attachable
  again.close();
  shm.unlink();  // CPython 3.13 raised FileNotFoundError here
}

#ifndef _WIN32  // the probe program is built for POSIX only
TEST(SharedMemoryUnrelated, UnrelatedProcessAttachAndExitLeavesSegment) {
  SharedMemory shm(std::nullopt, true, 5000);
  shm.buf()[0] = std::byte{77};
  EXPECT_EQ(run(std::string(MP_PROBE_PATH) + " shm-attach " + shm.name()), "5000 77\n");
  EXPECT_FALSE(gone_within(shm.name(), 200ms));
  shm.unlink();
  EXPECT_EQ(run(std::string(MP_PROBE_PATH) + " shm-attach " + shm.name()).find("5000"),
            std::string::npos);
}
#endif

// A creator killed (SIGKILL; TerminateProcess on Windows) leaves no name behind: POSIX: the
// tracker removes it; Windows: the name goes with the killed process's handles.
TEST_P(SharedMemoryProcess, CreatorKilledLeavesNothing) {
  mp::Queue<std::string> names;
  mp::Process p(ctx(), create_and_wait, names, true);
  p.start();
  const std::string name = names.get(true, kTimeout);
  EXPECT_TRUE(segment_exists(name));
  p.kill();
  join_or_fail(p);
  EXPECT_EQ(p.exitcode(), kKilledExitCode);
  EXPECT_TRUE(gone_within(name)) << name << " left behind after its creator was killed";
}

TEST_P(SharedMemoryProcess, CreatorExitOrAbortLeavesNothing) {
  mp::Queue<std::string> names;
  mp::Process p(ctx(), create_and_exit, names);
  p.start();
  const std::string a = names.get(true, kTimeout), b = names.get(true, kTimeout);
  join_or_fail(p);
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_TRUE(gone_within(a));
  EXPECT_TRUE(gone_within(b));
  mp::Process q(ctx(), create_and_abort, names);
  q.start();
  const std::string c = names.get(true, kTimeout);
  join_or_fail(q);
#ifdef _WIN32
  EXPECT_EQ(q.exitcode(), 3);  // abort()'s exit code on Windows, as CPython reports it there
#else
  EXPECT_EQ(q.exitcode(), -SIGABRT);
#endif
  EXPECT_TRUE(gone_within(c));
}

#ifndef _WIN32  // fork
// The creator's forked children share its tracker: a segment stays while one of them may still
// use it, and goes once the last has ended.
TEST_P(SharedMemoryProcess, ForkedChildrenKeepTheCreatorsSegments) {
  mp::Queue<std::string> names;
  mp::Event release;
  mp::Process p(ctx(), create_fork_and_die, names, release);
  p.start();
  const std::string name = names.get(true, kTimeout);
  join_or_fail(p);
  EXPECT_EQ(p.exitcode(), -SIGKILL);
  EXPECT_TRUE(segment_exists(name)) << "removed while the creator's forked child still runs";
  release.set();
  EXPECT_TRUE(gone_within(name)) << name;
}
#endif

TEST_P(SharedMemoryProcess, UntrackedSurvivesItsCreator) {
  mp::Queue<std::string> names;
  mp::Process p(ctx(), create_and_wait, names, false);
  p.start();
  const std::string name = names.get(true, kTimeout);
  p.kill();
  join_or_fail(p);
#ifdef _WIN32
  // No segment outlives its last handle on Windows, tracked or not (CPython's neither).
  EXPECT_FALSE(segment_exists(name));
#else
  EXPECT_TRUE(segment_exists(name));
  SharedMemory(name).unlink();
#endif
}

TEST_P(SharedMemoryProcess, Manager) {
  mp::managers::SharedMemoryManager smm(std::nullopt, std::nullopt, ctx());
  EXPECT_THROW(smm.SharedMemory(8), std::logic_error);
  EXPECT_THROW(smm.ShareableList({1}), std::logic_error);
  smm.start();
  SharedMemory shm = smm.SharedMemory(64);
  ShareableList sl = smm.ShareableList({std::int64_t{1}, "two"});
  EXPECT_EQ(shm.size(), 64u);
  mp::Process p(ctx(), use_manager_segment, shm, sl);
  p.start();
  join_or_fail(p);
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(shm.buf()[1], std::byte{9});
  EXPECT_EQ(sl[0], ShareableList::value_type(2.5));
  const std::string a = shm.name(), b = sl.shm().name();
  smm.shutdown();
#ifdef _WIN32
  // The manager's unlink does nothing on Windows: the names live while this process maps them.
  EXPECT_TRUE(segment_exists(a));
  EXPECT_TRUE(segment_exists(b));
#else
  EXPECT_FALSE(segment_exists(a));
  EXPECT_FALSE(segment_exists(b));
#endif
  EXPECT_EQ(shm.buf()[1], std::byte{9});  // still mapped here, as in CPython
  EXPECT_THROW(smm.SharedMemory(8), std::logic_error);
  shm.close();
  sl.shm().close();
  EXPECT_FALSE(segment_exists(a));
  EXPECT_FALSE(segment_exists(b));
}

MP_INSTANTIATE_START_METHODS(SharedMemoryProcess);

#ifndef _WIN32  // the probe program is built for POSIX only
// A whole program killed by SIGKILL: its segments go too (the probe program creates one and
// kills itself).
TEST(SharedMemoryUnrelated, ProgramKilledLeavesNothing) {
  const std::string out = run(std::string(MP_PROBE_PATH) + " shm-create-and-die");
  ASSERT_EQ(out.rfind("psm_", 0), 0u) << out;
  const std::string name = out.substr(0, out.find('\n'));
  EXPECT_TRUE(gone_within(name)) << name;
}
#endif
