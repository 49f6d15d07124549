// mp (spawn) beside the raw Win32 primitive it competes with, in the same run, alternating rounds
// (under Wine absolute times say little; the same-round ratios do). Each round measures every
// pair once, the raw side first in even rounds and mp first in odd ones; a cell is the median
// over rounds with [min–max]; "mp/raw" is mp's cost over raw's per round (1 = at the limit).
//   bench_mp_win32.exe [rounds]     prints a markdown table
// The binary is also every child: mp's spawned children (mp::freeze_support first) and the raw
// sides' partners (--raw-*). Every wait is bounded (kTimeoutMs); a failed side exits non-zero.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "mp/multiprocessing.hpp"
#include "platform/process.hpp"
#include "platform/win32.hpp"

namespace {

using Clock = std::chrono::steady_clock;
constexpr DWORD kTimeoutMs = 30000;
constexpr double kTimeoutS = 30.0;
constexpr long kStarts = 5;          // process starts per round
constexpr long kTrips = 2000;        // ping-pong round trips per round
constexpr long kItems = 100000;      // small queue items per round
constexpr long kBigItems = 40;       // 1 MiB queue items per round
constexpr long kLocks = 1000000;     // uncontended in-process acquire+release per round
constexpr long kNamedLocks = 20000;  // named-mutex acquire+release per round
constexpr std::size_t kMiB = 1 << 20;
constexpr std::size_t kRingBytes = 4 * kMiB;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "bench_mp_win32: %s (error %lu)\n", what, ::GetLastError());
  std::exit(3);
}

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::wstring unique_name(const wchar_t* what) {
  static long counter = 0;
  return std::wstring(L"Local\\mp-winbench-") + what + L"-" +
         std::to_wstring(::GetCurrentProcessId()) + L"-" + std::to_wstring(++counter);
}

// A raw partner: this executable with `args`, inheriting nothing.
struct RawChild {
  PROCESS_INFORMATION pi{};
  explicit RawChild(const std::wstring& args) {
    const std::wstring exe = mp::platform::win32::widen(mp::platform::executable_path());
    std::wstring cmd = L"bench " + args;
    STARTUPINFOW si{};
    si.cb = sizeof si;
    if (!::CreateProcessW(exe.c_str(), cmd.data(), nullptr, nullptr, FALSE, 0, nullptr, nullptr,
                          &si, &pi))
      fail("CreateProcessW");
  }
  void join() {
    if (::WaitForSingleObject(pi.hProcess, kTimeoutMs) != WAIT_OBJECT_0) {
      ::TerminateProcess(pi.hProcess, 9);
      fail("raw child did not exit in time");
    }
    DWORD code = 1;
    ::GetExitCodeProcess(pi.hProcess, &code);
    if (code != 0) fail("raw child failed");
  }
  ~RawChild() {
    ::CloseHandle(pi.hThread);
    ::CloseHandle(pi.hProcess);
  }
};

void join_mp(mp::Process& p) {
  p.join(kTimeoutS);
  if (p.exitcode() != 0) {
    if (p.is_alive()) p.kill();
    p.join(kTimeoutS);
    fail("mp child failed or did not exit in time");
  }
}

mp::Context spawn() { return mp::get_context("spawn"); }

// ---- process start + join (ms) ----
void noop() {}

double mp_start_ms() {
  const auto t = Clock::now();
  for (long i = 0; i < kStarts; ++i) {
    mp::Process p(spawn(), noop);
    p.start();
    join_mp(p);
  }
  return seconds_since(t) * 1e3 / kStarts;
}

double raw_start_ms() {
  const auto t = Clock::now();
  for (long i = 0; i < kStarts; ++i) RawChild(L"--raw-exit").join();
  return seconds_since(t) * 1e3 / kStarts;
}

// ---- event ping-pong between two processes (us per round trip) ----
void wait_or_fail(HANDLE h) {
  if (::WaitForSingleObject(h, kTimeoutMs) != WAIT_OBJECT_0) fail("WaitForSingleObject");
}

