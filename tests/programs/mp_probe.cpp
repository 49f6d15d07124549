// A small program the process tests run as a subprocess, for behaviour seen from outside:
//   mp_probe stdio            buffered parent output before a fork child is printed once
//   mp_probe exception        a child's escaping exception is printed as CPython does
//   mp_probe no-freeze-support  main() forgets freeze_support: the spawned child must fail fast
//   mp_probe delete-self PATH   spawn after this binary was deleted from disk
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "mp/multiprocessing.hpp"

namespace {
void print_child() { std::printf("child-line\n"); }
void throw_child() { throw std::runtime_error("boom in child"); }
void exit_seven() { std::exit(7); }
}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  // The spawned child sees the marker in argv[1]; the environment tells it to skip the call too.
  if (mode == "no-freeze-support") ::setenv("MP_PROBE_NO_FREEZE_SUPPORT", "1", 1);
  if (!std::getenv("MP_PROBE_NO_FREEZE_SUPPORT")) mp::freeze_support(argc, argv);
  if (mode == "stdio") {
    std::printf("parent-line\n");  // stays in the stdio buffer: stdout is a pipe here
    mp::Process p(mp::get_context("fork"), print_child);
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
  if (mode == "delete-self") {
    std::filesystem::remove(argv[2]);
    mp::Process p(mp::get_context("spawn"), exit_seven);
    p.start();
    p.join();
    return *p.exitcode();  // 7: the child ran the same image
  }
  return 2;
}
