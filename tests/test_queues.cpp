// mp::Queue, JoinableQueue, SimpleQueue under every start method (CPython: _TestQueue,
// _TestSimpleQueue), plus the guarantees beyond CPython: delivery after the producer is killed,
// no deadlock joining a producer before draining, and recovery when a producer or consumer is
// SIGKILLed in the middle of put()/get().
#include <atomic>
#include <cstring>
#include <deque>
#include <map>
#include <numeric>
#include <span>
#include <string>
#include <thread>
#include <variant>

#include "mp/queues.hpp"
#include "mp_test.hpp"
#include "platform/process.hpp"
#include "queue_faults.hpp"

using namespace mp_test;

namespace {

using Clock = std::chrono::steady_clock;

// An item whose bytes all derive from (producer, index): a torn item fails check().
struct Item {
  int producer = 0;
  int index = 0;
  std::string body;
  template <class A>
  void serialize(A& ar) {
    ar(producer, index, body);
  }
  // The body repeats a 256-byte pattern derived from (producer, index).
  static std::string pattern(int producer, int index) {
    std::string p(256, '\0');
    for (std::size_t i = 0; i < p.size(); ++i)
      p[i] = static_cast<char>((producer * 31 + index * 7 + i) & 0xff);
    return p;
  }
  static Item make(int producer, int index, std::size_t size) {
    Item it{producer, index, std::string(size, '\0')};
    const std::string p = pattern(producer, index);
    for (std::size_t at = 0; at < size; at += p.size())
      std::memcpy(it.body.data() + at, p.data(), std::min(p.size(), size - at));
    return it;
  }
  bool check() const {
    const std::string p = pattern(producer, index);
    for (std::size_t at = 0; at < body.size(); at += p.size())
      if (std::memcmp(body.data() + at, p.data(), std::min(p.size(), body.size() - at)) != 0)
        return false;
    return true;
  }
};

// Sizes mixing small, ring-sized and out-of-band items.
std::size_t size_for(int index, bool large) {
  if (!large) return static_cast<std::size_t>(index % 100);
  switch (index % 4) {
    case 0:
      return 10;
    case 1:
      return 300000;
    case 2:
      return 3u << 20;
    default:
      return 20u << 20;  // out of band
  }
}

// Counters in shared memory a child updates after each completed operation.
struct Progress {
  std::atomic<int> done[8];
};
Progress& progress(mp::heap::SharedBlock& block) { return *static_cast<Progress*>(block.data()); }

void put_range(mp::Queue<int> q, int first, int count) {
  for (int i = first; i < first + count; ++i) q.put(i);
}

void producer_items(mp::Queue<Item> q, int producer, int count, bool large) {
  for (int i = 0; i < count; ++i) q.put(Item::make(producer, i, size_for(i, large)));
}

void put_strings(mp::Queue<std::string> q, int count, int size) {
  for (int i = 0; i < count; ++i) q.put(std::string(static_cast<std::size_t>(size), 's'));
}

// Gets `count` ints and sends their sum back.
void consume_sum(mp::Queue<int> q, mp::Queue<long long> result, int count) {
  long long sum = 0;
  for (int i = 0; i < count; ++i) sum += q.get(true, kTimeout);
  result.put(sum);
}

// Puts items, then kills itself right after the last put returned.
void put_then_die(mp::Queue<Item> q, int count) {
  for (int i = 0; i < count; ++i) q.put(Item::make(0, i, size_for(i, true)));
  mp::platform::kill_self();
}

// Puts forever, recording each completed put in progress slot `producer`.
void put_forever(mp::Queue<Item> q, mp::heap::SharedBlock block, int producer) {
  for (int i = 0;; ++i) {
    q.put(Item::make(producer, i, size_for(i, true)));
    progress(block).done[producer].store(i + 1);
  }
}

// Gets forever, recording each completed get.
void get_forever(mp::Queue<Item> q, mp::heap::SharedBlock block) {
  for (;;) {
    Item it = q.get(true, kTimeout);
    if (!it.check()) std::exit(9);
    progress(block).done[0].fetch_add(1);
  }
}

void joinable_worker(mp::JoinableQueue<int> q, mp::Queue<long long> result, int count) {
  long long sum = 0;
  for (int i = 0; i < count; ++i) {
    sum += q.get(true, kTimeout);
    q.task_done();
  }
  result.put(sum);
}

void simple_echo(mp::SimpleQueue<std::string> in, mp::SimpleQueue<std::string> out) {
  for (;;) {
    std::string s = in.get();
    if (s == "stop") return;
    out.put(s + "!");
  }
}

void put_huge(mp::Queue<std::string> q, std::size_t size) { q.put(std::string(size, 'h')); }

// The fault point a child dies at, and at which pass.
int g_fault_point = 0;
int g_fault_countdown = 0;
void die_at(mp::detail::QueueFault point) {
  if (static_cast<int>(point) == g_fault_point && --g_fault_countdown == 0)
    mp::platform::kill_self();
}

// Puts and gets 1 MiB items one at a time (the queue switches rings every few MiB, restarting the
// one it enters), recording completed puts and gets, until it dies at the `countdown`-th pass
// through fault point `point`. Exits with 3 if it never gets there.
void cycle_until_killed(mp::Queue<Item> q, mp::heap::SharedBlock block, int point, int countdown) {
  g_fault_point = point;
  g_fault_countdown = countdown;
  mp::detail::queue_fault = die_at;
  for (int i = 0; i < 1000; ++i) {
    q.put(Item::make(0, i, 1 << 20));
    progress(block).done[0].store(i + 1);
    const Item it = q.get(true, kTimeout);
    if (!it.check() || it.index != i) std::exit(9);
    progress(block).done[1].store(i + 1);
  }
  std::exit(3);
}

// The child of NonBlockingCallsGiveUpOnAStoppedLockHolder: at the first pass through `point` it
// records that it holds the queue's lock (done[2] = 1) and stops there, alive, until the parent
// sets done[3] (at most 60 s), then goes on and exits 0.
mp::heap::SharedBlock* g_hold_block = nullptr;
void hold_at(mp::detail::QueueFault point) {
  if (static_cast<int>(point) != g_fault_point || g_hold_block == nullptr) return;
  g_fault_point = 0;
  Progress& pr = progress(*g_hold_block);
  pr.done[2].store(1);
  const auto until = Clock::now() + std::chrono::seconds(60);
  while (pr.done[3].load() == 0 && Clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
}
void cycle_holding_the_lock(mp::Queue<Item> q, mp::heap::SharedBlock block, int point) {
  g_fault_point = point;
  g_hold_block = &block;
  mp::detail::queue_fault = hold_at;
  for (int i = 0; i < 40; ++i) {
    q.put(Item::make(0, i, 1 << 20));
    q.get(true, kTimeout);
  }
  std::exit(progress(block).done[2].load() == 1 ? 0 : 3);
}

// Takes `count` tasks, marking each done.
void do_tasks(mp::JoinableQueue<int> q, int count) {
  for (int i = 0; i < count; ++i) {
    q.get(true, kTimeout);
    q.task_done();
  }
}

// Puts `rounds` batches of `batch` tasks, joining the queue after each.
void put_batches_and_join(mp::JoinableQueue<int> q, int rounds, int batch) {
  for (int r = 0; r < rounds; ++r) {
    for (int i = 0; i < batch; ++i) q.put(i);
    q.join();
  }
}

using Message = std::variant<int, std::string, std::vector<double>>;
void put_messages(mp::Queue<Message> q) {
  q.put(Message(1));
  q.put(Message(std::string("two")));
  q.put(Message(std::vector<double>{3.0}));
}

}  // namespace

class QueueTest : public StartMethodTest {};

TEST_P(QueueTest, FifoOrderFromAChild) {
  mp::Queue<int> q;
  mp::Process p(ctx(), put_range, q, 0, 10000);
  p.start();
  for (int i = 0; i < 10000; ++i) ASSERT_EQ(q.get(true, kTimeout), i);
  join_or_fail(p);
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_TRUE(q.empty());
}

TEST_P(QueueTest, MixedMessagesWithVariant) {
  mp::Queue<Message> q;
  mp::Process p(ctx(), put_messages, q);
  p.start();
  EXPECT_EQ(q.get(true, kTimeout), Message(1));
  EXPECT_EQ(q.get(true, kTimeout), Message(std::string("two")));
  EXPECT_EQ(q.get(true, kTimeout), Message(std::vector<double>{3.0}));
  join_or_fail(p);
}

TEST_P(QueueTest, ManyProducersAndConsumersExactTotals) {
  mp::Queue<int> q(100);  // bounded: producers block for room
  mp::Queue<long long> results;
  constexpr int kProducers = 3, kConsumers = 2, kPerProducer = 20000;
  std::vector<mp::Process> procs;
  for (int i = 0; i < kProducers; ++i)
    procs.emplace_back(ctx(), put_range, q, i * kPerProducer, kPerProducer);
  for (int i = 0; i < kConsumers; ++i)
    procs.emplace_back(ctx(), consume_sum, q, results, kProducers * kPerProducer / kConsumers);
  for (auto& p : procs) p.start();
  long long total = 0;
  for (int i = 0; i < kConsumers; ++i) total += results.get(true, kTimeout);
  for (auto& p : procs) join_or_fail(p);
  const long long n = kProducers * kPerProducer;
  EXPECT_EQ(total, n * (n - 1) / 2);
  EXPECT_TRUE(q.empty());
}

TEST_P(QueueTest, FifoPerProducerWithLargeItems) {
  mp::Queue<Item> q;
  mp::Process a(ctx(), producer_items, q, 1, 40, true);
  mp::Process b(ctx(), producer_items, q, 2, 40, true);
  a.start();
  b.start();
  std::map<int, int> next;
  for (int i = 0; i < 80; ++i) {
    Item it = q.get(true, kTimeout);
    ASSERT_TRUE(it.check());
    ASSERT_EQ(it.index, next[it.producer]++);
    ASSERT_EQ(it.body.size(), size_for(it.index, true));
  }
  join_or_fail(a);
  join_or_fail(b);
}

TEST_P(QueueTest, JoinableQueueTaskAccounting) {
  mp::JoinableQueue<int> q;
  mp::Queue<long long> result;
  EXPECT_THROW(q.task_done(), std::invalid_argument);
  for (int i = 0; i < 100; ++i) q.put(i);
  mp::Process p(ctx(), joinable_worker, q, result, 100);
  p.start();
  q.join();  // returns once the worker marked every item done
  EXPECT_EQ(result.get(true, kTimeout), 4950);
  join_or_fail(p);
  try {
    q.task_done();
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "task_done() called too many times");
  }
  q.join();  // nothing outstanding: returns at once
}

