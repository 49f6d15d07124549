// bench/mp_bench_managers.cpp — mp metrics for managers (mp/managers.hpp): a proxy call to a
// registered class, Value .value get, dict set, and Manager() start+shutdown.
// Compiled in once that header is in the tree.
#if __has_include("mp/managers.hpp")
#  include <string>

#  include "mp_bench.hpp"

// The same hosted class as py_bench.py's Counter.
class BenchCounter {
 public:
  BenchCounter() = default;
  void increment() { ++value_; }
  int get() const { return value_; }

 private:
  int value_ = 0;
};
MP_EXPOSE(BenchCounter, (), increment, get)

namespace {

class CounterManager : public mp::BaseManager {
 public:
  MP_REGISTER(BenchCounter)
};

template <class Call>
double timed_calls_us(long n, Call&& call) {
  call();
  const auto t0 = bench::now_ns();
  for (long i = 1; i < n; ++i) call();
  return static_cast<double>(bench::now_ns() - t0) / 1e3 / static_cast<double>(n - 1);
}

BENCH_METRIC(manager_proxy_call_us, "us") {
  CounterManager m;
  m.start();
  auto c = m.BenchCounter();
  const double r = timed_calls_us(p.n(50000, 50), [&] { c.increment(); });
  m.shutdown();
  return r;
}

BENCH_METRIC(manager_value_get_us, "us") {
  auto m = mp::Manager();
  auto v = m.Value<int>(7);
  const double r = timed_calls_us(p.n(50000, 50), [&] {
    bench::keep(&v);
    (void)v.value();
  });
  m.shutdown();
  return r;
}

BENCH_METRIC(manager_dict_set_us, "us") {
  auto m = mp::Manager();
  auto d = m.dict<std::string, int>();
  const double r = timed_calls_us(p.n(50000, 50), [&] { d["k"] = 1; });
  m.shutdown();
  return r;
}

BENCH_METRIC(manager_start_shutdown_ms, "ms") {
  const long n = p.n(200, 3);
  const auto t0 = bench::now_ns();
  for (long i = 0; i < n; ++i) {
    auto m = mp::Manager();
    m.shutdown();
  }
  return static_cast<double>(bench::now_ns() - t0) / 1e6 / static_cast<double>(n);
}

}  // namespace
#endif
