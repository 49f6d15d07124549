// samples/value_race.cpp — tutorial 05_value_race.py:
// "Example of Race Condition with Shared ctype".
// `variable.value += 1` is a read then a write; two processes interleave and lose updates.
// C++ runs the loop about 1000x faster than CPython: with Python's 1000 repeats each child is done
// before the other has started and the race never shows, so here each child repeats 1,000,000 times.
// Expected output: "Waiting for processes to finish..." then "Value: N", N usually non-zero.
#include <iostream>

#include <mp/multiprocessing.hpp>

void adder(mp::Value<int> variable) {
  for (int i = 0; i < 1000000; ++i) {  // Python: range(1000), see above
    variable.set_value(variable.value() + 1);  // variable.value += 1
  }
}

void subtractor(mp::Value<int> variable) {
  for (int i = 0; i < 1000000; ++i) {  // Python: range(1000), see above
    variable.set_value(variable.value() - 1);  // variable.value -= 1
  }
}

int main(int argc, char* argv[]) {
  mp::freeze_support(argc, argv);
  mp::Value<int> variable(0);  // Value('i', 0)
  mp::Process adder_thread(adder, variable);
  adder_thread.start();
  mp::Process subtractor_thread(subtractor, variable);
  subtractor_thread.start();
  std::cout << "Waiting for processes to finish..." << std::endl;
  adder_thread.join();
  subtractor_thread.join();
  std::cout << "Value: " << variable.value() << std::endl;
}
