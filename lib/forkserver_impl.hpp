// Internal: the client side of the forkserver (lib/forkserver.cpp) used by
// lib/popen_forkserver.cpp, and what tests need to reach the server.
#pragma once

#include <functional>

#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "platform/handle.hpp"

namespace mp::detail {

// Guards the connection below (one request at a time per process).
std::mutex& forkserver_mutex();
// This process's authenticated connection to its server, starting the server if none runs;
// `fresh`: drop the current connection first (it failed). Call with forkserver_mutex() held.
platform::Handle forkserver_connection(bool fresh);
// A start request (lib/forkserver.cpp describes it) on this process's connection (a new one when
// `fresh`: the previous failed): the child's preparation data `data` and the descriptors `fds`
// (first one end of the status socket), and the caller's `inherited` descriptors (given to the
// child under their numbers). Returns the child's pid and a pidfd on it. Throws
// OSError/EOFError when the server is gone, OSError when its fork failed. `sent` runs once the
// request is sent, before the reply is read (the caller waits there for the child's bootstrap
// report, which comes after the reply: one wake-up instead of two).
std::pair<int, platform::Handle> forkserver_request(bool fresh, const std::string& data,
                                                    std::vector<platform::Handle> fds,
                                                    const std::vector<platform::Handle>& inherited,
                                                    const std::function<void()>& sent);
// The status socket: the child's bootstrap report (lib/spawn.cpp), then its exit status as it
// leaves (a child killed by a signal writes none), and, once the server has reaped the child, the
// status again: each record is kExitTag and the status (int32, native order) in one write.
inline constexpr char kExitTag = 2;
inline constexpr std::size_t kExitRecordBytes = 5;
// The server's socket path ("" if none was started by this process or its parent).
std::string forkserver_address();

}  // namespace mp::detail
