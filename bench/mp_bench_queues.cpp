// bench/mp_bench_queues.cpp — mp metrics for Queue and SimpleQueue (mp/queues.hpp): a child
// puts n items, the parent gets them; the rate runs from the first start to the last stop stamp.
// Compiled in once that header is in the tree.
#if __has_include("mp/queues.hpp")
#  include <string>

#  include "mp_bench.hpp"

namespace {

constexpr std::size_t kMiB = 1 << 20;

template <class Q, class T>
double queue_rate(long n, T item) {
  Q q;
  bench::Shared<bench::Stamps> st;
  bench::Stamps* s = st.get();
  mp::Process producer(mp::get_context("fork"), [q, s, n, item]() mutable {
    s->arrive_and_wait(2);
    s->start[0] = bench::now_ns();
    for (long i = 0; i < n; ++i) q.put(item);
    s->stop[0] = bench::now_ns();
  });
  producer.start();
  s->arrive_and_wait(2);
  s->start[1] = bench::now_ns();
  for (long i = 0; i < n; ++i) {
    const T got = q.get();
    bench::keep(&got);
  }
  s->stop[1] = bench::now_ns();
  mpbench::check_exit(producer);
  return static_cast<double>(n) / s->span_s();
}

BENCH_METRIC(queue_small_msgs, "msgs/s") {
  return queue_rate<mp::Queue<int>>(p.n(1'000'000, 100), 1);
}
BENCH_METRIC(simplequeue_small_msgs, "msgs/s") {
  return queue_rate<mp::SimpleQueue<int>>(p.n(1'000'000, 100), 1);
}
BENCH_METRIC(queue_1mb_MBps, "MB/s") {
  return queue_rate<mp::Queue<std::string>>(p.n(2000, 4), std::string(kMiB, 'x')) * kMiB / 1e6;
}
BENCH_METRIC(simplequeue_1mb_MBps, "MB/s") {
  return queue_rate<mp::SimpleQueue<std::string>>(p.n(2000, 4), std::string(kMiB, 'x')) * kMiB /
         1e6;
}

}  // namespace
#endif
