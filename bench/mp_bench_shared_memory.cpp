// bench/mp_bench_shared_memory.cpp — mp metrics for mp/shared_memory.hpp: attach by name + map +
// close, create + unlink (tracking included), and 1 MiB written by one process and read by
// another through a segment (a pipe byte hands it over, on every side alike).
// Compiled in once that header is in the tree.
#if __has_include("mp/shared_memory.hpp")
#  include <unistd.h>

#  include <cstring>
#  include <vector>

#  include "mp/shared_memory.hpp"
#  include "mp_bench.hpp"

namespace {

using mp::shared_memory::SharedMemory;
constexpr std::size_t kMiB = 1 << 20;

BENCH_METRIC(shm_attach_close_us, "us") {
  SharedMemory shm(std::nullopt, true, kMiB);
  const long n = p.n(100000, 20);
  const auto t0 = bench::now_ns();
  for (long i = 0; i < n; ++i) {
    SharedMemory other(shm.name());
    bench::keep(other.buf().data());
    other.close();
  }
  const double r = static_cast<double>(bench::now_ns() - t0) / 1e3 / static_cast<double>(n);
  shm.unlink();
  return r;
}

BENCH_METRIC(shm_create_unlink_us, "us") {
  const long n = p.n(50000, 20);
  const auto t0 = bench::now_ns();
  for (long i = 0; i < n; ++i) {
    SharedMemory shm(std::nullopt, true, 4096);
    bench::keep(shm.buf().data());
    shm.close();
    shm.unlink();
  }
  return static_cast<double>(bench::now_ns() - t0) / 1e3 / static_cast<double>(n);
}

void byte_io(int fd, bool write) {
  char c = 'x';
  if ((write ? ::write(fd, &c, 1) : ::read(fd, &c, 1)) != 1) bench::die("pipe");
}

BENCH_METRIC(shm_1mb_MBps, "MB/s") {
  const long n = p.n(5000, 4);
  SharedMemory shm(std::nullopt, true, kMiB);
  int to_child[2], to_parent[2];
  if (::pipe(to_child) != 0 || ::pipe(to_parent) != 0) bench::die("pipe");
  const std::string name = shm.name();
  mp::Process reader(mp::get_context("fork"), [&] {
    SharedMemory s(name);  // the reader attaches by name, as an independent user would
    std::vector<std::byte> out(kMiB);
    for (long i = 0; i < n; ++i) {
      byte_io(to_child[0], false);
      std::memcpy(out.data(), s.buf().data(), kMiB);
      bench::keep(out.data());
      byte_io(to_parent[1], true);
    }
  });
  reader.start();
  std::vector<std::byte> src(kMiB, std::byte{1});
  const auto t0 = bench::now_ns();
  for (long i = 0; i < n; ++i) {
    src[0] = static_cast<std::byte>(i);
    std::memcpy(shm.buf().data(), src.data(), kMiB);
    byte_io(to_child[1], true);
    byte_io(to_parent[0], false);
  }
  const auto t1 = bench::now_ns();
  mpbench::check_exit(reader);
  for (int fd : {to_child[0], to_child[1], to_parent[0], to_parent[1]}) ::close(fd);
  shm.unlink();
  return static_cast<double>(n) * static_cast<double>(kMiB) / 1e6 /
         (static_cast<double>(t1 - t0) * 1e-9);
}

}  // namespace
#endif
