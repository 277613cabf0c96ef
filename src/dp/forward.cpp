#include "dp/forward.hpp"

#include <cstring>

#include "calyx/headers.hpp"
#include "dp/icmp.hpp"
#include "dp/neighbor.hpp"
#include "dp/route.hpp"

namespace calyx::dp {
namespace {

// Replaces packet i by an ICMP error back to its sender when RFC 1812 and the rate limit of
// the port it came from allow; the original is counted as dropped under `reason` either way.
void reject_with_icmp(Batch& batch, uint16_t i, DropReason reason, uint8_t type, uint8_t code,
                      uint16_t mtu, const Snapshot& snap, WorkerContext& ctx) {
    PacketMeta& m = batch.meta[i];
    Frame& f = batch.frames[i];
    const InstanceView* from = snap.instance_on_port(m.in_port);
    const bool from_uplink = snap.uplink && m.in_port == snap.uplink->port;
    // A packet translated by nat_in carries an instance's inside address: an error about it
    // would show that address outside.
    if ((!from && !from_uplink) || m.nat_translated_in || !may_send_icmp_error(f, m)) {
        batch.drop(i, reason);
        return;
    }
    if (!ctx.icmp_budget[m.in_port].take(ctx.now_ns, snap.icmp_errors_per_second, snap.icmp_errors_burst)) {
        bump(ctx.counters.icmp_errors_rate_limited);
        batch.drop(i, reason);
        return;
    }
    // From the address the sender knows calyx by: its gateway, or the uplink address.
    const Ipv4Addr source = from ? snap.networks[from->network].gateway : snap.uplink->address;
    const MacAddr mac = from ? snap.gateway_mac : snap.uplink->mac;
    if (!make_icmp_error(f, m, type, code, source, mac, mtu)) {
        batch.drop(i, reason);
        return;
    }
    ctx.counters.count_drop(m.in_port, reason);
    bump(ctx.counters.icmp_errors_sent);
    m.verdict = Verdict::reply;
}


// Where a routed packet goes at layer 2: the port, its MTU and the destination MAC. nullopt:
// dropped (the reason is set).
struct Egress {
    uint16_t port;
    uint16_t mtu;
    MacAddr src_mac;
    MacAddr dst_mac;
};

// Which of a multipath route's next hops a flow takes: addresses, protocol and (TCP, UDP)
// ports, so a flow keeps its path; fragments hash without ports (later ones have none), so a
// datagram's fragments stay together.
uint32_t path_hash(const Frame& f, const PacketMeta& m) {
    const auto* ip = header_at<Ipv4Hdr>(f.data(), f.len, m.l3_offset);
    uint64_t h = uint64_t{Ipv4Addr::from_be(ip->src).value} << 32 | Ipv4Addr::from_be(ip->dst).value;
    h ^= uint64_t{ip->protocol} << 24;
    if (!ip->is_fragment() && (m.ip_proto == ipproto::kTcp || m.ip_proto == ipproto::kUdp)) {
        uint32_t ports = 0;
        std::memcpy(&ports, f.data() + m.l4_offset, sizeof ports);
        h ^= uint64_t{ports} << 13;
    }
    h *= 0x9e3779b97f4a7c15ull;
    return static_cast<uint32_t>(h >> 32);
}

// The uplink neighbour a packet leaving by the uplink goes to: the gateway, the destination
// itself (on-link), or a next hop of its site route.
Ipv4Addr uplink_next_hop(const Frame& f, const PacketMeta& m, const Snapshot& snap) {
    const uint32_t index = NextHop::index(m.next_hop);
    if (NextHop::kind(m.next_hop) == NextHopKind::site) {
        const SiteNextHops& hops = snap.site_next_hops[index];  // the builder made the index
        return hops.hops[hops.count == 1 ? 0 : path_hash(f, m) % hops.count];
    }
    return index == kUplinkOnLink ? Ipv4Addr::from_be(header_at<Ipv4Hdr>(f.data(), f.len, m.l3_offset)->dst)
                                  : snap.uplink->gateway;
}

// Fills `out` field by field: a returned optional<Egress> was copied as one 16-byte load right
// after its narrow stores, a store-forwarding stall of ~15 cycles per packet.
bool egress_of(Batch& batch, uint16_t i, const Snapshot& snap, WorkerContext& ctx, Egress& out) {
    PacketMeta& m = batch.meta[i];
    const NextHopKind kind = NextHop::kind(m.next_hop);
    if (kind == NextHopKind::uplink || kind == NextHopKind::site) {
        const UplinkView& up = *snap.uplink;  // the routes exist only with an uplink
        if (m.in_port == up.port) {
            batch.drop(i, DropReason::uplink_transit);
            return false;
        }
        const Ipv4Addr next = uplink_next_hop(batch.frames[i], m, snap);
        if (!snap.neighbors->lookup(next, ctx.now_ns, out.dst_mac)) {
            snap.neighbors->want(next, ctx.now_ns);
            batch.drop(i, DropReason::neighbor_unresolved);
            return false;
        }
        out.port = up.port;
        out.mtu = up.mtu;
        out.src_mac = up.mac;
        return true;
    }
    const uint16_t out_port = static_cast<uint16_t>(NextHop::index(m.next_hop));
    const InstanceView* to = snap.instance_on_port(out_port);
    if (!to) {  // the snapshot routes only to its own instances; defensive
        batch.drop(i, DropReason::no_route);
        return false;
    }
    if (out_port == m.in_port) {
        batch.drop(i, DropReason::hairpin);
        return false;
    }
    out.port = out_port;
    out.mtu = to->mtu;
    out.src_mac = snap.gateway_mac;
    out.dst_mac = to->mac;
    return true;
}

// Host unreachable for an unassigned address of a network; not towards the uplink for
// addresses of `nat` and `private` networks, whose layout is nobody's business outside.
bool reveals_network(const Snapshot& snap, const PacketMeta& m) {
    if (!snap.uplink || m.in_port != snap.uplink->port) return false;
    const uint32_t net = NextHop::index(m.next_hop);
    return net >= snap.networks.size() || snap.networks[net].kind != NetworkKind::public_;
}

}  // namespace

void forward_stage(Batch& batch, const Snapshot& snap, WorkerContext& ctx) noexcept {
    for (uint16_t i = 0; i < batch.count; ++i) {
        PacketMeta& m = batch.meta[i];
        if (m.verdict != Verdict::pending || !m.is_ipv4) continue;
        Frame& f = batch.frames[i];
        switch (NextHop::kind(m.next_hop)) {
            case NextHopKind::instance:
            case NextHopKind::uplink:
            case NextHopKind::site: break;
            case NextHopKind::unassigned:
                if (reveals_network(snap, m))
                    batch.drop(i, DropReason::no_route);
                else
                    reject_with_icmp(batch, i, DropReason::no_route, icmp::kDestUnreachable,
                                     icmp::kHostUnreachable, 0, snap, ctx);
                continue;
            default:
                reject_with_icmp(batch, i, DropReason::no_route, icmp::kDestUnreachable,
                                 icmp::kNetUnreachable, 0, snap, ctx);
                continue;
        }
        Egress out;
        if (!egress_of(batch, i, snap, ctx, out)) continue;
        auto* ip = header_at<Ipv4Hdr>(f.data(), f.len, m.l3_offset);
        if (ip->ttl <= 1) {
            reject_with_icmp(batch, i, DropReason::ttl_exceeded, icmp::kTimeExceeded, 0, 0, snap,
                             ctx);
            continue;
        }
        if (ip->total_length.host() > out.mtu) {
            if (ip->frag.host() & Ipv4Hdr::kDontFragment)
                reject_with_icmp(batch, i, DropReason::mtu_exceeded, icmp::kDestUnreachable,
                                 icmp::kFragmentationNeeded, out.mtu, snap, ctx);
            else
                batch.drop(i, DropReason::mtu_exceeded);
            continue;
        }
        // TTL shares a 16-bit word with the protocol number.
        const uint16_t old_word = static_cast<uint16_t>(ip->ttl | ip->protocol << 8);
        --ip->ttl;
        const uint16_t new_word = static_cast<uint16_t>(ip->ttl | ip->protocol << 8);
        ip->checksum = checksum_update16(ip->checksum, old_word, new_word);

        auto* eth = header_at<EtherHdr>(f.data(), f.len, 0);
        eth->dst = out.dst_mac;
        eth->src = out.src_mac;
        m.out_port = out.port;
        m.verdict = Verdict::forward;
    }
}

}  // namespace calyx::dp