void mp_event_pong(mp::Event ping, mp::Event pong, long n) {
  for (long i = 0; i < n; ++i) {
    if (!ping.wait(kTimeoutS)) std::exit(2);
    ping.clear();
    pong.set();
  }
}

double mp_event_us() {
  mp::Event ping, pong;
  mp::Process p(spawn(), mp_event_pong, ping, pong, kTrips + 1);
  p.start();
  const auto trip = [&] {
    ping.set();
    if (!pong.wait(kTimeoutS)) fail("Event.wait timed out");
    pong.clear();
  };
  trip();  // the partner is running
  const auto t = Clock::now();
  for (long i = 0; i < kTrips; ++i) trip();
  const double s = seconds_since(t);
  join_mp(p);
  return s * 1e6 / kTrips;
}

int raw_event_pong(const std::wstring& ping_name, const std::wstring& pong_name) {
  HANDLE ping = ::OpenEventW(SYNCHRONIZE | EVENT_MODIFY_STATE, FALSE, ping_name.c_str());
  HANDLE pong = ::OpenEventW(SYNCHRONIZE | EVENT_MODIFY_STATE, FALSE, pong_name.c_str());
  if (!ping || !pong) fail("OpenEventW");
  for (long i = 0; i < kTrips + 1; ++i) {
    wait_or_fail(ping);
    ::SetEvent(pong);
  }
  ::CloseHandle(ping);
  ::CloseHandle(pong);
  return 0;
}

double raw_event_us() {
  const std::wstring ping_name = unique_name(L"ping"), pong_name = unique_name(L"pong");
  HANDLE ping = ::CreateEventW(nullptr, FALSE, FALSE, ping_name.c_str());
  HANDLE pong = ::CreateEventW(nullptr, FALSE, FALSE, pong_name.c_str());
  if (!ping || !pong) fail("CreateEventW");
  RawChild child(L"--raw-event-pong " + ping_name + L" " + pong_name);
  const auto trip = [&] {
    ::SetEvent(ping);
    wait_or_fail(pong);
  };
  trip();
  const auto t = Clock::now();
  for (long i = 0; i < kTrips; ++i) trip();
  const double s = seconds_since(t);
  child.join();
  ::CloseHandle(ping);
  ::CloseHandle(pong);
  return s * 1e6 / kTrips;
}

// ---- queue throughput (items/s and MB/s) vs a raw SPSC ring in a named mapping ----
void mp_produce_ints(mp::Queue<int> q, long n) {
  for (long i = 0; i < n; ++i) q.put(static_cast<int>(i));
}

void mp_produce_mib(mp::Queue<std::string> q, long n) {
  const std::string item(kMiB, 'x');
  for (long i = 0; i < n; ++i) q.put(item);
}

// Timed from the first item received to the last (the partner's start is not counted). With
// `timeout`, each get() is get(true, 30 s); without, plain get() as the Linux bench does (bounded
// then by the run's watchdog).
double mp_queue_ints_per_s(bool timeout) {
  mp::Queue<int> q;
  mp::Process p(spawn(), mp_produce_ints, q, kItems);
  p.start();
  (void)q.get(true, std::chrono::seconds(30));
  const auto t = Clock::now();
  for (long i = 1; i < kItems; ++i)
    if ((timeout ? q.get(true, std::chrono::seconds(30)) : q.get()) != i) fail("queue: wrong item");
  const double s = seconds_since(t);
  join_mp(p);
  return static_cast<double>(kItems - 1) / s / 1e6;
}

double mp_queue_mib_MBps() {
  mp::Queue<std::string> q;
  mp::Process p(spawn(), mp_produce_mib, q, kBigItems);
  p.start();
  (void)q.get(true, std::chrono::seconds(30));
  const auto t = Clock::now();
  for (long i = 1; i < kBigItems; ++i)
    if (q.get(true, std::chrono::seconds(30)).size() != kMiB) fail("queue: wrong item");
  const double s = seconds_since(t);
  join_mp(p);
  return static_cast<double>(kBigItems - 1) * kMiB / 1e6 / s;
}

