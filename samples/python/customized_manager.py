# The multiprocessing documentation's "Customized managers" example (Python 3 docs,
# multiprocessing, Managers); samples/customized_manager.cpp is its C++ translation.
# Expected output: 7, then 56.
from multiprocessing.managers import BaseManager

class MathsClass:
    def add(self, x, y):
        return x + y
    def mul(self, x, y):
        return x * y

class MyManager(BaseManager):
    pass

MyManager.register('Maths', MathsClass)

if __name__ == '__main__':
    with MyManager() as manager:
        maths = manager.Maths()
        print(maths.add(4, 3))         # prints 7
        print(maths.mul(7, 8))         # prints 56
