// Connection set-up with whole-exchange deadlines (lib/support/acceptor.hpp).
#include "support/acceptor.hpp"

#include <algorithm>
#include <cerrno>

#include "support/deadline.hpp"
#include "mp/errors.hpp"
#include "platform/handle.hpp"
#include "platform/io.hpp"

namespace mp::detail {

using platform::Clock;

constexpr platform::Nanos kFirstBackoff = std::chrono::milliseconds(1);
constexpr platform::Nanos kMaxBackoff = std::chrono::milliseconds(100);
constexpr int kAcceptsPerRound = 16;  // then the handshakes in progress get their turn

Acceptor::Acceptor(platform::Handle listener, Options options)
    : listener_(listener), options_(std::move(options)) {
  platform::set_nonblocking(listener_);
}

Acceptor::~Acceptor() {
  for (Pending& p : pending_) platform::close_handle(p.fd);
  for (Outcome& o : ready_) platform::close_handle(o.fd);
}

void Acceptor::finish(Pending& p, std::string error) {
  if (!error.empty()) {
    platform::close_handle(p.fd);
    p.fd = platform::kInvalidHandle;
  }
  ready_.push_back(Outcome{p.fd, std::move(error)});
  p.fd = platform::kInvalidHandle;
}

bool Acceptor::advance(Pending& p) {
  auth::Handshake& h = *p.handshake;
  try {
    for (;;) {
      std::string& out = h.output();
      if (!out.empty()) {
        // Handshake messages are a few dozen bytes into a fresh socket: they always fit. A peer
        // whose buffer is full has not read what it asked for: a protocol failure.
        if (platform::try_write(p.fd, out.data(), out.size()) != out.size()) {
          finish(p, "the peer does not read the authentication handshake");
          return true;
        }
        out.clear();
      }
      if (!h.failed().empty()) {
        finish(p, h.failed());
        return true;
      }
      if (h.succeeded()) {
        finish(p, {});
        return true;
      }
      char buf[4 + auth::kMaxFrame];
      std::size_t got = 0;
      if (platform::try_read(p.fd, buf, h.wanted(), got) == platform::TryRead::would_block)
        return false;
      if (got == 0) {
        finish(p, "the peer closed the connection during the authentication handshake");
        return true;
      }
      h.feed(buf, got);
    }
  } catch (const std::exception& e) {
    finish(p, std::string("authentication handshake failed: ") + e.what());
    return true;
  }
}

bool Acceptor::evict_oldest(Clock::time_point now) {
  Pending* oldest = nullptr;
  for (Pending& p : pending_)
    if (p.fd != platform::kInvalidHandle && (!oldest || p.deadline < oldest->deadline)) oldest = &p;
  // A peer accepted moments ago may be a legitimate client in the middle of its handshake.
  if (!oldest ||
      oldest->deadline - options_.handshake_timeout + options_.handshake_timeout / 10 > now)
    return false;
  finish(*oldest, "dropped to accept another connection: out of descriptors");
  return true;
}

void Acceptor::accept_some(Clock::time_point now) {
  for (int i = 0; i < kAcceptsPerRound; ++i) {
    // No exception on this path: out of descriptors, even a sanitizer's checks may fail.
    int err = 0;
    const std::optional<platform::Handle> fd = platform::try_accept(listener_, err);
    if (err) {
      if (!options_.back_off_on_errors) platform::throw_error(err, "accept failed");
      // Out of descriptors: make room by dropping the oldest unauthenticated peer (a slow one, or
      // peers holding every descriptor would lock legitimate clients out until their deadlines).
      if ((err == EMFILE || err == ENFILE) && evict_oldest(now)) continue;
      // Otherwise (or out of memory) the pending client stays in the backlog. Retry later, never
      // in a busy loop; descriptors free up as connections close.
      backoff_ = std::clamp(backoff_ * 2, kFirstBackoff, kMaxBackoff);
      retry_at_ = now + backoff_;
      return;
    }
    if (!fd) return;  // nothing pending (or aborted)
    backoff_ = platform::Nanos(0);
    if (options_.same_user_only && !platform::peer_is_same_user(*fd)) {
      platform::close_handle(*fd);
      continue;
    }
    if (!options_.authkey) {
      ready_.push_back(Outcome{*fd, {}});
      continue;
    }
    Pending p{*fd, now + options_.handshake_timeout, nullptr};
    try {
      p.handshake =
          std::make_unique<auth::Handshake>(*options_.authkey, auth::Handshake::Role::server);
    } catch (...) {
      platform::close_handle(p.fd);
      throw;
    }
    if (!advance(p)) pending_.push_back(std::move(p));
  }
}

std::optional<Acceptor::Outcome> Acceptor::next(const std::vector<platform::Handle>& stop) {
  std::vector<platform::Handle> handles;
  for (;;) {
    if (!ready_.empty()) {
      Outcome o = std::move(ready_.front());
      ready_.pop_front();
      return o;
    }
    Clock::time_point now = Clock::now();
    // Handshakes past their deadline fail; the earliest remaining deadline bounds the wait.
    std::optional<Clock::time_point> wake;
    for (Pending& p : pending_) {
      if (now >= p.deadline)
        finish(p, "authentication handshake timed out");
      else
        wake = std::min(wake.value_or(p.deadline), p.deadline);
    }
    std::erase_if(pending_, [](const Pending& p) { return p.fd == platform::kInvalidHandle; });
    if (!ready_.empty()) continue;
    const bool accepting = now >= retry_at_;
    if (!accepting) wake = std::min(wake.value_or(retry_at_), retry_at_);
    handles.assign(stop.begin(), stop.end());
    handles.push_back(accepting ? listener_ : platform::kInvalidHandle);  // poll ignores -1
    for (const Pending& p : pending_) handles.push_back(p.fd);
    platform::Nanos left{0};
    if (wake)
      left = std::max(platform::Nanos(0), std::chrono::duration_cast<platform::Nanos>(*wake - now));
    const std::vector<std::size_t> readable = platform::wait_any(handles, wake ? &left : nullptr);
    now = Clock::now();
    bool listener_ready = false;
    for (std::size_t i : readable) {
      if (i < stop.size()) return std::nullopt;
      if (i == stop.size()) {
        listener_ready = true;
      } else {
        Pending& p = pending_[i - stop.size() - 1];
        if (p.fd != platform::kInvalidHandle) advance(p);
      }
    }
    std::erase_if(pending_, [](const Pending& p) { return p.fd == platform::kInvalidHandle; });
    if (listener_ready || (!accepting && now >= retry_at_)) accept_some(now);
  }
}

void authenticate(platform::Handle fd, const std::string& authkey, platform::Nanos timeout,
                  bool server) {
  const Clock::time_point deadline = Deadline::after(timeout).at();
  auth::Channel ch{[fd, deadline](const void* data, std::size_t size) {
                     platform::write_all_until(fd, data, size, deadline);
                   },
                   [fd, deadline](void* data, std::size_t size) {
                     char* p = static_cast<char*>(data);
                     while (size > 0) {
                       const std::size_t n = platform::read_some_until(fd, p, size, deadline);
                       if (n == 0) throw EOFError();
                       p += n;
                       size -= n;
                     }
                   }};
  try {
    if (server)
      auth::serve_handshake(ch, authkey);
    else
      auth::client_handshake(ch, authkey);
  } catch (const OSError& e) {
    if (e.code().value() == ETIMEDOUT)
      throw AuthenticationError("authentication handshake timed out");
    throw AuthenticationError(std::string("authentication handshake failed: ") + e.what());
  } catch (const EOFError&) {
    throw AuthenticationError("the peer closed the connection during the authentication handshake");
  }
}

}  // namespace mp::detail
