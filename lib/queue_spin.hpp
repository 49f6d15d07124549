// lib/queue_spin.hpp — how the calling thread's queue waits spin (lib/support/spin.hpp), for the
// pool engine (lib/pool_engine.cpp).
#pragma once

namespace mp::detail {

// The calling thread's next blocking QueueCore::get() spins at most kSpinMin before it sleeps;
// the budget adapts back up when items then come fast. For a wait with no item in sight (a new
// pool worker before its first task): a spin there only takes a CPU from the others.
void rest_queue_get_spin() noexcept;

}  // namespace mp::detail