TEST_P(QueueTest, SimpleQueueAcrossProcesses) {
  mp::SimpleQueue<std::string> in, out;
  EXPECT_TRUE(in.empty());
  mp::Process p(ctx(), simple_echo, in, out);
  p.start();
  in.put("a");
  in.put("b");
  EXPECT_EQ(out.get(), "a!");
  EXPECT_EQ(out.get(), "b!");
  in.put("stop");
  join_or_fail(p);
  EXPECT_TRUE(out.empty());
}

TEST_P(QueueTest, DeliveredAfterProducerIsKilled) {
  mp::Queue<Item> q;
  mp::Process p(ctx(), put_then_die, q, 12);
  p.start();
  join_or_fail(p);  // joining before draining: no deadlock
  EXPECT_EQ(p.exitcode(), kKilledExitCode);
  EXPECT_EQ(q.qsize(), 12u);
  for (int i = 0; i < 12; ++i) {
    Item it = q.get(false);
    EXPECT_TRUE(it.check());
    EXPECT_EQ(it.index, i);
  }
  EXPECT_THROW(q.get_nowait(), mp::Empty);
}

TEST_P(QueueTest, JoinProducerBeforeDrainingLargeItems) {
  mp::Queue<Item> q;
  mp::Process p(ctx(), producer_items, q, 3, 12, true);
  p.start();
  join_or_fail(p);
  EXPECT_EQ(p.exitcode(), 0);
  for (int i = 0; i < 12; ++i) EXPECT_EQ(q.get(true, kTimeout).index, i);
}

