// bench/mp_bench_sync.cpp — mp metrics for Lock, Value/RawValue, Event, Condition and Barrier
// (mp/synchronize.hpp, mp/sharedctypes.hpp). Compiled in once those headers are in the tree.
#if __has_include("mp/synchronize.hpp") && __has_include("mp/sharedctypes.hpp")
#  include <mutex>
#  include <vector>

#  include "mp_bench.hpp"

namespace {

BENCH_METRIC(lock_uncontended_ns, "ns") {
  mp::Lock lock;
  const long n = p.n(5'000'000, 1000);
  const auto t0 = bench::now_ns();
  for (long i = 0; i < n; ++i) {
    lock.acquire();
    bench::clobber();
    lock.release();
  }
  return static_cast<double>(bench::now_ns() - t0) / static_cast<double>(n);
}

// Python: with lock: value.value += 1   (value = Value('i', lock=False), i.e. a RawValue)
BENCH_METRIC(lock_value_contended_2p, "ops/s") {
  mp::Lock lock;
  mp::RawValue<int> value(0);
  const long n = p.n(2'000'000, 1000);
  const double s = mpbench::two_workers_s([lock, value, n](int) mutable {
    for (long i = 0; i < n; ++i) {
      std::lock_guard g(lock);
      value.set_value(value.value() + 1);
    }
  });
  if (value.value() != 2 * n) throw std::runtime_error("lost increments");
  return 2.0 * static_cast<double>(n) / s;
}

// Python: with value.get_lock(): value.value += 1
BENCH_METRIC(value_get_lock_2p, "ops/s") {
  mp::Value<int> value(0);
  const long n = p.n(2'000'000, 1000);
  const double s = mpbench::two_workers_s([value, n](int) mutable {
    for (long i = 0; i < n; ++i) {
      std::lock_guard g(value.get_lock());
      value.set_value(value.value() + 1);
    }
  });
  if (value.value() != 2 * n) throw std::runtime_error("lost increments");
  return 2.0 * static_cast<double>(n) / s;
}

// Python: values = [Value('i', 0) for _ in range(n)]  (kept alive: no reuse), per object.
BENCH_METRIC(value_create_us, "us") {
  const long n = p.n(20'000, 100);
  std::vector<mp::Value<int>> values;
  values.reserve(static_cast<std::size_t>(n));
  const auto t0 = bench::now_ns();
  for (long i = 0; i < n; ++i) values.emplace_back(0);
  return static_cast<double>(bench::now_ns() - t0) / 1e3 / static_cast<double>(n);
}

// Python: locks = [Lock() for _ in range(n)], per object.
BENCH_METRIC(lock_create_us, "us") {
  const long n = p.n(20'000, 100);
  std::vector<mp::Lock> locks;
  locks.reserve(static_cast<std::size_t>(n));
  const auto t0 = bench::now_ns();
  for (long i = 0; i < n; ++i) locks.emplace_back();
  return static_cast<double>(bench::now_ns() - t0) / 1e3 / static_cast<double>(n);
}

BENCH_METRIC(rawvalue_inc_1p, "ops/s") {
  mp::RawValue<int> value(0);
  const long n = p.n(50'000'000, 1000);
  const auto t0 = bench::now_ns();
  for (long i = 0; i < n; ++i) value.set_value(value.value() + 1);
  return static_cast<double>(n) / (static_cast<double>(bench::now_ns() - t0) * 1e-9);
}

// Python: x = arr[:]   (arr = Array('d', 131072): 1 MiB; the slice is copied under the lock)
BENCH_METRIC(array_copyout_MBps, "MB/s") {
  constexpr std::size_t kDoubles = (1u << 20) / sizeof(double);
  mp::Array<double> arr(kDoubles);
  const long n = p.n(20000, 10);
  const auto t0 = bench::now_ns();
  for (long i = 0; i < n; ++i) {
    const std::vector<double> x = arr.slice();
    bench::keep(x.data());
  }
  return static_cast<double>(n) * (1u << 20) / 1e6 /
         (static_cast<double>(bench::now_ns() - t0) * 1e-9);
}

BENCH_METRIC(event_pingpong_us, "us") {
  mp::Event ping, pong;
  return mpbench::pingpong_us(
      p.n(50000, 50),
      [&] {
        ping.set();
        pong.wait();
        pong.clear();
      },
      [ping, pong]() mutable {
        ping.wait();
        ping.clear();
        pong.set();
      });
}

BENCH_METRIC(condition_pingpong_us, "us") {
  mp::Condition cond;
  mp::RawValue<int> turn(0);
  return mpbench::pingpong_us(
      p.n(50000, 50),
      [&] {
        std::unique_lock lk(cond);
        turn.set_value(1);
        cond.notify();
        while (turn.value() != 0) cond.wait();
      },
      [cond, turn]() mutable {
        std::unique_lock lk(cond);
        while (turn.value() != 1) cond.wait();
        turn.set_value(0);
        cond.notify();
      });
}

BENCH_METRIC(barrier_2p_us, "us") {
  mp::Barrier barrier(2);
  return mpbench::pingpong_us(
      p.n(50000, 50), [&] { barrier.wait(); }, [barrier]() mutable { barrier.wait(); });
}

}  // namespace
#endif
