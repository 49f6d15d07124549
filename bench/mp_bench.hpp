// bench/mp_bench.hpp — helpers for the mp metrics (mp_bench*.cpp): a partner process started
// with mp::Process under fork, as a Python benchmark would start it.
#pragma once

#include <stdexcept>
#include <utility>

#include "harness.hpp"
#include "mp/multiprocessing.hpp"

namespace mpbench {

inline void check_exit(mp::Process& p) {
  p.join();
  if (p.exitcode() != 0) throw std::runtime_error("a benchmark child process failed");
}

// Round trip in microseconds: the partner runs pong() n times; ping() once to warm up, then
// timed n - 1 times.
template <class Ping, class Pong>
double pingpong_us(long n, Ping&& ping, Pong pong) {
  mp::Process child(mp::get_context("fork"), [n, pong]() mutable {
    for (long i = 0; i < n; ++i) pong();
  });
  child.start();
  ping();
  const auto t0 = bench::now_ns();
  for (long i = 1; i < n; ++i) ping();
  const auto t1 = bench::now_ns();
  check_exit(child);
  return static_cast<double>(t1 - t0) / 1e3 / static_cast<double>(n - 1);
}

// Two forked workers run work(w) between their own start and stop stamps; returns the span in s.
template <class Work>
double two_workers_s(Work work) {
  bench::Shared<bench::Stamps> st;
  bench::Stamps* s = st.get();
  mp::Process ps[2];
  for (int w = 0; w < 2; ++w) {
    ps[w] = mp::Process(mp::get_context("fork"), [s, w, work]() mutable {
      s->arrive_and_wait(2);
      s->start[w] = bench::now_ns();
      work(w);
      s->stop[w] = bench::now_ns();
    });
    ps[w].start();
  }
  for (auto& p : ps) check_exit(p);
  return s->span_s();
}

}  // namespace mpbench