// The same after the queue has already cycled items through the start of its ring while a
// consumer kept up (so its write position is anywhere): a producer of 24 MiB that is joined before
// anything is read still finishes.
TEST_P(QueueTest, JoinProducerBeforeDrainingAfterTheRingCycled) {
  mp::Queue<std::string> q;
  const std::string mib(1 << 20, 'm');
  for (int i = 0; i < 9; ++i) {  // 9 MiB through the ring, one item in flight at a time
    q.put(mib);
    ASSERT_EQ(q.get(true, kTimeout).size(), mib.size());
  }
  mp::Process p(ctx(), put_strings, q, 24, 1 << 20);
  p.start();
  join_or_fail(p);
  EXPECT_EQ(p.exitcode(), 0);
  for (int i = 0; i < 24; ++i) EXPECT_EQ(q.get(true, kTimeout).size(), std::size_t{1} << 20);
}

// A non-blocking put or get whose lock is held by a live process that does not go on (stopped,
// or stuck) gives up with Full/Empty in bounded time, as CPython's get_nowait does on a busy
// lock, instead of waiting for the holder without limit.
TEST_P(QueueTest, NonBlockingCallsGiveUpOnAStoppedLockHolder) {
  using mp::detail::QueueFault;
  for (const QueueFault point :
       {QueueFault::producer_switch_recorded, QueueFault::consumer_switch_recorded}) {
    const bool producer = point == QueueFault::producer_switch_recorded;
    SCOPED_TRACE(producer ? "put_lock held" : "get_lock held");
    mp::Queue<Item> q;
    mp::heap::SharedBlock block(sizeof(Progress));
    mp::Process p(ctx(), cycle_holding_the_lock, q, block, static_cast<int>(point));
    p.start();
    const auto until = Clock::now() + kTimeout;
    while (progress(block).done[2].load() == 0 && Clock::now() < until && p.is_alive())
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ASSERT_EQ(progress(block).done[2].load(), 1) << "the child never reached the fault point";
    // The call runs on a thread so that a hang fails the test instead of hanging it: releasing
    // the holder lets the call finish.
    std::atomic<int> outcome{0};  // 1 gave up as expected, 2 succeeded, 3 other error
    std::thread call([&] {
      try {
        if (producer)
          q.put_nowait(Item::make(1, 0, 100));
        else
          (void)q.get_nowait();
        outcome = 2;
      } catch (const mp::Full&) {
        outcome = producer ? 1 : 3;
      } catch (const mp::Empty&) {
        outcome = producer ? 3 : 1;
      } catch (...) {
        outcome = 3;
      }
    });
    const auto bound = Clock::now() + std::chrono::seconds(10);
    while (outcome.load() == 0 && Clock::now() < bound)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    const int seen = outcome.load();
    progress(block).done[3].store(1);  // release the holder
    call.join();
    EXPECT_EQ(seen, 1) << "0: the non-blocking call was still waiting for the lock after 10 s";
    join_or_fail(p);
    EXPECT_EQ(p.exitcode(), 0);
    // The queue still works for everyone.
    while (true) {
      try {
        (void)q.get(true, std::chrono::milliseconds(200));
      } catch (const mp::Empty&) {
        break;
      }
    }
    q.put(Item::make(2, 0, 1000), true, kTimeout);
    EXPECT_TRUE(q.get(true, kTimeout).check());
  }
}

