// The forkserver start method, caller's side (CPython: multiprocessing/popen_forkserver.py).
// The child is the server's (lib/forkserver.cpp): the caller holds a pidfd on it (sentinel,
// signals, join) and one end of its status socket, on which the child reports its bootstrap and
// then its exit status as it leaves, and the server writes the exit status once it has reaped it.
// start() returns once the child reports that it is bootstrapped, or throws its error.
#include <cerrno>
#include <cstring>
#include <mutex>
#include <system_error>

#include "forkserver_impl.hpp"
#include "mp/errors.hpp"
#include "platform/handle.hpp"
#include "platform/io.hpp"
#include "platform/process.hpp"
#include "platform/wait.hpp"
#include "process_impl.hpp"
#include "reduction_impl.hpp"
#include "spawn_data.hpp"
#include "support/deadline.hpp"
#include "support/unique_handle.hpp"

namespace mp::detail {

// The preparation data for a child (popen_spawn_posix.cpp); `handles` gets the arguments'
// handles, `lease` their shared-heap blocks.
PreparationData prepare_child(ProcessState& state, std::vector<platform::Handle>& handles,
                              heap::detail::Lease& lease);

namespace {

// A child of the forkserver. handle_ is a pidfd (readable once the child has ended, even if the
// server died). The exit status comes on the status socket: the child writes it just before it
// leaves, and the server writes it again once it has reaped the child (the only record of a child
// killed by a signal). join() waits on the pidfd, then reads the record already there: it wakes
// once, when the child ends, not after the server's reap.
class ForkserverPopen final : public Popen {
 public:
  ForkserverPopen(int pid, platform::Handle pidfd, platform::Handle status)
      : Popen(pid, pidfd), status_(status) {}
  ~ForkserverPopen() override { platform::close_handle(status_); }

  // Reads the child's bootstrap report: returns once it is bootstrapped, else waits for its end
  // and throws ProcessError with its message.
  void await_bootstrap() { detail::await_bootstrap(status_, *this, &got_[0]); }

  // The pidfd; once the child has ended without its status in, the status socket (the server's
  // record is on its way).
  platform::Handle join_handle() const noexcept override {
    return ended_ && !server_gone_ ? status_ : handle_;
  }

  std::optional<int> poll() override {
    if (returncode_ || handle_ == platform::kInvalidHandle) return returncode_;
    if (!ended_) {
      const platform::Nanos zero{0};
      if (!platform::wait_readable(handle_, &zero)) return std::nullopt;
      ended_ = true;
    }
    return status_after_end(false);
  }

  std::optional<int> wait(const platform::Nanos* timeout) override {
    if (returncode_ || handle_ == platform::kInvalidHandle) return returncode_;
    const Deadline deadline(timeout);
    platform::Nanos left;
    if (!ended_) {
      if (!platform::wait_readable(handle_, deadline.remaining(left))) return std::nullopt;
      ended_ = true;
    }
    if (status_after_end(false)) return returncode_;
    if (!platform::wait_readable(status_, deadline.remaining(left))) return std::nullopt;
    return status_after_end(true);
  }

 private:
  // Reads the server's record as far as it has come (all of it when `block`); true once it is
  // complete. End of file first means the server is gone (server_gone_).
  bool take_record(bool block) {
    if (got_count_ == 0 && got_[0] == kExitTag) got_count_ = 1;  // the tag await_bootstrap read
    while (!server_gone_ && got_count_ < kExitRecordBytes) {
      std::size_t n = 0;
      try {
        if (block) {
          n = platform::read_some(status_, got_ + got_count_, kExitRecordBytes - got_count_);
        } else if (platform::try_read(status_, got_ + got_count_, kExitRecordBytes - got_count_,
                                      n) != platform::TryRead::ok) {
          return false;
        }
      } catch (const std::exception&) {
        n = 0;
      }
      if (n == 0) server_gone_ = true;
      got_count_ += n;
    }
    if (got_count_ != kExitRecordBytes || got_[0] != kExitTag) return false;
    std::int32_t code;
    std::memcpy(&code, got_ + 1, sizeof code);
    returncode_ = code;
    note_ended();
    return true;
  }

  // The child has ended: its status from the first record (waiting for the server's when
  // `block`), or 255 once the server is known to be gone without one.
  std::optional<int> status_after_end(bool block) {
    if (take_record(block)) return returncode_;
    if (server_gone_) return ended_unknown();
    return std::nullopt;
  }

  // The child has ended and the server is gone: the status is unknown, 255 as CPython.
  std::optional<int> ended_unknown() {
    server_gone_ = true;
    returncode_ = 255;
    note_ended();
    return returncode_;
  }

  platform::Handle status_;
  // The server's record as read so far; await_bootstrap() puts its tag in got_[0] when the
  // record came instead of a bootstrap report.
  char got_[kExitRecordBytes] = {};
  std::size_t got_count_ = 0;
  bool server_gone_ = false;
  bool ended_ = false;  // the pidfd was readable
};

}  // namespace

std::unique_ptr<Popen> launch_forkserver(ProcessState& state) {
  std::vector<platform::Handle> handles;
  heap::detail::Lease lease;
  const std::string data = reduction::dumps(prepare_child(state, handles, lease));
  auto [status_r, status_w] = platform::socket_pair();
  UniqueHandle status_read(status_r), status_write(status_w);
  std::vector<platform::Handle> fds{status_write.get()};
  fds.insert(fds.end(), handles.begin(), handles.end());
  // The caller's descriptors without close-on-exec, listed once (and out of the retry below, whose
  // handlers only see failures of the exchange itself).
  const std::vector<platform::Handle> inherited = platform::inheritable_descriptors();

  int pid = 0;
  platform::Handle pidfd = platform::kInvalidHandle;
  // Once the request is out, the server and the child hold what they need: our copy of their end
  // goes (so a server and child that die make the status socket end), and we wait for the
  // child's bootstrap report before reading the server's reply, which precedes it.
  bool handed_over = false;
  auto sent = [&] {
    handed_over = true;
    status_write.reset();
    platform::wait_readable(status_read.get(), nullptr);
  };
  {
    std::lock_guard lk(forkserver_mutex());
    for (int attempt = 0;; ++attempt) {
      try {
        std::tie(pid, pidfd) = forkserver_request(attempt > 0, data, fds, inherited, sent);
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
  auto popen = std::make_unique<ForkserverPopen>(pid, pidfd, status_read.release());
  popen->lease = std::move(lease);
  popen->await_bootstrap();
  return popen;
}

}  // namespace mp::detail