// Single producer, single consumer: free-running byte counters, each side spins (pause, then
// SwitchToThread) while the ring is full/empty. Every copy is published at once, as a queue would.
struct Ring {
  alignas(64) std::atomic<std::uint64_t> head{0};  // bytes written
  alignas(64) std::atomic<std::uint64_t> tail{0};  // bytes read
  alignas(64) unsigned char data[kRingBytes];
};

struct Mapping {
  HANDLE h = nullptr;
  Ring* ring = nullptr;
  Mapping(const std::wstring& name, bool create) {
    h = create ? ::CreateFileMappingW(INVALID_HANDLE_VALUE, nullptr, PAGE_READWRITE, 0,
                                      sizeof(Ring), name.c_str())
               : ::OpenFileMappingW(FILE_MAP_ALL_ACCESS, FALSE, name.c_str());
    if (!h) fail("CreateFileMappingW");
    ring = static_cast<Ring*>(::MapViewOfFile(h, FILE_MAP_ALL_ACCESS, 0, 0, sizeof(Ring)));
    if (!ring) fail("MapViewOfFile");
    if (create) new (ring) Ring;  // the zero-filled pages already hold the counters' 0
  }
  ~Mapping() {
    ::UnmapViewOfFile(ring);
    ::CloseHandle(h);
  }
};

template <class Ready>
void spin_until(Ready ready) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(kTimeoutMs);
  for (unsigned spins = 0; !ready(); ++spins) {
    if (spins < 64) {
      YieldProcessor();
      continue;
    }
    ::SwitchToThread();
    if ((spins & 1023) == 0 && Clock::now() > deadline) fail("ring: partner stalled");
  }
}

// Each side keeps the other's counter as last seen and reloads it only when the ring looks full
// (writer) or empty (reader): the shared counters' cache lines move only then.
struct RingWriter {
  Ring* r;
  std::uint64_t tail_seen = 0;
  void write(const void* p, std::size_t size) {
    const auto* src = static_cast<const unsigned char*>(p);
    while (size > 0) {
      const std::uint64_t head = r->head.load(std::memory_order_relaxed);
      if (head - tail_seen == kRingBytes)
        spin_until([&] {
          return head - (tail_seen = r->tail.load(std::memory_order_acquire)) < kRingBytes;
        });
      const std::size_t at = head % kRingBytes;
      const std::size_t n =
          std::min<std::size_t>({size, kRingBytes - (head - tail_seen), kRingBytes - at});
      std::memcpy(r->data + at, src, n);
      r->head.store(head + n, std::memory_order_release);
      src += n;
      size -= n;
    }
  }
};

struct RingReader {
  Ring* r;
  std::uint64_t head_seen = 0;
  void read(void* p, std::size_t size) {
    auto* dst = static_cast<unsigned char*>(p);
    while (size > 0) {
      const std::uint64_t tail = r->tail.load(std::memory_order_relaxed);
      if (head_seen == tail)
        spin_until([&] { return (head_seen = r->head.load(std::memory_order_acquire)) != tail; });
      const std::size_t at = tail % kRingBytes;
      const std::size_t n = std::min<std::size_t>({size, head_seen - tail, kRingBytes - at});
      std::memcpy(dst, r->data + at, n);
      r->tail.store(tail + n, std::memory_order_release);
      dst += n;
      size -= n;
    }
  }
};

int raw_ring_produce(const std::wstring& name, std::size_t item_size, long n) {
  Mapping m(name, false);
  std::vector<unsigned char> item(item_size, 'x');
  RingWriter writer{m.ring};
  for (long i = 0; i < n; ++i) {
    const int v = static_cast<int>(i);
    std::memcpy(item.data(), &v, std::min(item_size, sizeof v));
    writer.write(item.data(), item_size);
  }
  return 0;
}