// A producer or consumer killed between the stores of a ring switch or restart (each a state
// the next user must read right) loses no completed put, and the queue keeps its order, its
// content and its whole capacity afterwards.
TEST_P(QueueTest, KilledInTheMiddleOfARingSwitch) {
  using mp::detail::QueueFault;
  for (const QueueFault point :
       {QueueFault::producer_switch_recorded, QueueFault::producer_switch_committed,
        QueueFault::producer_restart_half_done, QueueFault::consumer_switch_recorded}) {
    for (const int countdown : {1, 3}) {
      SCOPED_TRACE(testing::Message()
                   << "fault point " << static_cast<int>(point) << ", pass " << countdown);
      mp::Queue<Item> q;
      mp::heap::SharedBlock block(sizeof(Progress));
      mp::Process p(ctx(), cycle_until_killed, q, block, static_cast<int>(point), countdown);
      p.start();
      join_or_fail(p);
      ASSERT_EQ(p.exitcode(), kKilledExitCode);
      const int puts = progress(block).done[0].load(), gets = progress(block).done[1].load();
      int next = gets;
      for (;;) {
        Item it;
        try {
          it = q.get(true, 200ms);
        } catch (const mp::Empty&) {
          break;
        }
        ASSERT_TRUE(it.check());
        ASSERT_EQ(it.index, next++);
      }
      EXPECT_EQ(next, puts) << "a completed put was lost, or an interrupted one delivered";
      // Still a FIFO through many more switches: one item in flight, then 40 MiB in it at once.
      for (int i = 0; i < 30; ++i) {
        q.put(Item::make(1, i, 1 << 20), true, kTimeout);
        const Item it = q.get(true, kTimeout);
        ASSERT_TRUE(it.check());
        ASSERT_EQ(it.index, i);
      }
      for (int i = 0; i < 40; ++i) q.put(Item::make(2, i, 1 << 20), true, kTimeout);
      for (int i = 0; i < 40; ++i) {
        const Item it = q.get(true, kTimeout);
        ASSERT_TRUE(it.check());
        ASSERT_EQ(it.producer, 2);
        ASSERT_EQ(it.index, i);
      }
      EXPECT_TRUE(q.empty());
    }
  }
}

