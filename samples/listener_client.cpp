// samples/listener_client.cpp — the multiprocessing documentation's Listener/Client example
// (samples/python/13_listener_client.py, the Python original, which puts server and client in one program).
// Python's list [2.25, None, 'junk'] is a vector of variants; array('i', ...) a std::vector<int>
// whose bytes send_bytes sends and recv_bytes_into fills.
// Expected output (as Python's): the accepting line, then the client's four lines.
#include <cstdio>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include <mp/multiprocessing.hpp>

using Item = std::variant<double, std::monostate, std::string>;  // float, None, str

void print_list(const std::vector<Item>& items) {  // print(list)
  std::printf("[");
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) std::printf(", ");
    if (auto* d = std::get_if<double>(&items[i])) std::printf("%g", *d);
    if (std::holds_alternative<std::monostate>(items[i])) std::printf("None");
    if (auto* s = std::get_if<std::string>(&items[i])) std::printf("'%s'", s->c_str());
  }
  std::printf("]\n");
}

void client(mp::connection::Address address) {
  mp::Connection conn = mp::Client(address, std::string("secret password"));
  print_list(conn.recv<std::vector<Item>>());         // => [2.25, None, 'junk']
  std::printf("b'%s'\n", conn.recv_bytes().c_str());  // => b'hello'
  std::vector<int> arr{0, 0, 0, 0, 0};                // array('i', [0, 0, 0, 0, 0])
  std::printf("%zu\n", conn.recv_bytes_into(arr));    // => 8
  std::printf("array('i', [%d, %d, %d, %d, %d])\n", arr[0], arr[1], arr[2], arr[3], arr[4]);
  conn.close();
}

int main(int argc, char* argv[]) {
  mp::freeze_support(argc, argv);
  const mp::connection::TcpAddress address{"127.0.0.1", 0};  // ('127.0.0.1', 0)

  mp::Listener listener(address, {.authkey = "secret password"});  // Listener(address, authkey=...)
  mp::Process p(client, listener.address());
  p.start();
  {
    mp::Connection conn = listener.accept();
    const auto peer = std::get<mp::connection::TcpAddress>(*listener.last_accepted());
    std::printf("connection accepted from %s\n", peer.host.c_str());
    std::fflush(stdout);  // flush=True
    conn.send(std::vector<Item>{2.25, std::monostate{}, std::string("junk")});
    conn.send_bytes("hello");
    const std::vector<int> numbers{42, 1729};  // array('i', [42, 1729])
    conn.send_bytes(std::as_bytes(std::span(numbers)));
    conn.close();
  }
  p.join();
  listener.close();
}
