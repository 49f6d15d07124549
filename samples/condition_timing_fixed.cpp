// samples/condition_timing_fixed.cpp — tutorial 11_condition_timing_fixed.py:
// "Example of Fixing a Multiprocessing Race Condition": the child sets an Event once it holds the
// condition's lock, and the main process waits for it before notifying.
// Expected output, in this order: "Process: Waiting to be notified...", "Process: Ready",
// "Main: Notifying the process", "Process: Notified", "Main: Done".
#include <chrono>
#include <iostream>
#include <mutex>
#include <thread>

#include <mp/multiprocessing.hpp>

using namespace std::chrono_literals;

void task(mp::Condition condition, mp::Event event) {
  std::this_thread::sleep_for(1s);
  std::cout << "Process: Waiting to be notified..." << std::endl;  // std::endl flushes
  {
    std::lock_guard guard(condition);  // with condition:
    std::cout << "Process: Ready" << std::endl;
    event.set();
    condition.wait();
  }
  std::cout << "Process: Notified" << std::endl;
}

int main(int argc, char* argv[]) {
  mp::freeze_support(argc, argv);
  mp::Condition condition;
  mp::Event event;
  mp::Process process(task, condition, event);
  process.start();
  event.wait();
  std::cout << "Main: Notifying the process" << std::endl;
  {
    std::lock_guard guard(condition);
    condition.notify();
  }
  process.join();
  std::cout << "Main: Done" << std::endl;
}