// A consumer that takes an item before the producer has counted it must still be woken for the
// next one: a long long stream of small items with a consumer that often sleeps never stalls (a lost
// wake-up shows as a get() that waits out its timeout while the producer is still putting).
TEST_P(QueueTest, LongStreamOfSmallItemsNeverLosesAWakeUp) {
  mp::Queue<int> q;
  constexpr int kItems = 300000;
  mp::Process p(ctx(), put_range, q, 0, kItems);
  p.start();
  for (int i = 0; i < kItems; ++i) {
    if (i % 1000 == 0)
      std::this_thread::yield();  // let the producer run ahead and the consumer sleep
    ASSERT_EQ(q.get(true, 5s), i);
  }
  join_or_fail(p);
}

// The same for JoinableQueue.join(): a joiner woken by one task_done() must not miss the last.
TEST_P(QueueTest, JoinSeesEveryTaskDone) {
  mp::JoinableQueue<int> q;
  constexpr int kRounds = 2000, kBatch = 3;
  mp::Process worker(ctx(), do_tasks, q, kRounds * kBatch);
  mp::Process joiner(ctx(), put_batches_and_join, q, kRounds, kBatch);
  worker.start();
  joiner.start();
  join_or_fail(joiner);
  join_or_fail(worker);
  EXPECT_EQ(joiner.exitcode(), 0);
  EXPECT_EQ(worker.exitcode(), 0);
}

TEST_P(QueueTest, OneGibMessage) {
  mp::Queue<std::string> q;
  const std::size_t size = std::size_t{1} << 30;
  mp::Process p(ctx(), put_huge, q, size);
  p.start();
  // 1 GiB made, copied in and out: under ASan on a loaded 2-CPU host this took over 30 s once.
  const std::string s = q.get(true, 3 * kTimeout);
  EXPECT_EQ(s.size(), size);
  EXPECT_EQ(s.find_first_not_of('h'), std::string::npos);
  join_or_fail(p);
}