// Returns items/s.
double raw_ring_rate(std::size_t item_size, long n) {
  const std::wstring name = unique_name(L"ring");
  Mapping m(name, true);
  RawChild child(L"--raw-ring-produce " + name + L" " + std::to_wstring(item_size) + L" " +
                 std::to_wstring(n));
  std::vector<unsigned char> item(item_size);
  RingReader reader{m.ring};
  reader.read(item.data(), item_size);
  const auto t = Clock::now();
  for (long i = 1; i < n; ++i) {
    reader.read(item.data(), item_size);
    int got = 0;
    std::memcpy(&got, item.data(), std::min(item_size, sizeof got));
    if (item_size >= sizeof got && got != static_cast<int>(i)) fail("ring: wrong item");
  }
  const double s = seconds_since(t);
  child.join();
  return static_cast<double>(n - 1) / s;
}

double raw_ring_ints_per_s() { return raw_ring_rate(sizeof(int), kItems) / 1e6; }
double raw_ring_mib_MBps() { return raw_ring_rate(kMiB, kBigItems) * kMiB / 1e6; }

// ---- pipe round trip (us) ----
// recv() as the Linux bench's pipe metrics do: bounded by the peer's life (EOFError when it
// exits). With `poll`, each recv() is preceded by poll(30 s), as bounded Python code would do.
void mp_pipe_pong(mp::Connection c, long n, bool poll) {
  for (long i = 0; i < n; ++i) {
    if (poll && !c.poll(kTimeoutS)) std::exit(2);
    c.send(c.recv<int>());
  }
}

double mp_pipe_us(bool poll) {
  auto [a, b] = mp::Pipe();
  mp::Process p(spawn(), mp_pipe_pong, b, kTrips + 1, poll);
  p.start();
  b.close();
  const auto trip = [&a = a, poll](int i) {
    a.send(i);
    if (poll && !a.poll(kTimeoutS)) fail("Pipe: no reply in time");
    if (a.recv<int>() != i) fail("Pipe: wrong reply");
  };
  trip(0);
  const auto t = Clock::now();
  for (long i = 0; i < kTrips; ++i) trip(static_cast<int>(i));
  const double s = seconds_since(t);
  join_mp(p);
  return s * 1e6 / kTrips;
}

// Blocking ReadFile/WriteFile on a byte-mode duplex named pipe: each is bounded by the peer's life
// (its end breaks when it exits), and the peer's life by RawChild::join.
int raw_pipe_pong(const std::wstring& name) {
  HANDLE h = ::CreateFileW(name.c_str(), GENERIC_READ | GENERIC_WRITE, 0, nullptr, OPEN_EXISTING, 0,
                           nullptr);
  if (h == INVALID_HANDLE_VALUE) fail("CreateFileW(pipe)");
  for (long i = 0; i < kTrips + 1; ++i) {
    int v = 0;
    DWORD done = 0;
    if (!::ReadFile(h, &v, sizeof v, &done, nullptr) || done != sizeof v) fail("ReadFile");
    if (!::WriteFile(h, &v, sizeof v, &done, nullptr) || done != sizeof v) fail("WriteFile");
  }
  ::CloseHandle(h);
  return 0;
}

