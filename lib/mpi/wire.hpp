// The messages between an MPIPoolExecutor and its worker ranks (lib/mpi/executor.cpp). MPI
// carries each message whole with its tag; these are the bytes inside. No MPI here, so the
// decoders can be fuzzed without MPI (fuzz/fuzz_mpi_wire.cpp).
//
// client -> worker
//   kDefine  [u32 fn][u32 n][runner code: n bytes][function code: the rest]
//   kTask    [u64 id][u32 fn][arguments: mp/pool_jobs.hpp's ItemWriter bytes]
//   kRelease the executor ended: forget its functions (mpiexec mode: wait for the next one)
//   kExit    end the process (mpiexec mode: rank 0's main returned)
//   kLarge   [i32 tag][u64 size]: a message of more than kPostedBytes follows, tag kLargeBody
// worker -> client
//   kResult  [u64 id][u8 ok][u64 ns][ok: results (ItemWriter bytes) | !ok: an encoded exception]
//            (kResultLarge: the same, more than kPostedBytes)
//   kHello   [i32 pid][processor name]  (a spawned worker, once: lets the client watch it)
// Each side keeps a receive of kPostedBytes posted (MPI_Irecv) for the next message, so a message
// lands in place and a poll is an MPI_Test. A larger message would not fit it: the worker sends
// such a result with tag kResultLarge, which the client probes for; the client announces such a
// message with kLarge (its tag and size), which the worker receives through its posted receive
// in order, and then receives the message itself (tag kLargeBody).
// A code is lib/pool_engine.cpp's code location (module, build id, offset), serialized.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace mp::mpi::wire {

enum Tag : int {
  kDefine = 1,
  kTask = 2,
  kRelease = 3,
  kExit = 4,
  kResult = 5,
  kHello = 6,
  kLarge = 7,
  kLargeBody = 8,
  kResultLarge = 9
};
inline constexpr std::size_t kPostedBytes = std::size_t{64} << 10;

struct Define {
  std::uint32_t fn = 0;
  std::string_view runner, function;
};
struct Task {
  std::uint64_t id = 0;
  std::uint32_t fn = 0;
  std::string_view args;
};
struct Hello {
  std::int32_t pid = 0;
  std::string_view host;
};
struct Large {
  std::int32_t tag = 0;
  std::uint64_t size = 0;
};
struct Result {
  std::uint64_t id = 0;
  bool ok = false;
  std::uint64_t ns = 0;
  std::string_view body;
};

std::string encode_define(std::uint32_t fn, std::string_view runner, std::string_view function);
// Appends the task header to `out` (the arguments follow), or writes it at `p`.
inline constexpr std::size_t kTaskHeader = 8 + 4;
void append_task_header(std::string& out, std::uint64_t id, std::uint32_t fn);
void put_task_header(char* p, std::uint64_t id, std::uint32_t fn);
inline constexpr std::size_t kResultHeader = 8 + 1 + 8;
// Writes the result header over the first kResultHeader bytes of `out`.
void put_result_header(std::string& out, std::uint64_t id, bool ok, std::uint64_t ns);

// Decoders of bytes from another rank: throw mp::UnpicklingError("corrupt data: ...") on bytes
// that are not such a message (never read out of bounds). Views point into `bytes`.
Define decode_define(std::string_view bytes);
Task decode_task(std::string_view bytes);
Result decode_result(std::string_view bytes);
Hello decode_hello(std::string_view bytes);
// Throws also for a tag that is not one of the client's, or a size that would fit kPostedBytes
// or exceed INT_MAX.
Large decode_large(std::string_view bytes);
inline constexpr std::size_t kLargeHeader = 4 + 8;
void put_large(char* p, std::int32_t tag, std::uint64_t size);
std::string encode_hello(std::int32_t pid, std::string_view host);

}  // namespace mp::mpi::wire
