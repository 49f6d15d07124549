// bench/mp_bench.cpp — the mp side of the benchmarks: Process start+join per start method.
// The metrics of the other features live in mp_bench_<feature>.cpp, which bench/CMakeLists.txt
// compiles in only once the feature's header is in the tree (else run.py shows "not built yet").
// This program is also the spawned child (mp::freeze_support first), and `--exit-now` makes it
// the target of raw:posix_spawn_mpbin_wait_ms (the raw cost of starting this very binary).
#include <cstring>
#include <stdexcept>
#include <string>

#include "harness.hpp"
#include "mp/multiprocessing.hpp"

namespace {

void noop() {}

// n sequential start() + join(), or fewer (at least 3) when the time budget runs out.
double start_join_ms(const bench::Params& params, const char* method, long n) {
  const mp::Context ctx = mp::get_context(method);
  const auto t0 = bench::now_ns();
  const auto budget = static_cast<std::int64_t>(params.budget_s() * 1e9);
  long done = 0;
  while (done < n && (done < 3 || bench::now_ns() - t0 < budget)) {
    mp::Process p(ctx, noop);
    p.start();
    p.join();
    if (p.exitcode() != 0) throw std::runtime_error(std::string(method) + " child failed");
    ++done;
  }
  return static_cast<double>(bench::now_ns() - t0) / 1e6 / static_cast<double>(done);
}

BENCH_METRIC(process_fork_ms, "ms") { return start_join_ms(p, "fork", p.n(1000, 5)); }
BENCH_METRIC(process_spawn_ms, "ms") { return start_join_ms(p, "spawn", p.n(300, 3)); }
// Steady state: the server is started (and a first child run) before the timing, on both sides.
BENCH_METRIC(process_forkserver_ms, "ms") {
  mp::forkserver::ensure_running();
  (void)start_join_ms(p, "forkserver", 1);
  return start_join_ms(p, "forkserver", p.n(1000, 5));
}
// From a parent holding 256 MiB: the cost of launching by fork+exec grows with the parent's size
// (mp's spawn did so until it moved from Boost.Process v1 to posix_spawn); posix_spawn's does not
// (raw:posix_spawn_mpbin_big_ms).
BENCH_METRIC(process_fork_big_ms, "ms") {
  bench::Ballast ballast(bench::kBallastMiB);
  return start_join_ms(p, "fork", p.n(300, 3));
}
BENCH_METRIC(process_spawn_big_ms, "ms") {
  bench::Ballast ballast(bench::kBallastMiB);
  return start_join_ms(p, "spawn", p.n(300, 3));
}

}  // namespace

int main(int argc, char** argv) {
  mp::freeze_support(argc, argv);
  if (argc == 2 && std::strcmp(argv[1], "--exit-now") == 0) return 0;
  return bench::run_main(argc, argv);
}
