// samples/value_get_lock.cpp — tutorial 07_value_get_lock.py:
// "Example of Fixing a Race Condition with Shared ctype" with the Value's own lock.
// Expected output: "Waiting for processes to finish..." then "Value: 0" every run.
#include <iostream>
#include <mutex>

#include <mp/multiprocessing.hpp>

void adder(mp::Value<int> variable) {
  for (int i = 0; i < 1000; ++i) {
    std::lock_guard guard(variable.get_lock());  // with variable.get_lock():
    variable.set_value(variable.value() + 1);
  }
}

void subtractor(mp::Value<int> variable) {
  for (int i = 0; i < 1000; ++i) {
    std::lock_guard guard(variable.get_lock());
    variable.set_value(variable.value() - 1);
  }
}

int main(int argc, char* argv[]) {
  mp::freeze_support(argc, argv);
  mp::Value<int> variable(0);
  mp::Process adder_thread(adder, variable);
  adder_thread.start();
  mp::Process subtractor_thread(subtractor, variable);
  subtractor_thread.start();
  std::cout << "Waiting for processes to finish..." << std::endl;
  adder_thread.join();
  subtractor_thread.join();
  {
    std::lock_guard guard(variable.get_lock());
    std::cout << "Value: " << variable.value() << std::endl;
  }
}
