// bench/mp_bench_connection.cpp — mp metrics for Pipe()/Connection (mp/connection.hpp).
// Compiled in once that header is in the tree.
#if __has_include("mp/connection.hpp")
#  include "mp_bench.hpp"

namespace {

// Python: a.send(1); a.recv()  against a child echoing on b.
BENCH_METRIC(pipe_duplex_rt_us, "us") {
  auto [a, b] = mp::Pipe();
  return mpbench::pingpong_us(
      p.n(50000, 50),
      [&a = a] {
        a.send(1);
        (void)a.recv<int>();
      },
      [b = b]() mutable { b.send(b.recv<int>()); });
}

BENCH_METRIC(pipe_simplex_rt_us, "us") {
  auto [r1, w1] = mp::Pipe(false);
  auto [r2, w2] = mp::Pipe(false);
  return mpbench::pingpong_us(
      p.n(50000, 50),
      [&w1 = w1, &r2 = r2] {
        w1.send(1);
        (void)r2.recv<int>();
      },
      [r1 = r1, w2 = w2]() mutable { w2.send(r1.recv<int>()); });
}

}  // namespace
#endif
