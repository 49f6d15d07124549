// samples/pool_of_workers.cpp — the multiprocessing documentation's "Using a pool of workers"
// example (samples/pool_of_workers.py, the Python original).
// `with Pool(processes=4) as pool:` is a block holding an mp::Pool (its destructor terminates the
// pool, as leaving the with-block does); Python's `os.getpid` and `time.sleep` are small functions
// here, and print(list) is print_list.
// Expected output (as Python's): the squares of 0..9 as a list, the same squares one per line in
// any order, 400, a worker's pid, a list of 4 worker pids, then the three sentences.
#include <chrono>
#include <iostream>
#include <ranges>
#include <thread>
#include <vector>

#include <mp/multiprocessing.hpp>

using namespace std::chrono_literals;

int f(int x) { return x * x; }

int os_getpid() { return *mp::current_process().pid(); }  // os.getpid
void time_sleep(int seconds) {
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
}  // time.sleep

void print_list(const std::vector<int>& v) {  // print(list)
  std::cout << '[';
  for (std::size_t i = 0; i < v.size(); ++i) std::cout << (i ? ", " : "") << v[i];
  std::cout << "]\n";
}

int main(int argc, char* argv[]) {
  mp::freeze_support(argc, argv);
  {
    // start 4 worker processes
    mp::Pool pool(4);

    // print "[0, 1, 4,..., 81]"
    print_list(pool.map(f, std::views::iota(0, 10)));

    // print same numbers in arbitrary order
    for (int i : pool.imap_unordered(f, std::views::iota(0, 10))) std::cout << i << '\n';

    // evaluate "f(20)" asynchronously
    auto res = pool.apply_async(f, 20);  // runs in *only* one process
    std::cout << res.get(1s) << '\n';    // prints "400"

    // evaluate "os.getpid()" asynchronously
    auto pid = pool.apply_async(os_getpid);  // runs in *only* one process
    std::cout << pid.get(1s) << '\n';        // prints the PID of that process

    // launching multiple evaluations asynchronously *may* use more processes
    std::vector<mp::AsyncResult<int>> multiple_results;
    for (int i = 0; i < 4; ++i) multiple_results.push_back(pool.apply_async(os_getpid));
    std::vector<int> pids;
    for (auto& r : multiple_results) pids.push_back(r.get(1s));
    print_list(pids);

    // make a single worker sleep for 10 seconds
    auto sleeping = pool.apply_async(time_sleep, 10);
    try {
      sleeping.get(1s);
      std::cout << "None\n";
    } catch (const mp::TimeoutError&) {
      std::cout << "We lacked patience and got a multiprocessing.TimeoutError\n";
    }

    std::cout << "For the moment, the pool remains available for more work\n";
  }

  // exiting the 'with'-block has stopped the pool
  std::cout << "Now the pool is stopped\n";
}
