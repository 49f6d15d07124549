#include <mp/multiprocessing.hpp>

#include <cstdio>
#include <cstdlib>

static void child(int code) { std::exit(code); }

int main(int argc, char* argv[]) {
  mp::freeze_support(argc, argv);
  int sum = 0;
  const auto methods = mp::get_all_start_methods();
  for (const std::string& method : methods) {
    mp::Process p(mp::get_context(method), child, 21);
    p.start();
    p.join();
    sum += p.exitcode().value_or(0);
  }
  std::printf("consumer ok %d\n", sum);
  return sum == 21 * static_cast<int>(methods.size()) ? 0 : 1;
}
