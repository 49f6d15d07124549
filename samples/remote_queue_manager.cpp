// samples/remote_queue_manager.cpp — the multiprocessing documentation's "Using a remote manager"
// example in one program (samples/python/remote_queue_manager.py): a server process serves a
// queue on a TCP port (get_server().serve_forever()); one client process puts "hello", another
// (this one) gets it. Expected output: "hello".
#include <condition_variable>
#include <deque>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>

#include <mp/multiprocessing.hpp>

// queue.Queue, the object the server shares (C++'s standard library has no thread-safe queue).
class Queue {
 public:
  void put(std::string item) {
    std::lock_guard guard(mutex_);
    items_.push_back(std::move(item));
    ready_.notify_one();
  }
  std::string get() {  // blocks until an item is there, as queue.get()
    std::unique_lock guard(mutex_);
    ready_.wait(guard, [this] { return !items_.empty(); });
    std::string item = std::move(items_.front());
    items_.pop_front();
    return item;
  }

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::string> items_;
};
MP_EXPOSE(Queue, (), put, get)  // what proxies may call (C++ has no reflection)

class QueueManager : public mp::BaseManager {
 public:
  using BaseManager::BaseManager;
  MP_REGISTER_TYPEID(get_queue, Queue)  // QueueManager.register('get_queue')
};

void serve(mp::Connection port_sender) {
  auto queue = std::make_shared<Queue>();
  QueueManager m(mp::managers::Address("127.0.0.1", 0), std::string("abracadabra"));
  m.register_("get_queue", [queue] { return queue; });  // callable=lambda: queue
  auto s = m.get_server();
  port_sender.send(s.address().port);  // port 0: the port the server bound
  s.serve_forever();
}

void put_hello(int port) {
  QueueManager m(mp::managers::Address("127.0.0.1", port), std::string("abracadabra"));
  m.connect();
  auto queue = m.get_queue();
  queue.put("hello");
}

int main(int argc, char* argv[]) {
  mp::freeze_support(argc, argv);
  auto [port_receiver, port_sender] = mp::Pipe(false);
  mp::Process server(serve, port_sender);
  server.start();
  const int port = port_receiver.recv<int>();
  mp::Process client(put_hello, port);
  client.start();
  client.join();
  QueueManager m(mp::managers::Address("127.0.0.1", port), std::string("abracadabra"));
  m.connect();
  auto queue = m.get_queue();
  std::cout << queue.get() << std::endl;
  server.terminate();
  server.join();
}
