// The pipeline: the stages every batch goes through, composed at compile time. After it,
// every packet has a final verdict; drops are counted here, once, under their reason.
//
//   host -> classify -> arp -> nat_in -> route -> local -> policy -> forward -> commit -> nat_out
//
// host passes the host's own frames (host_interface) to the uplink before anything else
// looks at them: they are no instance's.
// nat_in translates replies to masqueraded connections back before anything looks at their
// destination; commit creates the connections of first packets only once forward let them
// out; nat_out rewrites outgoing ones after every check saw what the instance sent.
#pragma once

#include "dp/batch.hpp"
#include "dp/snapshot.hpp"
#include "dp/worker_context.hpp"

namespace calyx::dp {

void run_pipeline(Batch& batch, const Snapshot& snap, WorkerContext& ctx) noexcept;

}  // namespace calyx::dp
