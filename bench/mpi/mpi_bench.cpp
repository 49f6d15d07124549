// bench/mpi/mpi_bench.cpp — MPIPoolExecutor's figures and the raw MPI ping-pong, for
// bench/mpi/run.py (which runs mpi4py.futures beside them, bench/mpi/mpi4py_bench.py).
//   mpiexec -n 3 mpi_bench executor <scale>   rank 0 client, 2 worker ranks
//   mpiexec -n 2 mpi_bench roundtrip <scale>  the round trip alone with 1 worker rank (roundtrip_1w_us),
//                                             after the raw ping-pong in the same job
//                                             (pingpong_same_job_us)
//   mpiexec -n 2 mpi_bench pingpong <scale>   MPI_Send/MPI_Recv of 8 bytes between ranks 0 and 1,
//                                             then mp's MPI calls alone (wire_us, see below)
// Prints `metric value` lines: roundtrip_us, map_cs1_per_s, map_cs1000_per_s, pingpong_us,
// wire_us.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <numeric>
#include <vector>

#include <mp/mpi.hpp>

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

int identity(int x) { return x; }

// Median of `reps` timings of f() (seconds).
template <class F>
double median_of(int reps, F f) {
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) t.push_back(f());
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// submit(identity, i).result(), µs each.
double roundtrip_us(mp::mpi::MPIPoolExecutor& ex, double scale) {
  const int rt = std::max(100, static_cast<int>(5000 * scale));
  for (int i = 0; i < 200; ++i) ex.submit(identity, i).result();
  const double rt_s = median_of(5, [&] {
    const auto t = Clock::now();
    for (int i = 0; i < rt; ++i)
      if (ex.submit(identity, i).result() != i) std::abort();
    return seconds_since(t);
  });
  return rt_s / rt * 1e6;
}

// MPI_Send/MPI_Recv of 8 bytes between ranks 0 and 1, µs per round trip (rank 0's figure).
double raw_pingpong_us(int rank, int n) {
  long long msg = 0;
  auto round = [&](int count) {
    for (int i = 0; i < count; ++i) {
      if (rank == 0) {
        MPI_Send(&msg, 1, MPI_LONG_LONG, 1, 0, MPI_COMM_WORLD);
        MPI_Recv(&msg, 1, MPI_LONG_LONG, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      } else if (rank == 1) {
        MPI_Recv(&msg, 1, MPI_LONG_LONG, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        ++msg;
        MPI_Send(&msg, 1, MPI_LONG_LONG, 0, 0, MPI_COMM_WORLD);
      }
    }
  };
  round(500);
  const double s = median_of(5, [&] {
    MPI_Barrier(MPI_COMM_WORLD);
    const auto t = Clock::now();
    round(n);
    return seconds_since(t);
  });
  return s / n * 1e6;
}

int executor(int argc, char** argv, double scale, bool only_roundtrip) {
  if (only_roundtrip) {
    // The raw ping-pong first, in the same job (same ranks, same CPUs), then mp's round trip:
    // the host's state changes between jobs (the raw figure reads 0.26 or 0.7 µs by job).
    int provided = 0, rank = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    const double raw = raw_pingpong_us(rank, std::max(1000, static_cast<int>(20000 * scale)));
    if (rank == 0) std::printf("pingpong_same_job_us %.3f\n", raw);
  }
  mp::mpi::init(argc, argv);
  mp::mpi::MPIPoolExecutor ex;
  if (only_roundtrip) {
    std::printf("roundtrip_1w_us %.3f\n", roundtrip_us(ex, scale));
    return 0;
  }
  std::printf("roundtrip_us %.3f\n", roundtrip_us(ex, scale));

  auto map_rate = [&](int n, int chunksize) {
    std::vector<int> in(static_cast<std::size_t>(n));
    std::iota(in.begin(), in.end(), 0);
    const double s = median_of(5, [&] {
      const auto t = Clock::now();
      long long sum = 0;
      for (int x : ex.map(identity, in, chunksize)) sum += x;
      if (sum != static_cast<long long>(n) * (n - 1) / 2) std::abort();
      return seconds_since(t);
    });
    return n / s;
  };
  std::printf("map_cs1_per_s %.1f\n", map_rate(std::max(1000, static_cast<int>(50000 * scale)), 1));
  std::printf("map_cs1000_per_s %.1f\n",
              map_rate(std::max(10000, static_cast<int>(2000000 * scale)), 1000));
  return 0;
}

int pingpong(int argc, char** argv, double scale) {
  MPI_Init(&argc, &argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const int n = std::max(1000, static_cast<int>(20000 * scale));
  const double raw = raw_pingpong_us(rank, n);
  if (rank == 0) std::printf("pingpong_us %.3f\n", raw);

  // mp's MPI calls alone: its message sizes (a task of identity(int): 20 bytes; its result: 25)
  // and its call pattern (lib/mpi/executor.cpp; each call under a mutex, as mp's g_mpi): each
  // side keeps a receive of 64 KiB posted for the next message and polls it with MPI_Test,
  // posting it again once the message is handled; the client sends with MPI_Isend + MPI_Test,
  // the worker answers with MPI_Send. No serialization, futures or engine bookkeeping.
  std::mutex mu;
  char task[20] = {}, result[25] = {};
  std::vector<char> in(std::size_t{64} << 10);
  MPI_Request posted = MPI_REQUEST_NULL;
  auto post = [&](int source) {
    std::lock_guard g(mu);
    MPI_Irecv(in.data(), static_cast<int>(in.size()), MPI_BYTE, source, MPI_ANY_TAG, MPI_COMM_WORLD,
              &posted);
  };
  auto poll_recv = [&] {
    for (int done = 0; !done;) {
      std::lock_guard g(mu);
      MPI_Test(&posted, &done, MPI_STATUS_IGNORE);
    }
  };
  if (rank < 2) post(1 - rank);
  auto wire_round = [&](int count) {
    for (int i = 0; i < count; ++i) {
      if (rank == 0) {
        {
          std::lock_guard g(mu);
          MPI_Request r;
          int done = 0;
          MPI_Isend(task, sizeof task, MPI_BYTE, 1, 2, MPI_COMM_WORLD, &r);
          MPI_Test(&r, &done, MPI_STATUS_IGNORE);
          if (!done) MPI_Wait(&r, MPI_STATUS_IGNORE);
        }
        poll_recv();
        post(1);
      } else if (rank == 1) {
        poll_recv();
        {
          std::lock_guard g(mu);
          MPI_Send(result, sizeof result, MPI_BYTE, 0, 5, MPI_COMM_WORLD);
        }
        post(0);
      }
    }
  };
  wire_round(500);
  const double w = median_of(5, [&] {
    MPI_Barrier(MPI_COMM_WORLD);
    const auto t = Clock::now();
    wire_round(n);
    return seconds_since(t);
  });
  if (rank == 0) std::printf("wire_us %.3f\n", w / n * 1e6);
  if (posted != MPI_REQUEST_NULL) {
    MPI_Cancel(&posted);
    MPI_Wait(&posted, MPI_STATUS_IGNORE);
  }
  MPI_Finalize();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const bool pp = argc > 1 && std::strcmp(argv[1], "pingpong") == 0;
  const bool rt = argc > 1 && std::strcmp(argv[1], "roundtrip") == 0;
  const double scale = argc > 2 ? std::atof(argv[2]) : 1.0;
  return pp ? pingpong(argc, argv, scale) : executor(argc, argv, scale, rt);
}
