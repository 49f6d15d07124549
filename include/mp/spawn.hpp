// mp/spawn.hpp — freeze_support (CPython: multiprocessing/spawn.py).
//
// Every program that may start processes with the spawn method calls
//     mp::freeze_support(argc, argv);
// as the first line of main — the C++ form of `if __name__ == '__main__':` + freeze_support().
// A spawned child is the same executable run again with a marker argument: there freeze_support
// receives the preparation data, runs the target and exits; in the parent it returns at once.
// A spawned child whose main did not call it stops at its first use of mp with a message saying
// so (reported by the parent's start()), so main never runs again as a parent.
#pragma once

#include "mp/export.hpp"

namespace mp {

MP_API void freeze_support(int argc, char** argv);

}  // namespace mp
