// The forkserver start method, caller's side (CPython: multiprocessing/popen_forkserver.py).
// The child is the server's (lib/forkserver.cpp): the caller holds a pidfd on it (sentinel,
// signals) and a pipe on which the server writes its exit status once it has reaped it.
// start() returns once the child reports that it is bootstrapped, or throws its error.
#include <cerrno>
#include <cstring>
#include <system_error>
#include <mutex>

#include "forkserver_impl.hpp"
#include "mp/errors.hpp"
#include "process_impl.hpp"
#include "reduction_impl.hpp"
#include "spawn_data.hpp"
#include "support/unique_handle.hpp"
#include "platform/handle.hpp"
#include "platform/io.hpp"
#include "platform/process.hpp"
#include "platform/shared_memory.hpp"
#include "platform/wait.hpp"

namespace mp::detail {

// The preparation data for the child, in a memfd (popen_spawn_posix.cpp); `handles` gets the
// arguments' handles, `lease` their shared-heap blocks.
platform::Handle write_preparation_data(ProcessState& state, std::vector<platform::Handle>& handles,
                                        heap::detail::Lease& lease);

namespace {

// A child of the forkserver. handle_ is a pidfd (readable once the child has ended, even if the
// server died); the exit status comes from the server.
class ForkserverPopen final : public Popen {
 public:
  ForkserverPopen(int pid, platform::Handle pidfd, platform::Handle exit_status)
      : Popen(pid, pidfd), exit_status_(exit_status) {}
  ~ForkserverPopen() override { platform::close_handle(exit_status_); }

  std::optional<int> poll() override {
    if (returncode_ || handle_ == platform::kInvalidHandle) return returncode_;
    const platform::Nanos zero{0};
    if (!platform::wait_readable(handle_, &zero)) return std::nullopt;
    return collect();
  }

  std::optional<int> wait(const platform::Nanos* timeout) override {
    if (returncode_ || handle_ == platform::kInvalidHandle) return returncode_;
    if (!platform::wait_readable(handle_, timeout)) return std::nullopt;
    return collect();
  }

 private:
  // The child has ended: the server writes its status as soon as it reaps it; if the server
  // has died, the status is unknown: 255, as CPython.
  std::optional<int> collect() {
    std::int32_t code = 255;
    std::size_t got = 0;
    try {
      while (got < sizeof code) {
        const std::size_t n = platform::read_some(
            exit_status_, reinterpret_cast<char*>(&code) + got, sizeof code - got);
        if (n == 0) break;
        got += n;
      }
    } catch (const std::exception&) {
    }
    returncode_ = got == sizeof code ? code : 255;
    note_ended();
    return returncode_;
  }

  platform::Handle exit_status_;
};

}  // namespace

std::unique_ptr<Popen> launch_forkserver(ProcessState& state) {
  std::vector<platform::Handle> handles;
  heap::detail::Lease lease;
  UniqueHandle data(write_preparation_data(state, handles, lease));
  auto [status_r, status_w] = platform::make_pipe();
  UniqueHandle status_read(status_r), status_write(status_w);
  auto [exit_r, exit_w] = platform::make_pipe();
  UniqueHandle exit_read(exit_r), exit_write(exit_w);
  UniqueHandle self(platform::open_process(platform::current_pid()));
  std::vector<platform::Handle> fds{data.get(), status_write.get(), exit_write.get(), self.get()};
  fds.insert(fds.end(), handles.begin(), handles.end());

  int pid = 0;
  platform::Handle pidfd = platform::kInvalidHandle;
  // Once the request is out, the server and the child hold what they need: our copies of the
  // write ends go (so a server or child that dies makes the status pipe end), and we wait for the
  // child's bootstrap report before reading the server's reply, which precedes it.
  bool handed_over = false;
  auto sent = [&] {
    handed_over = true;
    status_write.reset();
    exit_write.reset();
    platform::wait_readable(status_read.get(), nullptr);
  };
  {
    std::lock_guard lk(forkserver_mutex());
    for (int attempt = 0;; ++attempt) {
      try {
        std::tie(pid, pidfd) = forkserver_request(forkserver_connection(attempt > 0), fds, sent);
        break;
      } catch (const EOFError&) {
        if (attempt > 0 || handed_over) throw;  // the server went away: start a new one, once
      } catch (const std::system_error& e) {
        if (attempt > 0 || handed_over ||
            (e.code().value() != EPIPE && e.code().value() != ECONNRESET &&
             e.code().value() != ECONNREFUSED && e.code().value() != ENOENT))
          throw;
      }
    }
  }
  auto popen = std::make_unique<ForkserverPopen>(pid, pidfd, exit_read.get());
  (void)exit_read.release();
  popen->lease = std::move(lease);
  await_bootstrap(status_read.get(), *popen);
  return popen;
}

}  // namespace mp::detail
