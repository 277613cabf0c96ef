// The pipeline: the stages every batch goes through, composed at compile time. After it,
// every packet has a final verdict; drops are counted here, once, under their reason.
//
//   classify -> arp -> route -> local -> policy -> forward
//
// NAT (the uplink issue) slots in between policy and forward.
#pragma once

#include "dp/batch.hpp"
#include "dp/snapshot.hpp"
#include "dp/worker_context.hpp"

namespace calyx::dp {

void run_pipeline(Batch& batch, const Snapshot& snap, WorkerContext& ctx) noexcept;

}  // namespace calyx::dp
