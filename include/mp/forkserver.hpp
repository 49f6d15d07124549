// mp/forkserver.hpp — the forkserver start method (CPython: multiprocessing/forkserver.py).
//
//   auto ctx = mp::get_context("forkserver");  mp::Process p(ctx, task, args...);
//
// The first start() (or ensure_running()) starts a server: this executable run again by spawn,
// so it is single-threaded and holds none of the caller's locks. Each child is forked from the
// server, not from the caller: a caller full of threads holding locks starts children safely
// (under fork such a child can deadlock). Targets and arguments are sent as under spawn (a
// function or captureless lambda; shared objects' handles are passed with SCM_RIGHTS), and every
// request is authenticated with the caller's authkey (HMAC-SHA256 both ways, as CPython 3.14).
//
// Guarantees: sentinel(), exitcode(), join(), terminate() and kill() behave as for the other
// methods although the child is the server's (the caller holds a pidfd of the child and gets the
// exit status from the server). The server is a direct child of its owner and ends as soon as
// the owner has ended, SIGKILL included, removing its socket and private directory. Children of
// a server that was killed run on; their exit code is reported as 255 (as CPython), and the next
// start() starts a new server. A forked child of the owner uses the owner's server.
// Python differences: set_forkserver_preload() has no counterpart (nothing to import in C++).
#pragma once

#include <optional>

#include "mp/export.hpp"

namespace mp::forkserver {

// Starts the server if this process has none running (CPython's ensure_running()).
// Throws ProcessError/OSError when it cannot be started.
MP_API void ensure_running();
// The pid of the server this process started, if it runs (for tests and diagnostics).
MP_API std::optional<int> server_pid();

}  // namespace mp::forkserver
