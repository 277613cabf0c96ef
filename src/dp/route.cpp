#include "dp/route.hpp"

#include <rte_fib.h>

#include "calyx/headers.hpp"
#include "dp/local.hpp"
#include "dp/neighbor.hpp"

namespace calyx::dp {
namespace {

// RFC 1812 5.3.7: sources no router accepts from outside: this network (0/8), loopback,
// multicast, the reserved class E and the limited broadcast.
bool martian(Ipv4Addr src) {
    const uint32_t top = src.value >> 24;
    return top == 0 || top == 127 || src.is_multicast() || top >= 240;
}

// Whether `sender` (the frame's Ethernet source) is one of the next hops the site routes
// `nh`'s source via. An unresolved next hop is wanted, so the control plane resolves it and the
// flow's next packets pass.
bool sent_by_next_hop(const Snapshot& snap, uint32_t nh, const MacAddr& sender, uint64_t now_ns) {
    const uint32_t group = NextHop::index(nh);
    if (group >= snap.site_next_hops.size()) return false;
    const SiteNextHops& hops = snap.site_next_hops[group];
    for (uint8_t k = 0; k < hops.count; ++k) {
        MacAddr mac;
        if (!snap.neighbors->lookup(hops.hops[k], now_ns, mac))
            snap.neighbors->want(hops.hops[k], now_ns);
        else if (mac == sender)
            return true;
    }
    return false;
}

}  // namespace

void route_stage(Batch& batch, const Snapshot& snap, WorkerContext& ctx) noexcept {
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
        const uint32_t nh = static_cast<uint32_t>(hops[n + k]);
        const NextHopKind kind = NextHop::kind(nh);
        if (kind == NextHopKind::uplink) continue;
        const uint16_t i = from_uplink[k];
        if (kind == NextHopKind::site &&
            sent_by_next_hop(snap, nh, header_at<EtherHdr>(batch.frames[i].data(), batch.frames[i].len, 0)->src,
                             ctx.now_ns)) {
            batch.meta[i].from_site = true;
            continue;
        }
        // An address of a site network that neither an instance here nor an imported route
        // claims: no host announced it (or not yet). Apart from martian_source, so that an
        // operator tells a route BIRD has not learnt from a spoofed address of this host's.
        batch.drop(i, kind == NextHopKind::unassigned ? DropReason::site_source_unrouted : DropReason::martian_source);
    }
}

}  // namespace calyx::dp
