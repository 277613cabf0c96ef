// route: longest-prefix match of IPv4 destinations in the snapshot's rte_fib, one bulk lookup
// per batch.
//
// Reverse-path check of the uplink (strict, RFC 3704): a source that the site routes to
// itself (its instances, networks, gateways, the uplink address) never comes from outside.
// One exception: a source routed by an imported site route (another host's instance) is
// accepted when the frame came from one of that route's next hops, by its MAC: the
// neighbour it came from is the one the site routes it via. It is then a packet of the site
// (meta.from_site): never masqueraded, and only the destination's ingress rules apply.
//
// Reads:  meta.is_ipv4, the IPv4 destination (and source and Ethernet source, for packets
//         from the uplink); the uplink's ARP cache for the check.
// Writes: meta.next_hop, meta.from_site.
// Drops:  martian_destination (multicast, 0.0.0.0; limited and network broadcasts are sent
//         to the local stage because DHCP clients use them); martian_source (a packet from
//         the uplink whose source is one of this host's own addresses, or a site route's not
//         sent by one of its next hops: the same lookup, on the source, says so);
//         site_source_unrouted (a source inside a site network that no instance here has and
//         no imported route leads to: not announced, or not yet learnt).
#pragma once

#include <cstdint>

#include "dp/batch.hpp"
#include "dp/snapshot.hpp"
#include "dp/worker_context.hpp"

namespace calyx::dp {

// What a route points at: a kind in the top bits and an index below. rte_fib's 4-byte next
// hops hold 31 bits.
enum class NextHopKind : uint32_t {
    none = 0,        // no route: ICMP net unreachable
    local = 1,       // a gateway address or a broadcast: calyx itself
    instance = 2,    // index: the instance's port slot
    unassigned = 3,  // inside an instance network but no instance has it: host unreachable;
                     // index: the network (Snapshot::networks)
    uplink = 4,      // leaves by the uplink; index: kUplinkViaGateway or kUplinkOnLink
    site = 5,        // another host of the site (an imported route): leaves by the uplink
                     // to one of its next hops; index: Snapshot::site_next_hops
};

inline constexpr uint32_t kUplinkViaGateway = 0;  // next hop: the uplink's gateway
inline constexpr uint32_t kUplinkOnLink = 1;      // next hop: the destination itself

struct NextHop {
    static constexpr uint32_t kKindShift = 24;
    static constexpr uint32_t kIndexMask = (1u << kKindShift) - 1;

    static constexpr uint32_t make(NextHopKind kind, uint32_t index = 0) {
        return static_cast<uint32_t>(kind) << kKindShift | (index & kIndexMask);
    }
    static constexpr NextHopKind kind(uint32_t nh) {
        return static_cast<NextHopKind>(nh >> kKindShift);
    }
    static constexpr uint32_t index(uint32_t nh) { return nh & kIndexMask; }
};

void route_stage(Batch& batch, const Snapshot& snap, WorkerContext& ctx) noexcept;

}  // namespace calyx::dp
