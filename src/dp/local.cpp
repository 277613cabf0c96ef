#include "dp/local.hpp"

#include "calyx/headers.hpp"
#include "dp/dhcp.hpp"
#include "dp/icmp.hpp"
#include "dp/route.hpp"

namespace calyx::dp {
namespace {

// Packets for calyx from the uplink, or for the uplink address from anywhere. From the uplink
// to the address, with a host interface: the host's own stack's (nat_in translated replies to
// masqueraded connections already). Otherwise ping is answered (from the uplink address, so
// operators can check the way in); everything else found no masquerade mapping.
void local_uplink(Batch& batch, uint16_t i, const Snapshot& snap, WorkerContext& ctx) {
    PacketMeta& m = batch.meta[i];
    Frame& f = batch.frames[i];
    const auto* ip = header_at<Ipv4Hdr>(f.data(), f.len, m.l3_offset);
    const bool from_uplink = m.in_port == snap.uplink->port;
    const bool to_address = NextHop::index(m.next_hop) == kLocalUplinkAddress;
    if (from_uplink && to_address && snap.host_port < kMaxPorts) {
        m.out_port = snap.host_port;
        m.verdict = Verdict::forward;
        return;
    }
    if (to_address && !ip->is_fragment() && m.ip_proto == ipproto::kIcmp &&
        header_at<IcmpHdr>(f.data(), f.len, m.l4_offset)->type == icmp::kEchoRequest) {
        make_echo_reply(f, m, from_uplink ? snap.uplink->mac : snap.gateway_mac);
        m.verdict = Verdict::reply;
        bump(ctx.counters.icmp_echo_replies);
        return;
    }
    batch.drop(i, to_address ? DropReason::nat_no_mapping : DropReason::to_gateway_unhandled);
}

}  // namespace

void local_stage(Batch& batch, const Snapshot& snap, WorkerContext& ctx) noexcept {
    for (uint16_t i = 0; i < batch.count; ++i) {
        PacketMeta& m = batch.meta[i];
        if (m.verdict != Verdict::pending || !m.is_ipv4 ||
            NextHop::kind(m.next_hop) != NextHopKind::local)
            continue;
        if (snap.uplink && (m.in_port == snap.uplink->port ||
                            NextHop::index(m.next_hop) == kLocalUplinkAddress)) {
            local_uplink(batch, i, snap, ctx);
            continue;
        }
        const InstanceView* inst = snap.instance_on_port(m.in_port);
        Frame& f = batch.frames[i];
        const auto* ip = header_at<Ipv4Hdr>(f.data(), f.len, m.l3_offset);
        if (!inst || ip->is_fragment()) {
            batch.drop(i, DropReason::to_gateway_unhandled);
            continue;
        }
        if (m.ip_proto == ipproto::kUdp &&
            header_at<UdpHdr>(f.data(), f.len, m.l4_offset)->dst_port.host() == kDhcpServerPort) {
            const DhcpOutcome out =
                dhcp_respond(f, m, *inst, snap.networks[inst->network], snap.gateway_mac);
            if (out.verdict == Verdict::drop) {
                batch.drop(i, out.reason);
                continue;
            }
            m.verdict = out.verdict;
            if (out.reply) ctx.counters.count_dhcp_reply(*out.reply);
            if (out.released) bump(ctx.counters.dhcp_releases);
            if (out.declined) bump(ctx.counters.dhcp_declines);
            continue;
        }
        const bool to_gateway_address = NextHop::index(m.next_hop) == kLocalGatewayAddress;
        if (to_gateway_address && m.ip_proto == ipproto::kIcmp &&
            header_at<IcmpHdr>(f.data(), f.len, m.l4_offset)->type == icmp::kEchoRequest) {
            make_echo_reply(f, m, snap.gateway_mac);
            m.verdict = Verdict::reply;
            bump(ctx.counters.icmp_echo_replies);
            continue;
        }
        batch.drop(i, DropReason::to_gateway_unhandled);
    }
}

}  // namespace calyx::dp