TEST_P(QueueTest, KilledProducersLeaveQueueUsable) {
  mp::Queue<Item> q;
  mp::heap::SharedBlock block(sizeof(Progress));
  for (int round = 0; round < 4; ++round) {
    for (auto& d : progress(block).done) d.store(0);
    mp::Process a(ctx(), put_forever, q, block, 1);
    mp::Process b(ctx(), put_forever, q, block, 2);
    a.start();
    b.start();
    // Let them get well into their puts (small and large), then kill both mid-stream.
    std::map<int, int> next;
    const int target = 5 + round * 3;
    for (int got = 0; got < target; ++got) {
      Item it = q.get(true, kTimeout);
      ASSERT_TRUE(it.check());
      ASSERT_EQ(it.index, next[it.producer]++);
    }
    a.kill();
    b.kill();
    join_or_fail(a);
    join_or_fail(b);
    // Every completed put is there, in order, intact; at most the interrupted one beyond.
    for (;;) {
      const auto t0 = Clock::now();
      Item it;
      try {
        it = q.get(true, 100ms);
      } catch (const mp::Empty&) {
        EXPECT_LT(Clock::now() - t0, 100ms + 400ms);  // generous: the machine is loaded
        break;
      }
      ASSERT_TRUE(it.check());
      ASSERT_EQ(it.index, next[it.producer]++);
    }
    for (int prod : {1, 2}) {
      EXPECT_GE(next[prod], progress(block).done[prod].load()) << "a completed put was lost";
      EXPECT_LE(next[prod], progress(block).done[prod].load() + 1);
    }
    q.put(Item::make(7, 0, 100));
    EXPECT_TRUE(q.get(true, kTimeout).check());
  }
}

TEST_P(QueueTest, KilledConsumerLeavesQueueUsable) {
  mp::Queue<Item> q(50);
  mp::heap::SharedBlock block(sizeof(Progress));
  constexpr int kItems = 60;
  for (int round = 0; round < 3; ++round) {
    progress(block).done[0].store(0);
    mp::Process c(ctx(), get_forever, q, block);
    c.start();
    int put = 0;
    // Enough for the consumer to be busy with large items when it is killed.
    for (; put < kItems; ++put) q.put(Item::make(0, put, size_for(put, true)), true, kTimeout);
    c.kill();
    join_or_fail(c);
    EXPECT_NE(c.exitcode(), 9) << "the consumer saw a torn item";
    const int consumed = progress(block).done[0].load();
    int drained = 0, first = -1;
    while (true) {
      try {
        Item it = q.get(true, 200ms);
        ASSERT_TRUE(it.check());
        if (first < 0) first = it.index;
        ASSERT_EQ(it.index, first + drained);
        ++drained;
      } catch (const mp::Empty&) {
        break;
      }
    }
    // The item being got when the consumer died is either still there or counted as got.
    EXPECT_GE(consumed + drained, kItems - 1);
    EXPECT_LE(consumed + drained, kItems);
  }
}

TEST(Queue, BlockTimeoutAndNowaitRules) {
  mp::Queue<int> q(2);
  EXPECT_EQ(q.qsize(), 0u);
  EXPECT_TRUE(q.empty());
  EXPECT_FALSE(q.full());
  q.put(1);
  q.put_nowait(2);
  EXPECT_EQ(q.qsize(), 2u);
  EXPECT_TRUE(q.full());
  EXPECT_THROW(q.put_nowait(3), mp::Full);
  auto t0 = Clock::now();
  EXPECT_THROW(q.put(3, false, 100ms), mp::Full);  // block=false: at once
  EXPECT_LT(Clock::now() - t0, 50ms);
  t0 = Clock::now();
  EXPECT_THROW(q.put(3, true, 100ms), mp::Full);
  EXPECT_GE(Clock::now() - t0, 95ms);
  EXPECT_LT(Clock::now() - t0, 100ms + 400ms);
  EXPECT_EQ(q.get(), 1);
  EXPECT_EQ(q.get_nowait(), 2);
  EXPECT_THROW(q.get_nowait(), mp::Empty);
  t0 = Clock::now();
  EXPECT_THROW(q.get(false, 100ms), mp::Empty);
  EXPECT_LT(Clock::now() - t0, 50ms);
  t0 = Clock::now();
  EXPECT_THROW(q.get(true, 100ms), mp::Empty);
  EXPECT_GE(Clock::now() - t0, 95ms);
  EXPECT_LT(Clock::now() - t0, 100ms + 400ms);
  EXPECT_THROW(q.get(true, -1s), mp::Empty);  // a negative timeout is a poll
}

