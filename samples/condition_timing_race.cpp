// samples/condition_timing_race.cpp — tutorial 10_condition_timing_race.py:
// "Example of Multiprocessing Race Condition" due to timing. The main process notifies before the
// child waits, so the notification is lost and the child waits forever: the program hangs by
// design (stop it with Ctrl-C; the child goes with it).
// Expected output: "Main: Notifying the process", "Process: Waiting to be notified...", then a hang.
#include <chrono>
#include <iostream>
#include <mutex>
#include <thread>

#include <mp/multiprocessing.hpp>

using namespace std::chrono_literals;

void task(mp::Condition condition) {
  std::this_thread::sleep_for(1s);
  std::cout << "Process: Waiting to be notified..." << std::endl;  // std::endl flushes
  {
    std::lock_guard guard(condition);  // with condition:
    condition.wait();
  }
  std::cout << "Process: Notified" << std::endl;
}

int main(int argc, char* argv[]) {
  mp::freeze_support(argc, argv);
  mp::Condition condition;
  mp::Process process(task, condition);
  process.start();
  std::this_thread::sleep_for(500ms);
  // Python's print() here is not flushed when stdout is a pipe; flushing shows the line at once.
  std::cout << "Main: Notifying the process" << std::endl;
  {
    std::lock_guard guard(condition);
    condition.notify();
  }
  process.join();
  std::cout << "Main: Done" << std::endl;
}
