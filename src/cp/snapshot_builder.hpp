// Builds the data plane's immutable Snapshot from a validated Config: the routing table
// (rte_fib), the per-port instance index, pre-encoded DHCP options and the worker plan.
// Runs on the control plane, never on a worker; failure leaves nothing behind.
#pragma once

#include <expected>
#include <functional>
#include <memory>
#include <string>

#include "calyx/config.hpp"
#include "cp/site_routes.hpp"
#include "dp/snapshot.hpp"

namespace calyx::cp {

// What the snapshot needs from whoever owns the long-lived resources.
struct SnapshotInputs {
    // Port slot of an instance's port.
    std::function<uint16_t(const config::InstanceConfig&)> port_slot;
    // Connection-tracking zone of a network; must stay the same across snapshots.
    std::function<uint16_t(const config::NetworkConfig&)> zone;
    // An instance's account (dp/limits.hpp): the same for as long as connections are charged
    // to it, and no other instance's. Unset: the port slot (enough where slots are never
    // reused for another instance, as in tests and benchmarks).
    std::function<uint16_t(const config::InstanceConfig&)> account;
    dp::ConnTable* conntrack = nullptr;
    // With an uplink in the config: its port slot and MAC, the masquerade port allocator and
    // the ARP cache (all owned by the caller, living as long as the uplink).
    uint16_t uplink_slot = dp::kMaxPorts;
    MacAddr uplink_mac;
    dp::NatPortAllocator* nat = nullptr;
    dp::NeighborTable* neighbors = nullptr;
    // With a host interface in the config: its tap's port slot (polled like the uplink).
    uint16_t host_slot = dp::kMaxPorts;
    // Routes imported from the site, already checked (check_imported): routed by, below the
    // site's own addresses (this host's instances, gateways and broadcasts win).
    const std::vector<SiteRoute>* site_routes = nullptr;
};

std::expected<std::unique_ptr<dp::Snapshot>, std::string> build_snapshot(
    const config::Config& cfg, const SnapshotInputs& in, uint64_t generation);

// Creates and frees a routing table as large as every snapshot's: its memory (64 MB for
// DIR24-8) is then faulted in and already zeroed (DPDK zeroes on free), so that the next
// build_snapshot does not pay for it. For a successor, while its predecessor still serves.
void warm_routing_table_memory();

}  // namespace calyx::cp
