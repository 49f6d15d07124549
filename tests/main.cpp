// The test binary is also the program that spawned children run: freeze_support comes first.
#include <gtest/gtest.h>

#include "mp/spawn.hpp"

int main(int argc, char** argv) {
  mp::freeze_support(argc, argv);
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
