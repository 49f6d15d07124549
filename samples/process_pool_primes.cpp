// samples/process_pool_primes.cpp — the concurrent.futures documentation's ProcessPoolExecutor
// example (samples/process_pool_primes.py, the Python original): which of six large numbers
// are prime, checked in worker processes.
// `with ProcessPoolExecutor() as executor:` is a block holding the executor (its destructor is
// shutdown(wait=True)); zip(PRIMES, executor.map(...)) walks the lazy map beside the list.
// Expected output (as Python's): "<number> is prime: True|False" for each number, in order.
#include <cmath>
#include <cstdint>
#include <iostream>
#include <vector>

#include <mp/futures.hpp>
#include <mp/multiprocessing.hpp>

const std::vector<std::int64_t> PRIMES = {112272535095293, 112582705942171, 112272535095293,
                                          115280095190773, 115797848077099, 1099726899285419};

bool is_prime(std::int64_t n) {
  if (n < 2) return false;
  if (n == 2) return true;
  if (n % 2 == 0) return false;

  const auto sqrt_n = static_cast<std::int64_t>(std::floor(std::sqrt(static_cast<double>(n))));
  for (std::int64_t i = 3; i < sqrt_n + 1; i += 2) {
    if (n % i == 0) return false;
  }
  return true;
}

int main(int argc, char* argv[]) {
  mp::freeze_support(argc, argv);
  mp::futures::ProcessPoolExecutor executor;
  auto number = PRIMES.begin();
  for (bool prime : executor.map(is_prime, PRIMES)) {
    std::cout << *number++ << " is prime: " << (prime ? "True" : "False") << '\n';
  }
}
