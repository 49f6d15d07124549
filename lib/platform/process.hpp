// Process launch, reaping, signals and the lifeline; fork and exit. process_posix.cpp,
// process_linux.cpp (pidfds, on_exit, /proc/self/exe, the spawn launcher), process_win32.cpp.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "platform/handle.hpp"

namespace mp::platform {

// ---- launch
// Starts `executable` with the argument vector `args` (args[0] included) and the caller's
// environment, in which `env_name` is set to `env_value`. Returns the child's pid.
// Handles: the child receives `inherit` under the same numbers although they are close-on-exec,
// and, by the POSIX convention, the caller's descriptors that are not close-on-exec (stdio among
// them); every descriptor the library opens is close-on-exec, so none of them leaks. Signals: the
// child's mask is empty and every signal has its default disposition, whatever the calling
// thread blocks or the process ignores.
// `ends_with_owner`: the child is killed when this process ends, however it ends (Windows: the
// kill-on-close job object; POSIX has no such tie: a daemonic child watches its parent itself,
// lib/support/lifeline.cpp). False for a non-daemonic child, which outlives a killed parent as in
// CPython.
// Safe to call from several threads at once; the cost does not grow with the caller's memory.
// Throws: OSError with the OS error of the failed step (e.g. the exec: ENOENT, E2BIG, EACCES).
int spawn_process(const std::string& executable, const std::vector<std::string>& args,
                  const char* env_name, const std::string& env_value,
                  const std::vector<Handle>& inherit, bool ends_with_owner = true);
// The program's arguments (argc/argv of main) in UTF-8: argv itself on POSIX; on Windows the
// UTF-16 command line split as the C runtime does (main's argv there is in the ANSI code page).
std::vector<std::string> program_arguments(int argc, char** argv);
// The running executable, for re-execution (/proc/self/exe on Linux).
std::string executable_path();
// The program's file as the OS resolves it now (for argv[0] of spawned children); falls back to
// executable_path().
std::string executable_display_path();
// In a spawned child: names the process after the program's file (what ps and top show), not
// after the path it was executed by.
void name_process_after_executable() noexcept;
// The calling process's descriptors without close-on-exec (stdio among them), in order: what a
// spawned child would inherit by the POSIX convention (process_linux.cpp: /proc/self/fd).
std::vector<Handle> inheritable_descriptors();
// How many handles (descriptors) the calling process has open now, for leak checks: /proc/self/fd
// on Linux (the listing's own excluded), GetProcessHandleCount on Windows.
int open_handle_count();
// Closes every descriptor of the calling process above stderr except `keep` (the forkserver: it
// must not hold what its owner had open when it was spawned, e.g. a pipe's write end).
void close_descriptors_except(const std::vector<Handle>& keep);

// ---- a started process
// A handle that refers to one process (pidfd), immune to PID reuse; readable once it ended.
Handle open_process(int pid);
// Reaps the child behind the process handle; nullopt if it still runs and !block.
// Exit code as Python: the status, or -N for signal N.
std::optional<int> reap(Handle process, bool block);
void send_signal(Handle process, int sig);   // no error if the process already ended
inline constexpr int kTerminateSignal = 15;  // SIGTERM
inline constexpr int kKillSignal = 9;        // SIGKILL
// SIGKILLs the child `pid`, which the caller has not reaped (so the pid is still this child's),
// and reaps it. For a child no process handle could be had for.
void kill_and_reap(int pid) noexcept;
// The signal's name, e.g. "SIGKILL" ("signal N" when unknown).
std::string signal_name(int sig);

// ---- the lifeline (lib/lifeline.cpp)
// The pid of the calling process' parent as the OS sees it now (getppid): it changes to the
// reaper (init or a subreaper) once the parent has died.
int parent_pid() noexcept;
// Ends the calling process at once with SIGKILL (no handlers, no atexit, no flushing).
[[noreturn]] void kill_self() noexcept;
// In a forked child: asks the OS to SIGKILL it when the *thread* that forked it ends (Linux:
// PR_SET_PDEATHSIG; the process's death ends every thread, SIGKILL included). If the parent
// process `parent_pid` is gone already, ends the child at once. False where the OS has no such
// request (the caller then watches its parent otherwise).
bool end_with_forking_thread(int parent_pid) noexcept;
// In the parent, before a fork: has this process resolve (once) the lazily bound C library calls
// a forked child makes on its way to its target (the gate's read, prctl, getppid). Else every
// child resolves them again itself — the dynamic linker's symbol search and its copy-on-write
// faults, ~10 us a child (Pool(4) under fork). Harmless calls; no other effect. (exit_now and
// on_exit_first call through pointers the loader fills in, for the same reason.)
void bind_child_calls() noexcept;
// In the parent, before forking several children at once (a pool's workers): gives the C
// library's free heap pages back to the OS (glibc: malloc_trim; it releases free chunks in every
// arena but shrinks only the main arena's top). Each fork copies the page-table entries of every
// resident private page and shares it copy-on-write, free heap pages included: ~25 us a fork per
// MiB (Pool(4) under fork after the metrics before it in mp_bench: 1.38-1.43 -> 1.30-1.33 ms).
// Costs ~3 us when there is nothing to give back. No-op where there is no fork or no such call.
void release_free_heap() noexcept;

// ---- signals a server process sets up
// SIGINT ignored (the forkserver: a terminal's ^C goes to its owner, which decides) or default.
void ignore_interrupts(bool ignore) noexcept;
// For a manager's server process: ignores SIGINT (as CPython's server, bpo-36368: Ctrl-C goes to
// the whole foreground process group, and the owner decides what to do), and on SIGTERM or SIGHUP
// removes the socket file `path` (none when empty or abstract) and the directory `dir` (none when
// empty), then ends by that signal. Async-signal-safe; the strings are copied.
void protect_server_from_group_signals(const std::string& path, const std::string& dir);

// ---- fork and exit
// Flushes C and C++ stdio buffers (before fork, and before a child leaves).
void flush_stdio() noexcept;
// fork(); returns 0 in the child, the pid in the parent. Throws OSError.
int fork_process();
// Runs fn() in the child after every fork() (pthread_atfork), e.g. to re-make a mutex another
// thread held during the fork.
void at_fork_in_child(void (*fn)());
// Leaves at once with `code` (no atexit handlers, no static destructors).
[[noreturn]] void exit_now(int code) noexcept;
// Runs fn(status) first when the process calls exit()/std::exit() (glibc on_exit), so a forked
// child leaves through its own cleanup and never runs the parent's static destructors.
void on_exit_first(void (*fn)(int status));

}  // namespace mp::platform
