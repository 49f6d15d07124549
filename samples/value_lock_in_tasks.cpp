// samples/value_lock_in_tasks.cpp — tutorial 06_value_lock_in_tasks.py:
// a mutex lock created in the main process and shared with each child.
// Expected output: "Waiting for processes to finish..." then "Value: 0" every run.
#include <iostream>
#include <mutex>

#include <mp/multiprocessing.hpp>

void adder(mp::Value<int> variable, mp::Lock lock) {
  for (int i = 0; i < 1000; ++i) {
    std::lock_guard guard(lock);  // with lock:
    variable.set_value(variable.value() + 1);
  }
}

void subtractor(mp::Value<int> variable, mp::Lock lock) {
  for (int i = 0; i < 1000; ++i) {
    std::lock_guard guard(lock);
    variable.set_value(variable.value() - 1);
  }
}

int main(int argc, char* argv[]) {
  mp::freeze_support(argc, argv);
  mp::Value<int> variable(0);
  mp::Lock lock;
  mp::Process adder_thread(adder, variable, lock);
  adder_thread.start();
  mp::Process subtractor_thread(subtractor, variable, lock);
  subtractor_thread.start();
  std::cout << "Waiting for processes to finish..." << std::endl;
  adder_thread.join();
  subtractor_thread.join();
  std::cout << "Value: " << variable.value() << std::endl;
}
