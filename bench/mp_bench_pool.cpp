// bench/mp_bench_pool.cpp — mp metrics for Pool and the executors (mp/pool.hpp, mp/futures.hpp),
// the same workloads as py_bench.py's: both workers are running before the clock starts.
#if __has_include("mp/futures.hpp")
#  include <fstream>
#  include <ranges>
#  include <unistd.h>

#  include "mp/futures.hpp"
#  include "mp_bench.hpp"

namespace {

long square(long x) { return x * x; }

double pool_map_tasks(long n, std::optional<int> chunksize) {
  mp::Pool pool(mp::get_context("fork"), 2);
  pool.map(square, std::views::iota(0L, 100L));  // warm-up
  std::vector<long> in(static_cast<std::size_t>(n));
  for (long i = 0; i < n; ++i) in[static_cast<std::size_t>(i)] = i;
  const auto t0 = bench::now_ns();
  auto out = pool.map(square, in, chunksize);
  const auto t1 = bench::now_ns();
  bench::keep(out.data());
  return static_cast<double>(n) / (static_cast<double>(t1 - t0) * 1e-9);
}

template <class Call>
double timed_calls_us(long n, Call call) {
  call();
  const auto t0 = bench::now_ns();
  for (long i = 0; i < n; ++i) call();
  return static_cast<double>(bench::now_ns() - t0) / 1e3 / static_cast<double>(n);
}

// Resident set size of this process now, in MiB (/proc/self/statm).
double rss_mib() {
  std::ifstream f("/proc/self/statm");
  long size = 0, resident = 0;
  f >> size >> resident;
  return static_cast<double>(resident) * static_cast<double>(::sysconf(_SC_PAGESIZE)) / (1 << 20);
}

BENCH_METRIC(pool_map_tasks_chunked, "tasks/s") {
  return pool_map_tasks(p.n(100'000, 100'000), std::nullopt);
}
BENCH_METRIC(pool_map_tasks_chunksize1, "tasks/s") { return pool_map_tasks(p.n(100'000, 1000), 1); }
BENCH_METRIC(pool_apply_us, "us") {
  mp::Pool pool(mp::get_context("fork"), 2);
  return timed_calls_us(p.n(100'000, 20), [&] {
    const long r = pool.apply(square, 3L);
    bench::keep(&r);
  });
}
BENCH_METRIC(executor_submit_result_us, "us") {
  mp::futures::ProcessPoolExecutor ex(mp::get_context("fork"), 2);
  return timed_calls_us(p.n(100'000, 20), [&] {
    const long r = ex.submit(square, 3L).result();
    bench::keep(&r);
  });
}
BENCH_METRIC(executor_map_tasks, "tasks/s") {
  mp::futures::ProcessPoolExecutor ex(mp::get_context("fork"), 2);
  for (long x : ex.map(square, std::views::iota(0L, 100L))) bench::keep(&x);
  const long n = p.n(100'000, 100'000);
  const auto t0 = bench::now_ns();
  long sum = 0;
  for (long x : ex.map(square, std::views::iota(0L, n))) sum += x;
  const auto t1 = bench::now_ns();
  bench::keep(&sum);
  return static_cast<double>(n) / (static_cast<double>(t1 - t0) * 1e-9);
}

// n sequential Pool(4) + close() + join(), or fewer (at least 3) when the time budget runs out.
double pool4_ms(const bench::Params& params, const char* method, long n) {
  const mp::Context ctx = mp::get_context(method);
  const auto budget = static_cast<std::int64_t>(params.budget_s() * 1e9);
  const auto t0 = bench::now_ns();
  long done = 0;
  while (done < n && (done < 3 || bench::now_ns() - t0 < budget)) {
    mp::Pool pool(ctx, 4);
    pool.close();
    pool.join();
    ++done;
  }
  return static_cast<double>(bench::now_ns() - t0) / 1e6 / static_cast<double>(done);
}
BENCH_METRIC(pool4_create_join_fork_ms, "ms") { return pool4_ms(p, "fork", p.n(100, 3)); }
BENCH_METRIC(pool4_create_join_spawn_ms, "ms") { return pool4_ms(p, "spawn", p.n(30, 3)); }

// imap_unordered over 10^8 lazily made items: the parent's peak RSS while reading the first
// n results (10^6 at full scale).
BENCH_METRIC(imap_unordered_lazy_rss_MiB, "MiB") {
  const long n = p.n(1'000'000, 1000);
  mp::Pool pool(mp::get_context("fork"), 2);
  double peak = rss_mib();
  long got = 0;
  for (long x : pool.imap_unordered(square, std::views::iota(0L, 100'000'000L))) {
    bench::keep(&x);
    if (++got % 4096 == 0) peak = std::max(peak, rss_mib());
    if (got == n) break;
  }
  return std::max(peak, rss_mib());
}

}  // namespace
#endif
