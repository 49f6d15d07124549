// samples/connection_wait.cpp — the multiprocessing documentation's connection.wait() example
// (samples/python/12_connection_wait.py, the Python original): wait() over a std::vector<Connection> gives
// the ready Connections themselves, and readers.remove(r) is std::erase(readers, r).
// Expected output (as Python's): the 40 messages "(i, 'Process-N')", in an arbitrary order.
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include <mp/multiprocessing.hpp>

void foo(mp::Connection w) {
  for (int i = 0; i < 10; ++i) w.send(std::pair<int, std::string>(i, mp::current_process().name()));
  w.close();
}

int main(int argc, char* argv[]) {
  mp::freeze_support(argc, argv);
  std::vector<mp::Connection> readers;

  for (int i = 0; i < 4; ++i) {
    auto [r, w] = mp::Pipe(false);  // Pipe(duplex=False)
    readers.push_back(r);
    mp::Process p(foo, w);
    p.start();
    // Close the writable end now, so that p holds the only handle: when p closes it, wait()
    // reports the readable end as ready at once.
    w.close();
  }

  while (!readers.empty()) {
    for (mp::Connection& r : mp::connection::wait(readers)) {
      try {
        const auto [i, name] = r.recv<std::pair<int, std::string>>();
        std::printf("(%d, '%s')\n", i, name.c_str());  // print(msg)
      } catch (const mp::EOFError&) {
        std::erase(readers, r);  // readers.remove(r)
      }
    }
  }
}
