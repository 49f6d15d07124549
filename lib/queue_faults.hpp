// lib/queue_faults.hpp — fault-injection points on the queue's rare paths (a ring switch or
// restart), between the stores that must each leave a valid state. For tests only: they set the
// hook in a child and kill it there, then check that the queue lost nothing and still works.
#pragma once

#include "mp/export.hpp"

namespace mp::detail {

enum class QueueFault {
  producer_switch_recorded = 1,  // the switch is recorded, its frame not yet committed
  producer_switch_committed,     // the frame is committed, the item not yet written
  producer_restart_half_done,    // the empty ring's tail is restarted, its head not yet
  consumer_switch_recorded,  // the consumers' new ring is stored, the head not yet past the frame
};
// Null in programs.
MP_API extern void (*queue_fault)(QueueFault);

}  // namespace mp::detail