double raw_pipe_us() {
  const std::wstring name = L"\\\\.\\pipe\\" + unique_name(L"pipe").substr(6);
  HANDLE h = ::CreateNamedPipeW(name.c_str(), PIPE_ACCESS_DUPLEX,
                                PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT, 1, 4096, 4096, 0,
                                nullptr);
  if (h == INVALID_HANDLE_VALUE) fail("CreateNamedPipeW");
  RawChild child(L"--raw-pipe-pong " + name);
  if (!::ConnectNamedPipe(h, nullptr) && ::GetLastError() != ERROR_PIPE_CONNECTED)
    fail("ConnectNamedPipe");
  const auto trip = [h](int i) {
    int v = i;
    DWORD done = 0;
    if (!::WriteFile(h, &v, sizeof v, &done, nullptr) || done != sizeof v) fail("WriteFile");
    if (!::ReadFile(h, &v, sizeof v, &done, nullptr) || done != sizeof v || v != i)
      fail("ReadFile");
  };
  trip(0);
  const auto t = Clock::now();
  for (long i = 0; i < kTrips; ++i) trip(static_cast<int>(i));
  const double s = seconds_since(t);
  child.join();
  ::CloseHandle(h);
  return s * 1e6 / kTrips;
}

// ---- uncontended lock (ns per acquire+release) ----
std::atomic<int> sink{0};

double mp_lock_ns() {
  mp::Lock lock;
  const auto t = Clock::now();
  for (long i = 0; i < kLocks; ++i) {
    lock.acquire();
    sink.fetch_add(1, std::memory_order_relaxed);
    lock.release();
  }
  return seconds_since(t) * 1e9 / kLocks;
}

double srwlock_ns() {
  SRWLOCK lock = SRWLOCK_INIT;
  const auto t = Clock::now();
  for (long i = 0; i < kLocks; ++i) {
    ::AcquireSRWLockExclusive(&lock);
    sink.fetch_add(1, std::memory_order_relaxed);
    ::ReleaseSRWLockExclusive(&lock);
  }
  return seconds_since(t) * 1e9 / kLocks;
}

double named_mutex_ns() {
  HANDLE m = ::CreateMutexW(nullptr, FALSE, unique_name(L"mutex").c_str());
  if (!m) fail("CreateMutexW");
  const auto t = Clock::now();
  for (long i = 0; i < kNamedLocks; ++i) {
    if (::WaitForSingleObject(m, kTimeoutMs) != WAIT_OBJECT_0) fail("mutex wait");
    sink.fetch_add(1, std::memory_order_relaxed);
    ::ReleaseMutex(m);
  }
  const double s = seconds_since(t);
  ::CloseHandle(m);
  return s * 1e9 / kNamedLocks;
}

// The cost of one steady_clock::now() (QueryPerformanceCounter), in ns.
double clock_read_ns() {
  constexpr long n = 1000000;
  const auto t = Clock::now();
  Clock::rep sum = 0;
  for (long i = 0; i < n; ++i) sum += Clock::now().time_since_epoch().count();
  sink.fetch_add(static_cast<int>(sum & 1), std::memory_order_relaxed);
  return seconds_since(t) * 1e9 / n;
}

// Ends the run if one measurement takes longer than 120 s (a wait the sides do not bound).
std::atomic<long> heartbeat{0};

void start_watchdog() {
  std::thread([] {
    for (long seen = -1, stuck = 0;; ::Sleep(1000)) {
      const long now = heartbeat.load();
      stuck = now == seen ? stuck + 1 : 0;
      seen = now;
      if (stuck > 120) {
        std::fprintf(stderr, "bench_mp_win32: a measurement took over 120 s\n");
        std::_Exit(4);
      }
    }
  }).detach();
}

// ---- rounds and table ----
struct Row {
  const char* metric;
  const char* unit;
  bool higher_is_better;  // a rate (items/s, MB/s), else a time
  const char* raw_name;
  std::function<double()> mp, raw;
};

struct Results {
  std::vector<double> mp, raw, ratio;
};

struct Summary {
  double median, min, max;
};

Summary summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front(), v.back()};
}

int precision_for(double x) { return x >= 100 ? 0 : x >= 10 ? 1 : x >= 1 ? 2 : x >= 0.01 ? 3 : 5; }