// Python's q.get(timeout=1) / q.put(x, timeout=1): a duration alone is the timeout.
TEST(Queue, TimeoutOnlyForms) {
  mp::Queue<int> q(1);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(q.get(50ms), mp::Empty);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 45ms);
  q.put(7, 1s);
  t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(q.put(8, 50ms), mp::Full);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 45ms);
  EXPECT_EQ(q.get(1s), 7);
  mp::JoinableQueue<std::string> jq;
  jq.put("a", 1s);
  EXPECT_EQ(jq.get(std::chrono::milliseconds(500)), "a");
}

// A timeout too long long for the clock (hours::max()) blocks as long long as needed; it used to overflow
// into a negative one and fail at once (Empty/Full). The other side acts after a delay only so
// that the calls really block; the outcome does not depend on it.
TEST(Queue, HugeTimeoutsBlockInsteadOfFailingAtOnce) {
  using namespace std::chrono_literals;
  mp::Queue<int> q(1);
  std::jthread producer([&] {
    std::this_thread::sleep_for(50ms);
    q.put(1);
  });
  EXPECT_EQ(q.get(true, std::chrono::hours::max()), 1);
  producer.join();
  q.put(2);
  std::jthread consumer([&] {
    std::this_thread::sleep_for(50ms);
    EXPECT_EQ(q.get(true, 10s), 2);
  });
  EXPECT_NO_THROW(q.put(3, true, std::chrono::hours::max()));
  consumer.join();
  EXPECT_EQ(q.get(std::chrono::hours::max()), 3);
}

TEST(Queue, UnboundedQueueHoldsManyItems) {
  mp::Queue<std::string> q;
  for (int i = 0; i < 100000; ++i) q.put(std::to_string(i));
  EXPECT_EQ(q.qsize(), 100000u);
  EXPECT_FALSE(q.full());
  for (int i = 0; i < 100000; ++i) ASSERT_EQ(q.get_nowait(), std::to_string(i));
}

TEST(Queue, RingWrapsAround) {
  mp::Queue<std::string> q;
  const std::string big(5u << 20, 'w');
  for (int i = 0; i < 100; ++i) {  // 500 MiB through a 64 MiB ring
    q.put(big + std::to_string(i));
    if (i % 3 == 2) {
      ASSERT_EQ(q.get_nowait(), big + std::to_string(i - 2));
      ASSERT_EQ(q.get_nowait(), big + std::to_string(i - 1));
      ASSERT_EQ(q.get_nowait(), big + std::to_string(i));
    }
  }
  ASSERT_EQ(q.get_nowait(), big + "99");
  EXPECT_TRUE(q.empty());
}

// Puts `count` items of pseudo-random sizes while a consumer lags by a varying number of items,
// draining whenever a put is refused (a full ring), and checks that every item comes back whole
// and in order and that qsize() follows. Item i holds i in its first bytes and i & 0xff elsewhere.
template <typename TryPut, typename Get, typename Qsize>
void mixed_sizes_keep_order(std::span<const std::size_t> sizes, std::span<const int> lags,
                            int count, std::uint32_t rng, TryPut try_put, Get get, Qsize qsize) {
  std::deque<std::pair<int, std::size_t>> expected;
  auto get_one = [&] {
    const std::string s = get();
    ASSERT_FALSE(expected.empty());
    const auto [index, size] = expected.front();
    expected.pop_front();
    ASSERT_EQ(s.size(), size) << "item " << index;
    int got = 0;
    std::memcpy(&got, s.data(), std::min(sizeof got, size));
    if (size >= sizeof got) {
      ASSERT_EQ(got, index);
      ASSERT_EQ(s.back(), static_cast<char>(index & 0xff)) << "item " << index;
      if (size / 2 >= sizeof got) {
        ASSERT_EQ(s[size / 2], static_cast<char>(index & 0xff)) << "item " << index;
      }
    }
  };
  for (int i = 0; i < count; ++i) {
    rng = rng * 1103515245u + 12345u;
    const std::size_t size = sizes[(rng >> 8) % sizes.size()];
    const int lag = lags[static_cast<std::size_t>(i / 100) % lags.size()];
    std::string item(size, static_cast<char>(i & 0xff));
    std::memcpy(item.data(), &i, std::min(sizeof i, size));
    while (!try_put(item)) {
      ASSERT_FALSE(expected.empty()) << "an empty ring refused an item";
      get_one();
    }
    expected.emplace_back(i, size);
    while (expected.size() > static_cast<std::size_t>(lag)) get_one();
    ASSERT_EQ(qsize(), expected.size());
  }
  while (!expected.empty()) get_one();
  EXPECT_EQ(qsize(), 0u);
}

