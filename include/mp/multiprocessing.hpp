// mp/multiprocessing.hpp — the C++ `import multiprocessing`: every public part of mp.
// (concurrent.futures is a module of its own, as in Python: mp/futures.hpp.)
#pragma once

#include "mp/connection.hpp"
#include "mp/context.hpp"
#include "mp/errors.hpp"
#include "mp/forkserver.hpp"
#include "mp/managers.hpp"
#include "mp/pool.hpp"
#include "mp/process.hpp"
#include "mp/queues.hpp"
#include "mp/reduction.hpp"
#include "mp/shared_memory.hpp"
#include "mp/sharedctypes.hpp"
#include "mp/spawn.hpp"
#include "mp/synchronize.hpp"
#include "mp/util.hpp"
