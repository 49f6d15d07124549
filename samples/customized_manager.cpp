// samples/customized_manager.cpp — the multiprocessing documentation's "Customized managers"
// example (samples/python/customized_manager.py). Expected output: 7, then 56.
#include <iostream>

#include <mp/multiprocessing.hpp>

class MathsClass {
 public:
  int add(int x, int y) { return x + y; }
  int mul(int x, int y) { return x * y; }
};
// C++ has no reflection: the constructor's parameters and the methods proxies may call are listed.
MP_EXPOSE(MathsClass, (), add, mul)

class MyManager : public mp::BaseManager {
 public:
  MP_REGISTER_AS(Maths, MathsClass)  // MyManager.register('Maths', MathsClass)
};

int main(int argc, char* argv[]) {
  mp::freeze_support(argc, argv);
  {
    MyManager manager;  // with MyManager() as manager: (shut down at the closing brace)
    manager.start();
    auto maths = manager.Maths();
    std::cout << maths.add(4, 3) << std::endl;  // prints 7
    std::cout << maths.mul(7, 8) << std::endl;  // prints 56
  }
}
