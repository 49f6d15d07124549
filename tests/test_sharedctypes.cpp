// mp/sharedctypes.hpp under every start method (CPython: _TestValue, _TestArray, and the tutorial's
// 05_value_race / 06 / 07_value_get_lock semantics).
#ifndef _WIN32
#  include <sys/sysinfo.h>
#endif

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <functional>
#include <numeric>
#include <sstream>
#include <thread>

#include "mp_test.hpp"

using namespace mp_test;

namespace {

struct Point {
  double x, y;
  bool operator==(const Point&) const = default;
};
// 24 bytes: not lock-free, so value()/set_value() copy under the private guard.
struct Big {
  double a, b, c;
  bool operator==(const Big&) const = default;
};

// Objects embedding shared ctypes, sent inside another serialized object.
struct Holder {
  mp::Value<int> count;
  mp::Array<double> samples = mp::Array<double>(3);  // (braces would give one element, as vector)
  template <class A>
  void serialize(A& ar) {
    ar(count, samples);
  }
};

void add_unlocked(mp::Value<int> v, int delta, int n) {
  for (int i = 0; i < n; ++i) v.set_value(v.value() + delta);
}

void add_locked(mp::Value<int> v, int delta, int n) {
  for (int i = 0; i < n; ++i) {
    std::lock_guard guard(v.get_lock());
    v.set_value(v.value() + delta);
  }
}

void check_initial_and_write(mp::Value<int> i, mp::Value<double> d, mp::Value<char> c,
                             mp::Value<Point> p, mp::Value<Big> big, mp::RawValue<long> raw) {
  const bool ok = i.value() == -7 && d.value() == 2.5 && c.value() == 'x' &&
                  (p.value() == Point{1, 2}) && (big.value() == Big{1, 2, 3}) && raw.value() == 99;
  i.set_value(8);
  d.set_value(-1.25);
  c.set_value('y');
  p.set_value({3, 4});
  big.set_value({4, 5, 6});
  raw.set_value(100);
  std::exit(ok ? 0 : 2);
}

void double_array(mp::Array<int> a) {
  std::lock_guard guard(a.get_lock());
  for (std::size_t i = 0; i < a.size(); ++i)
    a[static_cast<std::ptrdiff_t>(i)] = a[static_cast<std::ptrdiff_t>(i)] * 2;
}

void write_text(mp::Array<char> text) { text.set_value("from child"); }

void fill_big(mp::RawArray<std::uint64_t> a) {
  for (std::size_t i = 0; i < a.size(); ++i) a.data()[i] = i * 2654435761u;
}

void use_holder(Holder h) {
  std::lock_guard guard(h.count.get_lock());
  h.count.set_value(h.count.value() + 1);
  h.samples[2] = 6.5;
}

// Assigns whole slices of one repeated value, under the lock, until told to stop.
void rewrite_slices(mp::Array<int> a, mp::Event stop) {
  std::vector<int> fill(a.size());
  for (int round = 1; !stop.is_set(); ++round) {
    std::fill(fill.begin(), fill.end(), round);
    a.set_slice(fill);
  }
}
void locked_by_shared_lock(mp::Value<int> other) {
  // The parent holds the shared lock through another Value; ours is the same lock.
  std::exit(other.get_lock().acquire(false) ? 3 : 0);
}

}  // namespace

// ================================================================ single-process behaviour

TEST(Value, InitialValuesAndTypes) {
  EXPECT_EQ(mp::Value<int>().value(), 0);
  EXPECT_EQ(mp::Value<int>(-3).value(), -3);
  EXPECT_EQ(mp::Value<double>(1.5).value(), 1.5);
  EXPECT_EQ(mp::Value<char>('c').value(), 'c');
  EXPECT_EQ(mp::Value<bool>(true).value(), true);
  EXPECT_EQ(mp::Value<std::int64_t>(1LL << 40).value(), 1LL << 40);
  EXPECT_EQ(mp::Value<Point>(Point{1, 2}).value(), (Point{1, 2}));
  mp::Value<Big> big(Big{1, 2, 3});
  big.set_value({7, 8, 9});
  EXPECT_EQ(big.value(), (Big{7, 8, 9}));
  mp::RawValue<float> raw(0.5f);
  raw.set_value(2.5f);
  EXPECT_EQ(raw.value(), 2.5f);
  raw.get_obj() += 1;
  EXPECT_EQ(raw.value(), 3.5f);
}

