// A small program the process tests run as a subprocess, for behaviour seen from outside:
//   mp_probe stdio            buffered parent output before a fork child is printed once
//   mp_probe exception        a child's escaping exception is printed as CPython does
//   mp_probe no-freeze-support  main() forgets freeze_support: the spawned child must fail fast
//   mp_probe delete-self PATH   spawn after this binary was deleted from disk
//   mp_probe exit METHOD        main returns with a daemonic and a normal child running
//   mp_probe order METHOD       buffered parent output (stdio and std::cout), then a child prints
//   mp_probe exit-order METHOD [ADDRESS]  main returns with buffered output while a child waits
//                               for stdin to close (or for a message from the Listener at ADDRESS)
//   mp_probe shm-attach NAME    attaches to a shared memory segment, prints its size and first byte
//                               and exits (an unrelated process: CPython gh-82300)
//   mp_probe shm-create-and-die creates a tracked segment, prints its name, kills itself (SIGKILL)
// Built for Windows too (cmake/windows.cmake), where the fork modes do not apply.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <stdexcept>
#include <thread>

#include "mp/multiprocessing.hpp"
#include "mp/shared_memory.hpp"
#include "platform/process.hpp"

namespace {
void print_child() { std::printf("child-line\n"); }
void throw_child() { throw std::runtime_error("boom in child"); }
void exit_seven() { std::exit(7); }
void daemon_forever() {
  // Let go of the test's output pipe, so only the parent's exit decides when it reaches EOF.
#ifdef _WIN32
  const char* null_device = "NUL";
#else
  const char* null_device = "/dev/null";
#endif
  std::freopen(null_device, "w", stdout);
  std::freopen(null_device, "w", stderr);
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}
void late_child() {
  // Not synchronization: the delay makes it observable that the parent waits at exit.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  std::printf("child done\n");
}
// The test releases it once it has read the parent's last line: by closing its stdin, or (with an
// address: Windows) through a connection.
void print_after_release(std::string address) {
  if (address.empty()) {
    (void)std::getchar();
  } else {
    try {
      (void)mp::connection::Client(address).recv_bytes();
    } catch (const std::exception&) {
    }
  }
  std::printf("child-line\n");
}
}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  // The spawned child sees the marker in argv[1]; the environment tells it to skip the call too.
#ifdef _WIN32
  if (mode == "no-freeze-support") ::_putenv_s("MP_PROBE_NO_FREEZE_SUPPORT", "1");
#else
  if (mode == "no-freeze-support") ::setenv("MP_PROBE_NO_FREEZE_SUPPORT", "1", 1);
#endif
  if (!std::getenv("MP_PROBE_NO_FREEZE_SUPPORT")) mp::freeze_support(argc, argv);
  if (mode == "stdio") {
    std::printf("parent-line\n");  // stays in the stdio buffer: stdout is a pipe here
    mp::Process p(mp::get_context("fork"), print_child);
    p.start();
    p.join();
    return *p.exitcode();
  }
  if (mode == "order") {
    std::printf("parent-printf\n");  // both stay in their buffers: stdout is a pipe
    std::cout << "parent-cout\n";
    mp::Process p(mp::get_context(argv[2]), print_child);
    p.start();
    p.join();
    return *p.exitcode();
  }
  if (mode == "exit-order") {
    mp::Process p(mp::get_context(argv[2]), print_after_release,
                  std::string(argc > 3 ? argv[3] : ""));
    p.start();
    std::printf("parent-last\n");
    std::cout << "parent-cout-last\n";
    return 0;  // the exit handler joins the child, which prints only after this output is out
  }
  if (mode == "log") {
    mp::log_to_stderr(mp::util::INFO);
    mp::get_logger().debug("not shown");
    mp::get_logger().warning("parent warning");
    mp::Process p(mp::get_context(argv[2]), print_child);
    p.set_name("Logged");
    p.start();
    p.join();
    return *p.exitcode();
  }
  if (mode == "exception") {
    mp::Process p(mp::get_context(argv[2]), throw_child);
    p.set_name("Thrower");
    p.start();
    p.join();
    return *p.exitcode();
  }
  if (std::getenv("MP_PROBE_NO_FREEZE_SUPPORT")) {
    // Never reached as a parent by the child: the child stops in the Process constructor.
    mp::Process p(mp::get_context("spawn"), exit_seven);
    try {
      p.start();
    } catch (const mp::ProcessError& e) {
      std::printf("start failed: %s\n", e.what());
      return 3;
    }
    p.join();
    return 0;
  }
  if (mode == "exit") {
    mp::Process d(mp::get_context(argv[2]), daemon_forever),
        c(mp::get_context(argv[2]), late_child);
    d.set_daemon(true);
    d.start();
    c.start();
    std::printf("daemon %d\nmain returned\n", *d.pid());
    std::fflush(stdout);
    return 0;  // CPython: the daemon is terminated, the other child joined
  }
  if (mode == "shm-attach" && argc > 2) {
    mp::shared_memory::SharedMemory shm(argv[2]);
    std::printf("%zu %d\n", shm.size(), static_cast<int>(shm.buf()[0]));
    shm.close();
    return 0;
  }
  if (mode == "shm-create-and-die") {
    mp::shared_memory::SharedMemory shm(std::nullopt, true, 4096);
    std::printf("%s\n", shm.name().c_str());
    std::fflush(stdout);
    mp::platform::kill_self();
  }
  if (mode == "delete-self") {
    std::filesystem::remove(argv[2]);
    mp::Process p(mp::get_context("spawn"), exit_seven);
    p.start();
    p.join();
    return *p.exitcode();  // 7: the child ran the same image
  }
  return 2;
}
