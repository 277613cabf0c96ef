// The data plane's immutable view of the configuration. The control plane builds a Snapshot
// off the data path (cp/snapshot_builder.cpp), publishes it with one atomic pointer store, and
// frees the previous one only after every worker has passed a quiescent state (RCU). Workers
// read it without locks and never see half of a configuration.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "calyx/net.hpp"
#include "calyx/network_kind.hpp"
#include "dp/conntrack_state.hpp"
#include "dp/counters.hpp"
#include "dp/limits.hpp"
#include "dp/rules.hpp"

struct rte_fib;
extern "C" void rte_fib_free(struct rte_fib* fib);

namespace calyx::dp {

class ConnTable;
class NatPortAllocator;
class NeighborTable;

// The way out (config `uplink:`): an ethdev port with the compute host's public address.
struct UplinkView {
    uint16_t port = 0xffff;  // port slot; polled by every worker, each on its own queue
    MacAddr mac;             // the uplink port's own MAC (ARP replies, frames sent out)
    Ipv4Addr address;        // the host's address: NAT masquerade source, answered by ARP
    Ipv4Prefix subnet;       // on-link: reached directly by ARP
    Ipv4Addr gateway;        // next hop for everything else
    uint16_t mtu = 1500;
};

struct NetworkView {
    std::string name;
    uint16_t zone = 0;  // connection-tracking zone: stable for the network's lifetime
    NetworkKind kind = NetworkKind::public_;
    Ipv4Prefix cidr;
    Ipv4Addr gateway;
    uint16_t mtu = 1500;
    // DHCP options this network hands out, pre-encoded by the control plane (dp/dhcp.hpp):
    // everything but the message type (53) and END, so replying is a copy.
    std::vector<uint8_t> dhcp_lease_options;   // OFFER and ACK: includes lease times
    std::vector<uint8_t> dhcp_inform_options;  // ACK to INFORM: no lease times (RFC 2131 4.3.5)
};

struct InstanceView {
    std::string name;
    MacAddr mac;
    uint16_t network = 0;  // index into Snapshot::networks
    Ipv4Addr ipv4;
    uint16_t port = 0;     // port slot
    uint16_t account = 0;  // what its connections are charged to (dp/limits.hpp)
    // Its network's zone and MTU, copied here: every packet needs them, and reading them from
    // the network was a dependent load and a multiply after the instance's (stage_bench).
    uint16_t zone = 0;
    uint16_t mtu = 1500;
    InstanceLimits limits;
};
// One cache line per instance: the per-packet fields share the line with the name.
static_assert(sizeof(InstanceView) <= 64);

// The next hops of one route imported from the site (routing.import_table): hosts of the site
// on the uplink subnet, resolved by ARP like the uplink's gateway. Several: multipath, a flow
// takes one by hash (dp/forward.cpp).
struct SiteNextHops {
    static constexpr size_t kMaxPaths = 16;
    uint8_t count = 0;
    std::array<Ipv4Addr, kMaxPaths> hops{};
};

// One receive queue a worker polls: a vhost-user port's queue pair.
struct PolledQueue {
    uint16_t slot;
    uint16_t queue;
    bool operator==(const PolledQueue&) const = default;
};

struct Snapshot {
    uint64_t generation = 0;
    MacAddr gateway_mac;
    uint32_t icmp_errors_per_second = 1000;
    uint32_t icmp_errors_burst = 50;
    std::vector<NetworkView> networks;
    std::vector<InstanceView> instances;
    // Compiled security groups, indexed like `instances`.
    std::vector<std::shared_ptr<const InstancePolicy>> policies;  // shared by equal group lists
    CtTimeouts ct_timeouts;
    uint32_t fragment_timeout_s = 30;
    uint32_t idle_sleep_us = 0;  // a worker's longest sleep when idle; 0: pure polling
    ConnTable* conntrack = nullptr;  // not owned: outlives every snapshot
    std::optional<UplinkView> uplink;  // none: only the site's networks
    NatPortAllocator* nat = nullptr;  // not owned, outlives snapshots; set with `uplink`
    NeighborTable* neighbors = nullptr;  // the uplink's ARP cache; likewise
    // The host's own stack (config host_interface): a tap whose frames leave by the uplink and
    // which gets what comes for the uplink address and no masquerade mapping claims
    // (dp/host.hpp). kMaxPorts: none.
    uint16_t host_port = kMaxPorts;
    // Next hops of the imported site routes, indexed by a `site` next hop (dp/route.hpp).
    std::vector<SiteNextHops> site_next_hops;
    // The imported routes themselves, for calyxctl (the data plane reads only the FIB).
    struct SiteRouteView {
        Ipv4Prefix prefix;
        uint32_t next_hops = 0;  // index into site_next_hops
        uint8_t protocol = 0;    // who wrote it into the import table (bird: 12)
    };
    std::vector<SiteRouteView> site_routes;
    uint32_t import_table = 0;  // routing.import_table they came from (calyxctl routes says so)
    // port slot -> index into `instances`, or -1 when the slot holds no instance.
    std::vector<int32_t> instance_by_port = std::vector<int32_t>(kMaxPorts, -1);
    rte_fib* fib = nullptr;  // owned; see dp/route.hpp for the next-hop encoding
    // The (port slot, queue pair) pairs each worker polls, indexed by worker number. Every
    // queue pair of every instance port is polled by exactly one worker.
    std::vector<std::vector<PolledQueue>> queues_by_worker;

    Snapshot() = default;
    Snapshot(const Snapshot&) = delete;
    Snapshot& operator=(const Snapshot&) = delete;
    ~Snapshot() { rte_fib_free(fib); }

    const InstanceView* instance_on_port(uint16_t port) const {
        if (port >= instance_by_port.size()) return nullptr;
        const int32_t i = instance_by_port[port];
        return i < 0 ? nullptr : &instances[static_cast<size_t>(i)];
    }
};

}  // namespace calyx::dp
