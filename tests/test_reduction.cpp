// mp::reduction — serialization round trips and hostile input (CPython: pickle behaviour the
// library relies on).
#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "mp/reduction.hpp"

namespace {

struct Raw {
  int a;
  double b;
  char c[3];
  bool operator==(const Raw& o) const { return a == o.a && b == o.b && std::equal(c, c + 3, o.c); }
};

struct WithSerialize {
  std::string name;
  std::vector<Raw> raws;
  std::map<int, std::string> index;
  template <class A>
  void serialize(A& ar) {
    ar(name, raws, index);
  }
  bool operator==(const WithSerialize&) const = default;
};

template <class T>
T round_trip(const T& v) {
  return mp::reduction::loads<T>(mp::reduction::dumps(v));
}

}  // namespace

TEST(Reduction, ArithmeticAndStrings) {
  EXPECT_EQ(round_trip(42), 42);
  EXPECT_EQ(round_trip(-1.5), -1.5);
  EXPECT_EQ(round_trip('x'), 'x');
  EXPECT_EQ(round_trip(true), true);
  EXPECT_EQ(round_trip(std::string("héllo\0x", 8)), std::string("héllo\0x", 8));
  EXPECT_EQ(round_trip(std::string()), std::string());
}

TEST(Reduction, StandardContainers) {
  std::vector<double> big(1 << 20);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<double>(i) * 0.5;
  EXPECT_EQ(round_trip(big), big);
  using A3 = std::array<int, 3>;
  EXPECT_EQ(round_trip(A3{1, 2, 3}), (A3{1, 2, 3}));
  using M = std::map<std::string, int>;
  EXPECT_EQ(round_trip(M{{"a", 1}, {"b", 2}}), (M{{"a", 1}, {"b", 2}}));
  using U = std::unordered_map<int, std::string>;
  EXPECT_EQ(round_trip(U{{1, "x"}}), (U{{1, "x"}}));
  EXPECT_EQ(round_trip(std::set<int>{3, 1, 2}), (std::set<int>{1, 2, 3}));
  using P = std::pair<int, std::string>;
  EXPECT_EQ(round_trip(P{1, "p"}), (P{1, "p"}));
  using T3 = std::tuple<int, std::string, double>;
  EXPECT_EQ(round_trip(T3{1, "t", 2.0}), (T3{1, "t", 2.0}));
  EXPECT_EQ(round_trip(std::optional<std::string>{}), std::optional<std::string>{});
  EXPECT_EQ(round_trip(std::optional<std::string>{"o"}), std::optional<std::string>{"o"});
  using V = std::variant<int, std::string, std::vector<int>>;
  EXPECT_EQ(round_trip(V{std::vector<int>{1, 2}}), (V{std::vector<int>{1, 2}}));
  EXPECT_EQ(round_trip(std::chrono::milliseconds(1234)), std::chrono::milliseconds(1234));
}

TEST(Reduction, TriviallyCopyableAndUserTypes) {
  const Raw r{7, 2.5, {'a', 'b', 'c'}};
  EXPECT_EQ(round_trip(r), r);
  // The memcpy fast path: exactly the bytes of the value after the 8-byte tag.
  EXPECT_EQ(mp::reduction::dumps(r).size(), 8 + sizeof(Raw));
  const WithSerialize w{"w", {r, r}, {{1, "one"}}};
  EXPECT_EQ(round_trip(w), w);
  static_assert(mp::reduction::is_picklable_v<WithSerialize>);
  static_assert(mp::reduction::is_picklable_v<Raw>);
  static_assert(!mp::reduction::is_picklable_v<int*>);
}

TEST(Reduction, TypeMismatchIsReported) {
  const std::string bytes = mp::reduction::dumps(std::string("text"));
  try {
    (void)mp::reduction::loads<std::vector<int>>(bytes);
    FAIL() << "no error on a type mismatch";
  } catch (const mp::UnpicklingError& e) {
    EXPECT_NE(std::string(e.what()).find("type mismatch"), std::string::npos);
  }
  EXPECT_THROW((void)mp::reduction::loads<int>(mp::reduction::dumps(1L)), mp::UnpicklingError);
}

TEST(Reduction, TruncatedAndTrailingBytesAreErrors) {
  const std::string bytes = mp::reduction::dumps(std::vector<std::string>{"abc", "defgh"});
  for (std::size_t n = 0; n < bytes.size(); ++n)
    EXPECT_THROW((void)mp::reduction::loads<std::vector<std::string>>(bytes.substr(0, n)),
                 mp::UnpicklingError)
        << "prefix of " << n << " bytes";
  EXPECT_THROW((void)mp::reduction::loads<std::vector<std::string>>(bytes + "x"),
               mp::UnpicklingError);
  EXPECT_THROW((void)mp::reduction::loads<Raw>(mp::reduction::dumps(Raw{}) + "x"),
               mp::UnpicklingError);
}

// Numbers skip the archive (a fast path): its checks must hold there too.
TEST(Reduction, NumbersAreCheckedLikeEveryValue) {
  const std::string d = mp::reduction::dumps(2.5);
  EXPECT_EQ(mp::reduction::loads<double>(d), 2.5);
  EXPECT_THROW((void)mp::reduction::loads<double>(d + "x"), mp::UnpicklingError);
  EXPECT_THROW((void)mp::reduction::loads<double>(d.substr(0, d.size() - 1)), mp::UnpicklingError);
  std::string b = mp::reduction::dumps(true);
  EXPECT_TRUE(mp::reduction::loads<bool>(b));
  b.back() = 2;  // not a bool: reading it as one would be undefined behaviour
  EXPECT_THROW((void)mp::reduction::loads<bool>(b), mp::UnpicklingError);
}

TEST(Reduction, HostileLengthDoesNotAllocate) {
  // A vector<string> whose element count claims 2^60 elements: rejected before any allocation.
  std::string bytes = mp::reduction::dumps(std::vector<std::string>{});
  const std::uint64_t huge = 1ull << 60;
  bytes.replace(8, 8, reinterpret_cast<const char*>(&huge), 8);
  EXPECT_THROW((void)mp::reduction::loads<std::vector<std::string>>(bytes), mp::UnpicklingError);
  std::string s = mp::reduction::dumps(std::string("abc"));
  s.replace(8, 8, reinterpret_cast<const char*>(&huge), 8);
  EXPECT_THROW((void)mp::reduction::loads<std::string>(s), mp::UnpicklingError);
}

TEST(Reduction, HandlesOnlyWhileSpawning) {
  EXPECT_FALSE(mp::reduction::spawning());
  try {
    mp::reduction::send_handle(3, "Lock");
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(),
                 "Lock objects should only be shared between processes through inheritance");
  }
  EXPECT_THROW(mp::reduction::receive_handle(3), mp::UnpicklingError);
}
