// samples/manager_unsafe_counter.cpp — tutorial 02_manager_unsafe_counter.py:
// "Example of Race Condition with a Manager". The manager's server serves each client process in
// its own thread, so increment() and decrement() run concurrently on one unguarded counter.
// Expected output: "Value: N" with N usually non-zero and different on each run.
#include <atomic>
#include <iostream>
#include <thread>

#include <mp/multiprocessing.hpp>

class UnsafeCounter {
 public:
  explicit UnsafeCounter(int count) : value_(count) {}
  int get() { return value_; }
  void increment() {
    int tmp = value_;
    std::this_thread::yield();  // sleep(0)
    tmp = tmp + 1;
    std::this_thread::yield();
    value_ = tmp;
  }
  void decrement() {
    int tmp = value_;
    std::this_thread::yield();
    tmp = tmp - 1;
    std::this_thread::yield();
    value_ = tmp;
  }

 private:
  // Python's unguarded int; a std::atomic keeps C++ free of undefined behaviour while the
  // read-yield-write sequence above still races exactly as Python's does.
  std::atomic<int> value_;
};
// C++ has no reflection: the constructor's parameters and the methods proxies may call are listed.
MP_EXPOSE(UnsafeCounter, (int), get, increment, decrement)

class CustomManager : public mp::BaseManager {
 public:
  MP_REGISTER(UnsafeCounter)  // CustomManager.register('UnsafeCounter', UnsafeCounter)
};

void adder_task(mp::Proxy<UnsafeCounter> counter) {
  for (int i = 0; i < 1000; ++i) {
    counter.increment();
  }
}

void subtractor_task(mp::Proxy<UnsafeCounter> counter) {
  for (int i = 0; i < 1000; ++i) {
    counter.decrement();
  }
}

int main(int argc, char* argv[]) {
  mp::freeze_support(argc, argv);
  {
    CustomManager manager;  // with CustomManager() as manager: (shut down at the closing brace)
    manager.start();
    auto counter = manager.UnsafeCounter(0);
    mp::Process adder_process(adder_task, counter);
    mp::Process subtractor_process(subtractor_task, counter);
    adder_process.start();
    subtractor_process.start();
    adder_process.join();
    subtractor_process.join();
    std::cout << "Value: " << counter.get() << std::endl;
  }
}
