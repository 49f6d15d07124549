// samples/mpi/mpi_primes.cpp — the concurrent.futures documentation's prime-checking example
// (samples/process_pool_primes.py) across MPI ranks, as mpi4py.futures runs it:
//   mpiexec -n 3 ./mpi_primes       rank 0 runs main, ranks 1 and 2 check the numbers
//   ./mpi_primes                    one rank: the executor spawns its worker (MPI_Comm_spawn)
// The Python with mpi4py is the same program with `from mpi4py.futures import MPIPoolExecutor`
// and `with MPIPoolExecutor() as executor:`. Output, in order: "<number> is prime: True|False".
#include <cmath>
#include <cstdint>
#include <iostream>
#include <vector>

#include <mp/mpi.hpp>

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
  mp::mpi::init(argc, argv);  // ranks other than 0 serve tasks and end here
  mp::mpi::MPIPoolExecutor executor;
  auto number = PRIMES.begin();
  for (bool prime : executor.map(is_prime, PRIMES)) {
    std::cout << *number++ << " is prime: " << (prime ? "True" : "False") << '\n';
  }
}
