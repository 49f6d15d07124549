// samples/manager_lock_in_tasks.cpp — tutorial 03_manager_lock_in_tasks.py:
// the unsafe hosted counter, made safe by a multiprocessing Lock shared with each task.
// Expected output: "Value: 0" every run.
#include <atomic>
#include <iostream>
#include <mutex>
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
  std::atomic<int> value_;  // atomic only to avoid C++ undefined behaviour; see the unsafe sample
};
// C++ has no reflection: the constructor's parameters and the methods proxies may call are listed.
MP_EXPOSE(UnsafeCounter, (int), get, increment, decrement)

class CustomManager : public mp::BaseManager {
 public:
  MP_REGISTER(UnsafeCounter)  // CustomManager.register('UnsafeCounter', UnsafeCounter)
};

void adder_task(mp::Proxy<UnsafeCounter> counter, mp::Lock lock) {
  for (int i = 0; i < 1000; ++i) {
    std::lock_guard guard(lock);  // with lock:
    counter.increment();
  }
}

void subtractor_task(mp::Proxy<UnsafeCounter> counter, mp::Lock lock) {
  for (int i = 0; i < 1000; ++i) {
    std::lock_guard guard(lock);
    counter.decrement();
  }
}

int main(int argc, char* argv[]) {
  mp::freeze_support(argc, argv);
  {
    CustomManager manager;  // with CustomManager() as manager: (shut down at the closing brace)
    manager.start();
    auto counter = manager.UnsafeCounter(0);
    mp::Lock lock;
    mp::Process adder_process(adder_task, counter, lock);
    mp::Process subtractor_process(subtractor_task, counter, lock);
    adder_process.start();
    subtractor_process.start();
    adder_process.join();
    subtractor_process.join();
    std::cout << "Value: " << counter.get() << std::endl;
  }
}
