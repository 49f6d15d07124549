// mp/multiprocessing.hpp — the C++ `import multiprocessing`: every public part of mp.
#pragma once

#include "mp/context.hpp"
#include "mp/errors.hpp"
#include "mp/process.hpp"
#include "mp/reduction.hpp"
#include "mp/spawn.hpp"
#if __has_include("mp/synchronize.hpp")
#include "mp/synchronize.hpp"
#endif
#if __has_include("mp/sharedctypes.hpp")
#include "mp/sharedctypes.hpp"
#endif
#if __has_include("mp/connection.hpp")
#include "mp/connection.hpp"
#endif
#if __has_include("mp/queues.hpp")
#include "mp/queues.hpp"
#endif
#if __has_include("mp/managers.hpp")
#include "mp/managers.hpp"
#endif
#if __has_include("mp/pool.hpp")
#include "mp/pool.hpp"
#endif
