// multiprocessing.Pool and ThreadPool (mp/pool.hpp): the checks CPython's Pool.__init__ makes,
// then an engine (lib/pool_engine.cpp).
#include "mp/pool.hpp"

namespace mp::detail::pool {

std::shared_ptr<Engine> make_pool_engine(const PoolOptions& options, EngineConfig config) {
  const int processes = options.processes.value_or(static_cast<int>(cpu_count()));
  if (processes < 1) throw std::invalid_argument("Number of processes must be at least 1");
  if (options.maxtasksperchild && *options.maxtasksperchild < 1)
    throw std::invalid_argument("maxtasksperchild must be a positive int or None");
  if (options.task_timeout && options.task_timeout->count() <= 0)
    throw std::invalid_argument("task_timeout must be positive");
  config.processes = processes;
  config.maxtasks = static_cast<std::uint64_t>(options.maxtasksperchild.value_or(0));
  config.context = options.context;
  config.task_timeout = options.task_timeout;
  config.name = "Pool";
  return make_process_engine(std::move(config));
}

std::shared_ptr<Engine> make_thread_pool_engine(std::optional<int> processes, EngineConfig config) {
  const int n = processes.value_or(static_cast<int>(cpu_count()));
  if (n < 1) throw std::invalid_argument("Number of processes must be at least 1");
  config.processes = n;
  return make_thread_engine(std::move(config));
}

}  // namespace mp::detail::pool
