// mp/mpi.hpp — the executor on MPI ranks (mpi4py.futures: MPIPoolExecutor, the
// `python -m mpi4py.futures` mode). An optional component: link mp::mpi (built when CMake finds
// MPI); the core library never depends on MPI.
//
//   int main(int argc, char** argv) {
//     mp::mpi::init(argc, argv);            // worker ranks serve tasks here and exit
//     mp::mpi::MPIPoolExecutor ex;          // the other ranks of `mpiexec -n N`, or spawned ones
//     mp::futures::Future<int> f = ex.submit(square, 3);       // f.result() == 9
//     for (int x : ex.map(square, inputs, 64)) ...             // in order, chunksize 64
//   }
//
// The API is mp/futures.hpp's: submit, map (chunksize), shutdown(wait, cancel_futures), Future,
// wait, as_completed; the executor's destructor is shutdown(true). Tasks travel as in the local
// ProcessPoolExecutor: the function as (module, offset) with the module's build id checked on the
// worker (every rank must run the same binary: a mismatch fails the task with ProcessError), the
// arguments and results serialized (mp/reduction.hpp), a task's exception rethrown by result().
//
// Two ways to get workers, as mpi4py:
// - `mpiexec -n N ./program`: rank 0 returns from init() and runs main; ranks 1..N-1 serve tasks
//   (`python -m mpi4py.futures`). An MPIPoolExecutor then uses them (max_workers, if given, uses
//   the first max_workers of them); one executor at a time, any number one after the other.
//   Workers end when rank 0's main returns (or calls std::exit).
// - `./program` alone (a world of one rank): an MPIPoolExecutor spawns max_workers ranks
//   (default 1) with MPI_Comm_spawn, running this same executable (its init() makes them serve).
//   They are kept for the next executor that wants as many (a spawn costs ~0.4 s) and end when
//   the program exits. As root, Open MPI needs OMPI_ALLOW_RUN_AS_ROOT=1 and
//   OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; more workers than cores needs
//   OMPI_MCA_rmaps_base_oversubscribe=1 (mpiexec: --oversubscribe).
//
// Failure model (what this does not promise)
// - A worker rank that dies (SIGKILL, abort, exit, OOM, a lost host) ends the whole MPI job:
//   Open MPI 4.1 as packaged by Debian aborts every rank ~1 s after one dies, rank 0 included, and
//   mpiexec exits non-zero. No future "fails" — the client process ends; nothing hangs. The local
//   ProcessPoolExecutor's BrokenProcessPool is given only where the process lives on: a worker
//   that reports a broken state (e.g. a task the worker cannot decode) fails that task, and an
//   executor whose MPI layer reports an error breaks with BrokenProcessPool. To survive rank loss,
//   run under a fault-tolerant MPI (ULFM, Open MPI 5 with --with-ft=ulfm, where the communicator
//   error is reported instead of aborting) or checkpoint results and rerun the job; keep tasks
//   idempotent.
// - A task that never returns keeps its worker; there is no per-task time limit and no
//   terminate_workers (an MPI rank cannot be killed alone).
// - Results come back in submission order from map(); submit()s run in any order across ranks.
//
// Threads: the executor's calls are thread-safe; MPI is initialized with MPI_THREAD_SERIALIZED or
// better and every MPI call of mp is made under one lock. A program that calls MPI itself must
// not do so while an executor is open. A thread in Future::result() polls MPI for results itself
// (briefly, then it sleeps and the executor's thread polls): a result that comes within
// microseconds reaches it without a thread hop. Results no thread waits on (as_completed, wait,
// done callbacks) are seen within ~1 ms of their arrival after the executor was idle (as
// mpi4py.futures' manager thread, which backs off to 1 ms too); callbacks may run in any thread
// that waits on a result of the executor.
#pragma once

#include <optional>
#include <string>

#include "mp/detail/call_job.hpp"
#include "mp/futures.hpp"

namespace mp::mpi {

// MPI_Init_thread if MPI is not initialized yet. On rank 0 of the world (or a lone process):
// returns. On a worker rank (mpiexec -n N, or a rank spawned by an MPIPoolExecutor): serves tasks
// until the executor's side ends, finalizes MPI and ends the process with std::exit(0) — main's
// code after init() runs on rank 0 only. Call it first in main, as mp::freeze_support.
// MPI is finalized when rank 0's process exits.
MP_API void init(int& argc, char**& argv);

// This process' rank in MPI_COMM_WORLD and the world's size (after init()).
MP_API int world_rank();
MP_API int world_size();
// MPI_Get_processor_name of this rank.
MP_API std::string processor_name();

struct MPIPoolExecutorOptions {
  // mpiexec mode: at most this many of the world's worker ranks (default all; more than there
  // are throws std::invalid_argument). Spawn mode: the ranks spawned (default 1).
  std::optional<int> max_workers = std::nullopt;
};

namespace detail {
MP_API std::shared_ptr<mp::detail::pool::Engine> make_engine(const MPIPoolExecutorOptions& options);
}  // namespace detail

// mpi4py.futures.MPIPoolExecutor. Throws std::invalid_argument "max_workers must be greater than
// 0"; std::logic_error if init() was not called; std::runtime_error while another executor holds
// the world's workers, or when MPI cannot spawn the workers.
class MPIPoolExecutor : public mp::futures::detail::BasicExecutor<false> {
 public:
  MPIPoolExecutor() : MPIPoolExecutor(MPIPoolExecutorOptions{}) {}
  explicit MPIPoolExecutor(int max_workers)
      : MPIPoolExecutor(MPIPoolExecutorOptions{max_workers}) {}
  explicit MPIPoolExecutor(const MPIPoolExecutorOptions& options) {
    engine_ = detail::make_engine(options);
  }
  // Executor.submit(fn, *args): as mp/futures.hpp's (the call and its future are one
  // allocation: see mp/detail/call_job.hpp).
  template <class F, class... A>
  auto submit(F&& f, A&&... args) {
    namespace pool = mp::detail::pool;
    check_open();
    auto fn = pool::task_function<false>(std::forward<F>(f));
    using Fn = decltype(fn);
    using Args = typename pool::ArgsOf<false, Fn, A...>::type;
    static_assert(std::tuple_size_v<Args> == sizeof...(A),
                  "mp::mpi::MPIPoolExecutor::submit: wrong number of arguments for the task");
    pool::check_args<Args>();
    using R = pool::ResultOf<Fn, Args>;
    auto job = std::make_shared<pool::CallJob<Fn, Args, R>>(fn, Args(std::forward<A>(args)...));
    job->state.engine = engine_;
    std::shared_ptr<pool::State<R>> state(job, &job->state);
    engine_->submit(std::move(job));
    return mp::futures::Future<R>(std::move(state));
  }
  // Executor.map(fn, iterable, chunksize): as mp/futures.hpp's, with more chunks in flight (a
  // rank is a network round trip away): at most kMapWindow chunks per worker handed out or
  // buffered unread.
  template <class F, std::ranges::input_range Range>
  auto map(F&& f, Range&& inputs, std::optional<int> chunksize = std::nullopt) {
    check_open();
    return this->template stream<false>(true, std::forward<F>(f), std::forward<Range>(inputs),
                                        chunksize,
                                        kMapWindow * static_cast<std::size_t>(num_workers()) + 2);
  }
  static constexpr std::size_t kMapWindow = 64;
  // The number of worker ranks.
  int num_workers() const { return engine_->processes(); }
};

}  // namespace mp::mpi
