// Every public header, with the everyday templates instantiated, compiled with -Wall -Wextra
// -Wshadow -Wconversion -Werror (ctest compile.public_headers_warnings): a user's strict
// warnings never fire inside mp's headers.
#include "mp/multiprocessing.hpp"

#include <string>
#include <vector>

namespace {
struct Point {
  double x, y;
};
void target(mp::Queue<int>, mp::Value<int>, mp::Array<double>) {}
}  // namespace

int main(int argc, char** argv) {
  mp::freeze_support(argc, argv);
  mp::Queue<int> qi;
  mp::Queue<std::string> qs;
  mp::Queue<std::vector<double>> qv;
  mp::Queue<Point> qp;
  mp::JoinableQueue<int> jq;
  mp::SimpleQueue<std::string> sq;
  qi.put(1);
  (void)qi.get(1.0 > 0);
  qs.put("a");
  (void)qs.get(std::chrono::seconds(1));
  qv.put({1.0});
  (void)qv.get();
  qp.put(Point{1, 2});
  (void)qp.get();
  mp::Value<int> v(0);
  mp::Array<double> a(3);
  mp::Process p(target, qi, v, a);
  p.join(0.5);
  auto [c1, c2] = mp::Pipe();
  c1.send(std::vector<int>{1});
  (void)c2.recv<std::vector<int>>();
  std::vector<mp::Connection> cs{c1, c2};
  (void)mp::connection::wait(cs, 0.0);
  mp::Lock lock;
  (void)lock.acquire(std::chrono::milliseconds(1));
  mp::Event e;
  (void)e.wait(0.0);
  mp::log_to_stderr(mp::util::INFO).info("x");
  (void)mp::reduction::loads<Point>(mp::reduction::dumps(Point{}));
  return 0;
}
