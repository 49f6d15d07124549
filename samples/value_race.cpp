// samples/value_race.cpp — tutorial 05_value_race.py:
// "Example of Race Condition with Shared ctype".
// `variable.value += 1` is a read then a write; two processes interleave and lose updates.
// C++ differs in timing only: its loop is about 1000x faster than CPython's, so with Python's 1000
// bare repeats each child is done before the other has even started and the race never shows.
// Here each child repeats 100,000 times and holds the value read for about a microsecond before
// writing it back (as long as CPython's interpreter takes), which keeps the two children running
// at the same time and lets them interleave as CPython's do. (A busy microsecond, not a yield: on
// a loaded host each yield gives the CPU away for a whole time slice.)
// Expected output: "Waiting for processes to finish..." then "Value: N", N usually non-zero.
#include <iostream>
#include <chrono>

#include <mp/multiprocessing.hpp>

// C++ only, see above: about a microsecond of work between the read and the write.
void hold_a_moment() {
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(1);
  while (std::chrono::steady_clock::now() < until) {
  }
}

void adder(mp::Value<int> variable) {
  for (int i = 0; i < 100000; ++i) {  // Python: range(1000), see above
    int tmp = variable.value();       // variable.value += 1: a read...
    hold_a_moment();                  // (C++ only, see above)
    variable.set_value(tmp + 1);      // ...then a write
  }
}

void subtractor(mp::Value<int> variable) {
  for (int i = 0; i < 100000; ++i) {
    int tmp = variable.value();  // variable.value -= 1
    hold_a_moment();
    variable.set_value(tmp - 1);
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