TEST(Value, GetLockAndGetObj) {
  mp::Value<int> v(5);
  {
    std::lock_guard guard(v.get_lock());
    EXPECT_NE(v.get_lock().rlock(), nullptr);  // CPython's default: an RLock
    EXPECT_TRUE(v.get_lock().acquire(false));  // recursive
    v.get_lock().release();
    v.get_obj() += 1;
    EXPECT_EQ(v.get_raw().value(), 6);
  }
  EXPECT_EQ(v.value(), 6);
  EXPECT_TRUE(v.acquire());
  v.release();
}

TEST(Value, SharedExplicitLock) {
  mp::Lock lock;
  mp::Value<int> a(0, lock), b(1, lock);
  EXPECT_NE(a.get_lock().plain_lock(), nullptr);
  std::lock_guard guard(a.get_lock());
  EXPECT_FALSE(b.get_lock().acquire(false));
  EXPECT_TRUE(lock.locked());
}

TEST(Value, Printing) {
  mp::Value<int> v(42);
  std::ostringstream os;
  os << v << ' ' << mp::RawValue<double>(0.5);
  EXPECT_EQ(os.str(), "42 0.5");
}

TEST(Array, FromSizeAndValues) {
  mp::Array<int> zeros(5);
  EXPECT_EQ(zeros.size(), 5u);
  EXPECT_EQ(zeros.to_vector(), std::vector<int>(5, 0));
  mp::Array<int> a{1, 2, 3, 4, 5};
  EXPECT_EQ(a.size(), 5u);
  EXPECT_EQ(a[0], 1);
  EXPECT_EQ(a[-1], 5);
  a[1] = 20;
  a[2] = a[1];
  EXPECT_EQ(a.slice(), (std::vector<int>{1, 20, 20, 4, 5}));
  const std::vector<double> src{0.5, 1.5};
  mp::Array<double> from_vector(src);
  EXPECT_EQ(from_vector.slice(), src);
  std::vector<long> longs{9, 8, 7};
  mp::RawArray<long> from_range(longs.begin() + 1, longs.end());
  EXPECT_EQ(from_range.slice(), (std::vector<long>{8, 7}));
  EXPECT_EQ(std::accumulate(a.begin(), a.end(), 0), 50);
  mp::Array<int> empty(0);
  EXPECT_TRUE(empty.empty());
  EXPECT_TRUE(empty.slice().empty());
}

TEST(Array, OutOfRange) {
  mp::Array<int> a(3);
  EXPECT_THROW(a[3], std::out_of_range);
  EXPECT_THROW(a[-4], std::out_of_range);
  EXPECT_THROW(a[100] = 1, std::out_of_range);
  const mp::RawArray<int>& c = a;
  EXPECT_THROW((void)c[3], std::out_of_range);
  EXPECT_NO_THROW(a[-3] = 1);
}

