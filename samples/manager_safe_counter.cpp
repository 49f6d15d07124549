// samples/manager_safe_counter.cpp — tutorial 04_manager_safe_counter.py:
// "Example of Fixing a Race Condition with a Manager". The lock lives inside the hosted object,
// in the manager's server process, and guards every method.
// Expected output: "Value: 0" every run.
#include <iostream>
#include <mutex>
#include <thread>

#include <mp/multiprocessing.hpp>

class SafeCounter {
 public:
  explicit SafeCounter(int count) : value_(count) {}  // self._lock = Lock(): the member below
  int get() {
    std::lock_guard guard(lock_);  // with self._lock:
    return value_;
  }
  void increment() {
    std::lock_guard guard(lock_);
    int tmp = value_;
    std::this_thread::yield();  // sleep(0)
    tmp = tmp + 1;
    std::this_thread::yield();
    value_ = tmp;
  }
  void decrement() {
    std::lock_guard guard(lock_);
    int tmp = value_;
    std::this_thread::yield();
    tmp = tmp - 1;
    std::this_thread::yield();
    value_ = tmp;
  }

 private:
  mp::Lock lock_;
  int value_;
};
// C++ has no reflection: the constructor's parameters and the methods proxies may call are listed.
MP_EXPOSE(SafeCounter, (int), get, increment, decrement)

class CustomManager : public mp::BaseManager {
 public:
  MP_REGISTER(SafeCounter)  // CustomManager.register('SafeCounter', SafeCounter)
};

void adder_task(mp::Proxy<SafeCounter> counter) {
  for (int i = 0; i < 1000; ++i) {
    counter.increment();
  }
}

void subtractor_task(mp::Proxy<SafeCounter> counter) {
  for (int i = 0; i < 1000; ++i) {
    counter.decrement();
  }
}

int main(int argc, char* argv[]) {
  mp::freeze_support(argc, argv);
  {
    CustomManager manager;  // with CustomManager() as manager: (shut down at the closing brace)
    manager.start();
    auto counter = manager.SafeCounter(0);
    mp::Process adder_process(adder_task, counter);
    mp::Process subtractor_process(subtractor_task, counter);
    adder_process.start();
    subtractor_process.start();
    adder_process.join();
    subtractor_process.join();
    std::cout << "Value: " << counter.get() << std::endl;
  }
}
