// Internal: the server and client sides of connection set-up for Listener/Client and the managers.
//
// Acceptor accepts connections on a listening socket and runs their server-side authkey
// handshakes side by side from the calling thread (lib/support/auth.hpp's state machine, no thread per
// peer). Each handshake has a deadline for the whole exchange, counted from its accept; a slow,
// trickling or silent peer never delays another (CPython authenticates one peer at a time inside
// accept(), with no deadline).
#pragma once

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "support/auth.hpp"
#include "platform/handle.hpp"
#include "platform/io.hpp"

namespace mp::detail {

class Acceptor {
 public:
  struct Options {
    std::optional<std::string> authkey;  // none: connections are ready at once
    platform::Nanos handshake_timeout = std::chrono::seconds(10);
    // Refuse Unix-socket peers of another user (platform::peer_is_same_user) before any byte.
    bool same_user_only = false;
    // When accept fails: out of descriptors, drop the oldest handshake in progress (older than a
    // tenth of the deadline) and retry; else wait and retry, 1 ms doubling to 100 ms, while the
    // handshakes in progress go on (a server). Otherwise next() throws the OSError (as CPython).
    bool back_off_on_errors = false;
  };
  // What next() yields: an authenticated connection (fd, owned by the caller), or the reason one
  // failed (fd invalid; its connection is closed).
  struct Outcome {
    platform::Handle fd = platform::kInvalidHandle;
    std::string error;
  };

  // Makes `listener` non-blocking; does not own it.
  Acceptor(platform::Handle listener, Options options);
  Acceptor(const Acceptor&) = delete;
  Acceptor& operator=(const Acceptor&) = delete;
  ~Acceptor();  // closes the connections not yet handed out

  // Waits for the next outcome, or until one of `stop` is readable (then nullopt). Outcomes come
  // in the order the handshakes finished.
  std::optional<Outcome> next(const std::vector<platform::Handle>& stop);
  // For handshakes accepted from now on.
  void set_handshake_timeout(platform::Nanos timeout) noexcept {
    options_.handshake_timeout = timeout;
  }

 private:
  struct Pending {
    platform::Handle fd;
    platform::Clock::time_point deadline;
    std::unique_ptr<auth::Handshake> handshake;
  };
  void accept_some(platform::Clock::time_point now);
  // Sends output, reads what arrived; true once the handshake is over (outcome queued).
  bool advance(Pending& p);
  void finish(Pending& p, std::string error);
  // Out of descriptors: closes the oldest handshake in progress if it is older than a tenth of
  // the deadline; false when there is none.
  bool evict_oldest(platform::Clock::time_point now);

  platform::Handle listener_;
  Options options_;
  std::vector<Pending> pending_;
  std::deque<Outcome> ready_;
  platform::Clock::time_point retry_at_{};  // after an accept error: no accept before then
  platform::Nanos backoff_{0};
};

// Runs one side of the handshake on a connected socket with a deadline for the whole exchange.
// Throws AuthenticationError (wrong key, deadline passed, peer gone or I/O error).
void authenticate(platform::Handle fd, const std::string& authkey, platform::Nanos timeout,
                  bool server);
// The client side (after connect).
inline void authenticate_client(platform::Handle fd, const std::string& authkey,
                                platform::Nanos timeout) {
  authenticate(fd, authkey, timeout, false);
}

}  // namespace mp::detail
