// The poll loop of one worker lcore: receive a burst from each of its ports, run the
// pipeline, send what it decided, report an RCU quiescent state, repeat. It never blocks,
// allocates (beyond rte_vhost's mbufs) or logs; the only locks it takes are calyx's own
// per-pair transmit locks of vhost-user ports, and only while a pair is shared (io/vhost_tx.hpp).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

#include "dp/counters.hpp"
#include "dp/fragments.hpp"
#include "dp/snapshot.hpp"

struct rte_rcu_qsbr;
struct rte_ring;

namespace calyx::io {

class Port;

// What workers share with the control plane. The control plane owns it; workers read the
// published snapshot and the port table, write only their own counters.
struct DataplaneShared {
    std::atomic<const dp::Snapshot*> snapshot{nullptr};
    // Port slot -> port. An entry stays valid while any snapshot that names the slot may
    // still be read (the control plane clears it only after a grace period).
    std::array<std::atomic<Port*>, dp::kMaxPorts> ports{};
    rte_rcu_qsbr* grace = nullptr;
    // Frames the control plane sends out of the uplink (ARP requests): single producer (the
    // control plane), single consumer (worker 0, on its own transmit queue).
    rte_ring* uplink_control_tx = nullptr;
    std::atomic<bool> stop{false};
};

struct WorkerArgs {
    DataplaneShared* shared;
    unsigned index;  // worker number: RCU thread id and index into queues_by_worker
    dp::WorkerCounters* counters;
    dp::FragmentVerdicts* fragments;
};

// lcore entry point (rte_eal_remote_launch); `arg` is a WorkerArgs*.
int worker_main(void* arg);

}  // namespace calyx::io
