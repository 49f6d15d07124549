// concurrent.futures executors (mp/futures.hpp): CPython's argument checks, then a pool engine
// (lib/pool_engine.cpp) that breaks, as CPython's executor does, when a worker dies abruptly.
#include "mp/futures.hpp"

#include <algorithm>

namespace mp::futures::detail {

std::exception_ptr broken_process_pool(const std::string& message) {
  return std::make_exception_ptr(BrokenProcessPool(message));
}

std::shared_ptr<mp::detail::pool::Engine> make_executor_engine(
    const ProcessPoolExecutorOptions& options, mp::detail::pool::EngineConfig config) {
  const int workers = options.max_workers.value_or(static_cast<int>(cpu_count()));
  if (workers < 1) throw std::invalid_argument("max_workers must be greater than 0");
  if (options.max_tasks_per_child && *options.max_tasks_per_child < 1)
    throw std::invalid_argument("max_tasks_per_child must be >= 1");
  if (options.task_timeout && options.task_timeout->count() <= 0)
    throw std::invalid_argument("task_timeout must be positive");
  config.processes = workers;
  config.maxtasks = static_cast<std::uint64_t>(options.max_tasks_per_child.value_or(0));
  config.context = options.mp_context;
  config.task_timeout = options.task_timeout;
  config.broken_error = &broken_process_pool;
  config.name = "ProcessPoolExecutor";
  return mp::detail::pool::make_process_engine(std::move(config));
}

std::shared_ptr<mp::detail::pool::Engine> make_thread_executor_engine(
    std::optional<int> max_workers, mp::detail::pool::EngineConfig config) {
  const int workers = max_workers.value_or(std::min(32, static_cast<int>(cpu_count()) + 4));
  if (workers < 1) throw std::invalid_argument("max_workers must be greater than 0");
  config.processes = workers;
  config.name = "ThreadPoolExecutor";
  return mp::detail::pool::make_thread_engine(std::move(config));
}

}  // namespace mp::futures::detail
