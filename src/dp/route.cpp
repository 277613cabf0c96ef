#include "dp/route.hpp"

#include <rte_fib.h>

#include "calyx/headers.hpp"
#include "dp/local.hpp"

namespace calyx::dp {
namespace {

// RFC 1812 5.3.7: sources no router accepts from outside: this network (0/8), loopback,
// multicast, the reserved class E and the limited broadcast.
bool martian(Ipv4Addr src) {
    const uint32_t top = src.value >> 24;
    return top == 0 || top == 127 || src.is_multicast() || top >= 240;
}

}  // namespace

void route_stage(Batch& batch, const Snapshot& snap, WorkerContext&) noexcept {
    // Destinations, then (for packets from the uplink) sources, in one bulk lookup.
    uint32_t ips[2 * kBurstSize];
    uint64_t hops[2 * kBurstSize];
    uint16_t which[kBurstSize];
    uint16_t from_uplink[kBurstSize];
    uint16_t n = 0, n_src = 0;
    const uint16_t uplink_port = snap.uplink ? snap.uplink->port : kNoPort;
    for (uint16_t i = 0; i < batch.count; ++i) {
        PacketMeta& m = batch.meta[i];
        if (m.verdict != Verdict::pending || !m.is_ipv4) continue;
        const Frame& f = batch.frames[i];
        const auto* ip = header_at<Ipv4Hdr>(f.data(), f.len, m.l3_offset);
        const Ipv4Addr dst = Ipv4Addr::from_be(ip->dst);
        if (dst.is_limited_broadcast()) {
            m.next_hop = NextHop::make(NextHopKind::local, kLocalBroadcast);
            continue;
        }
        if (dst.is_zero() || dst.is_multicast() || (dst.value >> 24) == 127) {
            batch.drop(i, DropReason::martian_destination);
            continue;
        }
        if (m.in_port == uplink_port && martian(Ipv4Addr::from_be(ip->src))) {
            batch.drop(i, DropReason::martian_source);
            continue;
        }
        ips[n] = dst.value;
        which[n++] = i;
        if (m.in_port == uplink_port) from_uplink[n_src++] = i;
    }
    if (n == 0) return;
    for (uint16_t k = 0; k < n_src; ++k) {
        const Frame& f = batch.frames[from_uplink[k]];
        const auto* ip = header_at<Ipv4Hdr>(f.data(), f.len, batch.meta[from_uplink[k]].l3_offset);
        ips[n + k] = Ipv4Addr::from_be(ip->src).value;
    }
    rte_fib_lookup_bulk(snap.fib, ips, hops, n + n_src);
    for (uint16_t k = 0; k < n; ++k) batch.meta[which[k]].next_hop = static_cast<uint32_t>(hops[k]);
    for (uint16_t k = 0; k < n_src; ++k) {
        // Whatever the site routes to itself (instances, their networks, gateways, the uplink
        // address) cannot come from outside. Translated replies have the remote as source.
        const NextHopKind kind = NextHop::kind(static_cast<uint32_t>(hops[n + k]));
        if (kind != NextHopKind::uplink) batch.drop(from_uplink[k], DropReason::martian_source);
    }
}

}  // namespace calyx::dp
