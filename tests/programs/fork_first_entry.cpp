// A program for the fork-safety test (test_reliability, ForkWhileThreadsEnterTheLibrary): threads
// enter the library for the first time (lazily made process-wide state: pid and thread caches,
// the default start method, the process table, the manager registry) while the main thread forks
// a child that needs the same state. Exit 0: the child ended; 1: the child hung (killed after 5 s).
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "mp/multiprocessing.hpp"

namespace {
void use_the_library(mp::Lock lock, mp::RLock rlock, mp::Condition cond) {
  (void)mp::get_start_method();
  (void)mp::current_process().name();
  (void)mp::active_children();
  { std::lock_guard g(rlock); }
  { std::lock_guard g(lock); }
  std::unique_lock g(cond);
  cond.notify_all();
}
}  // namespace

int main(int argc, char* argv[]) {
  mp::freeze_support(argc, argv);
  mp::Lock lock;
  mp::RLock rlock;
  mp::Condition cond;
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i)
    threads.emplace_back([&] {
      while (!go.load(std::memory_order_acquire)) {
      }
      use_the_library(lock, rlock, cond);
    });
  go.store(true, std::memory_order_release);
  mp::Process p(mp::get_context("fork"), use_the_library, lock, rlock, cond);
  p.start();
  p.join(std::chrono::seconds(5));
  const bool hung = !p.exitcode();
  if (hung) {
    p.kill();
    p.join();
  }
  for (auto& t : threads) t.join();
  if (hung) std::puts("the forked child hung");
  return hung ? 1 : (*p.exitcode() == 0 ? 0 : 2);
}