TEST(Array, Slicing) {
  mp::Array<int> a{0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  EXPECT_EQ(a.slice(2, 5), (std::vector<int>{2, 3, 4}));
  EXPECT_EQ(a.slice(-3, 100), (std::vector<int>{7, 8, 9}));
  EXPECT_EQ(a.slice(5, 2), std::vector<int>{});
  a.set_slice(2, 5, std::vector<int>{20, 30, 40});
  EXPECT_EQ(a.slice(0, 6), (std::vector<int>{0, 1, 20, 30, 40, 5}));
  EXPECT_THROW(a.set_slice(0, 2, std::vector<int>{1}), std::invalid_argument);
  a.set_slice({9, 8, 7, 6, 5, 4, 3, 2, 1, 0});
  EXPECT_EQ(a[0], 9);
  EXPECT_THROW(a.set_slice({1, 2}), std::invalid_argument);
}

TEST(Array, CharValueAndRaw) {
  mp::Array<char> text(10);
  text.set_value("hello");
  EXPECT_EQ(text.value(), "hello");
  EXPECT_EQ(text.raw(), std::string_view("hello\0\0\0\0\0", 10));
  text.set_raw("0123456789");
  EXPECT_EQ(text.value(), "0123456789");
  EXPECT_THROW(text.set_value("01234567890"), std::invalid_argument);
  mp::Array<char> from_text("abc");
  EXPECT_EQ(from_text.size(), 3u);
  EXPECT_EQ(from_text.value(), "abc");
}

TEST(Array, ExplicitLock) {
  mp::RLock lock;
  mp::Array<int> a(4, lock);
  mp::Array<int> b({1, 2}, lock);
  std::lock_guard guard(a.get_lock());
  EXPECT_TRUE(lock.is_mine());
  std::thread([&] { EXPECT_FALSE(b.get_lock().acquire(false)); }).join();
}

// ================================================================ between processes

class SharedCtypesTest : public StartMethodTest {};

// Issue 13, bug 1: sizes are checked as CPython's ctypes checks them, never wrapped.
TEST(Array, AbsurdSizesThrowCPythonsExceptionsInsteadOfWrapping) {
  mp::Array<int> other(16);
  for (int i = 0; i < 16; ++i) other[i] = i;
  auto expect_message = [](auto make, const char* type, const std::string& message) {
    try {
      make();
      ADD_FAILURE() << "no exception; expected " << type;
    } catch (const std::exception& e) {
      EXPECT_EQ(e.what(), message) << type;
    }
  };
  // Bytes beyond the address space: OverflowError "array too large".
  EXPECT_THROW(mp::RawArray<int>((1ull << 62) + 16), std::overflow_error);
  expect_message([] { mp::RawArray<int>((1ull << 62) + 16); }, "overflow_error", "array too large");
  EXPECT_THROW(mp::RawArray<double>((1ull << 61) + 8), std::overflow_error);
  EXPECT_THROW(mp::Array<char>(SIZE_MAX), std::overflow_error);
  EXPECT_THROW(mp::RawArray<char>(static_cast<std::size_t>(PTRDIFF_MAX)), std::overflow_error);
  EXPECT_THROW(mp::Array<int>(std::numeric_limits<std::uint64_t>::max() / 2, mp::Lock()),
               std::overflow_error);
  // Negative: ValueError "Array length must be >= 0, not -1".
  EXPECT_THROW(mp::Array<int>(-1), std::invalid_argument);
  expect_message([] { mp::Array<int>(-1); }, "invalid_argument",
                 "Array length must be >= 0, not -1");
  EXPECT_THROW(mp::RawArray<double>(std::int64_t{-5}), std::invalid_argument);
  EXPECT_THROW(mp::Array<int>(-3, mp::RLock()), std::invalid_argument);
  // Within the address space but more than RAM + swap: MemoryError, at once.
  EXPECT_THROW(mp::RawArray<char>(static_cast<std::size_t>(PTRDIFF_MAX) - 64), std::bad_alloc);
  // Nothing else was touched.
  EXPECT_EQ(other.size(), 16u);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(other[i], i);
  EXPECT_EQ(mp::RawArray<int>(0).size(), 0u);
  EXPECT_EQ(mp::RawArray<int>(short{3}).size(), 3u);
}

// 8 TiB (Array('d', 1 << 40)): refused when RAM + swap cannot hold it (CPython tries to zero it and
// dies or hangs); a smaller array is reserved, committed page by page as it is used.
TEST(Array, MoreThanMemoryCanBackIsMemoryError) {
#ifdef _WIN32
  MEMORYSTATUSEX ms{};
  ms.dwLength = sizeof ms;
  ASSERT_TRUE(::GlobalMemoryStatusEx(&ms));
  const double capacity = double(ms.ullTotalPageFile);  // RAM + page file
#else
  struct sysinfo si {};
  ASSERT_EQ(::sysinfo(&si), 0);
  const double capacity = (double(si.totalram) + double(si.totalswap)) * si.mem_unit;
#endif
  if (capacity >= double(8ull << 40)) GTEST_SKIP() << "this machine has 8 TiB of RAM + swap";
  EXPECT_THROW(mp::Array<double>(std::size_t{1} << 40), std::bad_alloc);
  mp::RawArray<double> fits(std::size_t{1} << 20);
  fits[-1] = 1.5;
  EXPECT_EQ(fits[(1 << 20) - 1], 1.5);
}

struct Defaults {
  int a = 7;
  double b = 2.5;
};

// A default Value is T() built in place in shared memory: T may be larger than the stack.
TEST(Value, DefaultIsBuiltInPlaceEvenWhenLargerThanTheStack) {
  mp::Value<std::array<char, (64 << 20)>> big;
  EXPECT_EQ(big.get_obj()[0], 0);
  EXPECT_EQ(big.get_obj()[(64 << 20) - 1], 0);
  big.get_obj()[12345] = 'x';
  EXPECT_EQ(big.get_obj()[12345], 'x');
  mp::RawValue<std::array<double, (16 << 20)>> raw;  // 128 MiB
  EXPECT_EQ(raw.get_obj()[(16 << 20) - 1], 0.0);
  const mp::Value<Defaults> d;  // default member initializers are honoured, as T() does
  EXPECT_EQ(d.value().a, 7);
  EXPECT_EQ(d.value().b, 2.5);
}

TEST_P(SharedCtypesTest, UnlockedIncrementsRace) {
  // Tutorial 05: the result is usually not 0, and never undefined behaviour.
  mp::Value<int> v(0);
  mp::Process up(ctx(), add_unlocked, v, 1, 1000), down(ctx(), add_unlocked, v, -1, 1000);
  up.start();
  down.start();
  join_or_fail(up);
  join_or_fail(down);
  EXPECT_EQ(up.exitcode(), 0);
  EXPECT_EQ(down.exitcode(), 0);
  EXPECT_GE(v.value(), -1000);
  EXPECT_LE(v.value(), 1000);
}

TEST_P(SharedCtypesTest, GetLockMakesIncrementsExact) {
  // Tutorial 07: exactly 0, every time.
  for (int rep = 0; rep < 50; ++rep) {
    mp::Value<int> v(0);
    mp::Process up(ctx(), add_locked, v, 1, 1000), down(ctx(), add_locked, v, -1, 1000);
    up.start();
    down.start();
    join_or_fail(up);
    join_or_fail(down);
    ASSERT_EQ(v.value(), 0) << "repetition " << rep;
  }
}

TEST_P(SharedCtypesTest, ValuesCrossBothWays) {
  mp::Value<int> i(-7);
  mp::Value<double> d(2.5);
  mp::Value<char> c('x');
  mp::Value<Point> p(Point{1, 2});
  mp::Value<Big> big(Big{1, 2, 3});
  mp::RawValue<long> raw(99);
  mp::Process child(ctx(), check_initial_and_write, i, d, c, p, big, raw);
  child.start();
  join_or_fail(child);
  EXPECT_EQ(child.exitcode(), 0);
  EXPECT_EQ(i.value(), 8);
  EXPECT_EQ(d.value(), -1.25);
  EXPECT_EQ(c.value(), 'y');
  EXPECT_EQ(p.value(), (Point{3, 4}));
  EXPECT_EQ(big.value(), (Big{4, 5, 6}));
  EXPECT_EQ(raw.value(), 100);
}

TEST_P(SharedCtypesTest, ArrayWrittenByChild) {
  mp::Array<int> a{1, 2, 3, 4};
  mp::Process p(ctx(), double_array, a);
  p.start();
  join_or_fail(p);
  EXPECT_EQ(a.slice(), (std::vector<int>{2, 4, 6, 8}));
  mp::Array<char> text(16);
  mp::Process q(ctx(), write_text, text);
  q.start();
  join_or_fail(q);
  EXPECT_EQ(text.value(), "from child");
}

TEST_P(SharedCtypesTest, InsideAnotherObject) {
  Holder h;
  h.count.set_value(41);
  mp::Process p(ctx(), use_holder, h);
  p.start();
  join_or_fail(p);
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(h.count.value(), 42);
  EXPECT_EQ(h.samples[2], 6.5);
}

TEST_P(SharedCtypesTest, SharedLockAcrossProcesses) {
  mp::Lock lock;
  mp::Value<int> a(0, lock), b(0, lock);
  std::lock_guard guard(a.get_lock());
  mp::Process p(ctx(), locked_by_shared_lock, b);
  p.start();
  join_or_fail(p);
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(SharedCtypesTest, LargeArray64MiB) {
  constexpr std::size_t n = (64u << 20) / sizeof(std::uint64_t);
  mp::RawArray<std::uint64_t> a(n);
  mp::Process p(ctx(), fill_big, a);
  p.start();
  join_or_fail(p, 120s);
  ASSERT_EQ(p.exitcode(), 0);
  ASSERT_EQ(a.size(), n);
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < n; ++i) wrong += a.data()[i] != i * 2654435761u;
  EXPECT_EQ(wrong, 0u);
}

// CPython's SynchronizedArray copies a slice under the lock: a reader never sees a torn slice
// while another process assigns whole slices.
TEST_P(SharedCtypesTest, SlicesAreNeverTorn) {
  mp::Array<int> a(4096);
  mp::Event stop;
  mp::Process writer(ctx(), rewrite_slices, a, stop);
  writer.start();
  int torn = 0, distinct_rounds = 0, last = -1;
  const auto end = std::chrono::steady_clock::now() + 300ms;
  while (std::chrono::steady_clock::now() < end || distinct_rounds < 3) {
    const std::vector<int> v = a.slice();
    if (std::adjacent_find(v.begin(), v.end(), std::not_equal_to<>()) != v.end()) ++torn;
    if (v.front() != last) ++distinct_rounds, last = v.front();
    if (std::chrono::steady_clock::now() > end + kTimeout) break;
  }
  stop.set();
  join_or_fail(writer);
  EXPECT_EQ(writer.exitcode(), 0);
  EXPECT_EQ(torn, 0);
  EXPECT_GE(distinct_rounds, 3);  // the writer really was writing while we read
}

MP_INSTANTIATE_START_METHODS(SharedCtypesTest);