std::string cell(const std::vector<double>& v) {
  const Summary s = summarize(v);
  const int precision = precision_for(s.median);
  char buf[128];
  std::snprintf(buf, sizeof buf, "%.*f [%.*f–%.*f]", precision, s.median, precision, s.min,
                precision, s.max);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  mp::freeze_support(argc, argv);
  const auto args = mp::platform::program_arguments(argc, argv);
  const auto w = [&](std::size_t i) { return mp::platform::win32::widen(args.at(i)); };
  if (args.size() >= 2 && args[1] == "--raw-exit") return 0;
  if (args.size() >= 4 && args[1] == "--raw-event-pong") return raw_event_pong(w(2), w(3));
  if (args.size() >= 5 && args[1] == "--raw-ring-produce")
    return raw_ring_produce(w(2), std::stoul(args[3]), std::stol(args[4]));
  if (args.size() >= 3 && args[1] == "--raw-pipe-pong") return raw_pipe_pong(w(2));
  const int rounds = args.size() >= 2 ? std::max(1, std::atoi(args[1].c_str())) : 5;

  std::vector<Row> rows = {
      {"Process start+join (spawn)", "ms", false, "CreateProcessW + WaitForSingleObject",
       mp_start_ms, raw_start_ms},
      {"Event ping-pong, 2 processes", "µs", false, "2 named auto-reset events", mp_event_us,
       raw_event_us},
      {"Queue<int> small items, get()", "M items/s", true, "SPSC ring in a named mapping",
       [] { return mp_queue_ints_per_s(false); }, raw_ring_ints_per_s},
      {"Queue<int> small items, get(true, 30 s)", "M items/s", true, "SPSC ring in a named mapping",
       [] { return mp_queue_ints_per_s(true); }, raw_ring_ints_per_s},
      {"Queue<std::string> 1 MiB items", "MB/s", true, "SPSC ring in a named mapping",
       mp_queue_mib_MBps, raw_ring_mib_MBps},
      {"Pipe() duplex round trip, recv()", "µs", false, "byte-mode named pipe",
       [] { return mp_pipe_us(false); }, raw_pipe_us},
      {"Pipe() duplex round trip, poll(30 s) + recv()", "µs", false, "byte-mode named pipe",
       [] { return mp_pipe_us(true); }, raw_pipe_us},
      {"Lock acquire+release, uncontended", "ns", false, "SRWLOCK (in-process)", mp_lock_ns,
       srwlock_ns},
      {"Lock acquire+release, uncontended", "ns", false, "named mutex", mp_lock_ns, named_mutex_ns},
  };
  start_watchdog();
  std::vector<Results> res(rows.size());
  for (int r = 0; r < rounds; ++r) {
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const Row& row = rows[i];
      double m = 0, x = 0;
      if (r % 2 == 0) {
        x = row.raw();
        heartbeat.fetch_add(1);
        m = row.mp();
      } else {
        m = row.mp();
        heartbeat.fetch_add(1);
        x = row.raw();
      }
      heartbeat.fetch_add(1);
      res[i].mp.push_back(m);
      res[i].raw.push_back(x);
      res[i].ratio.push_back(row.higher_is_better ? x / m : m / x);
    }
    std::fprintf(stderr, "round %d/%d done\n", r + 1, rounds);
  }
  std::printf("| metric | unit | mp | raw Win32 | raw primitive | mp/raw (cost) |\n");
  std::printf("|---|---|---|---|---|---|\n");
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Row& row = rows[i];
    std::printf("| %s | %s | %s | %s | %s | %s |\n", row.metric, row.unit, cell(res[i].mp).c_str(),
                cell(res[i].raw).c_str(), row.raw_name, cell(res[i].ratio).c_str());
  }
  std::printf("\nsteady_clock::now() (QueryPerformanceCounter): %.1f ns per call.\n",
              clock_read_ns());
  std::printf(
      "\n%d rounds; each cell: median over rounds [min–max]; mp/raw is computed per round "
      "(mp's time over raw's, or raw's rate over mp's: 1 = at the limit, 2 = half as "
      "fast).\n",
      rounds);
  return 0;
}
