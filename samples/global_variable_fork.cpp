// samples/global_variable_fork.cpp — tutorial 01_global_variable_fork.py:
// "Multiprocessing Cannot Race with a Global Variable".
// Each forked child changes its own copy of the global; the parent's stays 0.
// Expected output: "Waiting for processes to finish..." then "Value: 0".
#include <iostream>
#include <thread>

#include <mp/multiprocessing.hpp>

int value;  // Python: `global value`

void adder(int amount, int repeats) {
  for (int i = 0; i < repeats; ++i) {
    int tmp = value;
    std::this_thread::yield();  // sleep(0)
    tmp = tmp + amount;
    std::this_thread::yield();
    value = tmp;
  }
}

void subtractor(int amount, int repeats) {
  for (int i = 0; i < repeats; ++i) {
    int tmp = value;
    std::this_thread::yield();
    tmp = tmp - amount;
    std::this_thread::yield();
    value = tmp;
  }
}

int main(int argc, char* argv[]) {
  mp::freeze_support(argc, argv);
  mp::set_start_method("fork");  // this sample is about fork; MP_START_METHOD does not apply
  value = 0;
  mp::Process adder_thread(adder, 1, 1000000);
  adder_thread.start();
  mp::Process subtractor_thread(subtractor, 1, 1000000);
  subtractor_thread.start();
  std::cout << "Waiting for processes to finish..." << std::endl;
  adder_thread.join();
  // subtractor_thread.join();  // as in Python, it is joined at exit
  std::cout << "Value: " << value << std::endl;
}