// Items of mixed sizes with a consumer lagging by a varying number of items: producers go back to
// the ring's start early (past its hot part, when the start is free) or at its end, and a full
// ring (put_nowait -> Full) is drained; every item comes back whole and in order.
TEST(Queue, EarlyAndLateWrapsKeepOrderAndContent) {
  mp::Queue<std::string> q;
  const std::size_t sizes[] = {
      8, 300, 5000, 70000, std::size_t{1} << 20, (std::size_t{3} << 20) + 5};
  const int lags[] = {0, 1, 3, 40, 1000};
  mixed_sizes_keep_order(
      sizes, lags, 1500, 12345,
      [&](const std::string& item) {
        try {
          q.put_nowait(item);
          return true;
        } catch (const mp::Full&) {
          return false;
        }
      },
      [&] { return q.get_nowait(); }, [&] { return q.qsize(); });
  EXPECT_TRUE(q.empty());
}

// A recycling queue (QueueCore's recycle, the pool's queues): producers move to the other ring
// whenever it is empty, here at nearly every item. With mixed sizes and lags, every item comes
// back whole and in order, and a full ring is drained.
TEST(Queue, RecyclingRingsKeepOrderAndContent) {
  mp::detail::QueueCore q(0, 0, true);
  const std::chrono::nanoseconds zero{0};
  const std::size_t sizes[] = {8, 300, 5000, 70000, std::size_t{1} << 20};
  const int lags[] = {0, 1, 2, 7, 300};
  auto copy = [](void* out, const char* data, std::size_t size) {
    static_cast<std::string*>(out)->assign(data, size);
  };
  mixed_sizes_keep_order(
      sizes, lags, 3000, 4321,
      [&](const std::string& item) { return q.put(item.data(), item.size(), &zero); },
      [&] {
        std::string s;
        EXPECT_TRUE(q.get(copy, &s, &zero)) << "an item counted in qsize() was not there";
        return s;
      },
      [&] { return q.qsize(); });
}

TEST(Queue, ContiguousTypesRoundTrip) {
  mp::Queue<std::vector<double>> qd;
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{1000}, std::size_t{3} << 20}) {
    std::vector<double> v(n);
    std::iota(v.begin(), v.end(), 0.5);
    qd.put(v);
    EXPECT_EQ(qd.get_nowait(), v);
  }
  mp::Queue<std::vector<char>> qc;
  for (std::size_t n : {std::size_t{0}, std::size_t{7}, std::size_t{17} << 20}) {
    std::vector<char> v(n, 'c');
    qc.put(v);
    EXPECT_EQ(qc.get_nowait(), v);
  }
  mp::Queue<std::u16string> qs;
  qs.put(u"wide");
  EXPECT_EQ(qs.get_nowait(), u"wide");
}

TEST(Queue, CloseAndJoinThread) {
  mp::Queue<int> q;
  EXPECT_THROW(q.join_thread(), std::logic_error);
  q.put(1);
  q.close();
  EXPECT_THROW(q.put(2), std::invalid_argument);
  EXPECT_THROW(q.get(), std::invalid_argument);
  q.join_thread();
  q.cancel_join_thread();
}

TEST(Queue, ThreadsShareOneHandle) {
  mp::Queue<int> q(10);
  std::thread producer([&] {
    for (int i = 0; i < 50000; ++i) q.put(i);
  });
  long long sum = 0;
  for (int i = 0; i < 50000; ++i) sum += q.get(true, kTimeout);
  producer.join();
  EXPECT_EQ(sum, 50000LL * 49999 / 2);
}

TEST(Queue, SharingOutsideSpawnIsRefused) {
  mp::Queue<int> q;
  EXPECT_THROW(mp::reduction::dumps(q), std::runtime_error);
}

MP_INSTANTIATE_START_METHODS(QueueTest);
