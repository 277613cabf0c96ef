#include "dp/forward.hpp"

#include "calyx/headers.hpp"
#include "dp/icmp.hpp"
#include "dp/route.hpp"

namespace calyx::dp {
namespace {

// Replaces packet i by an ICMP error back to its sender when RFC 1812 and the rate limit
// allow; the original is counted as dropped under `reason` either way.
void reject_with_icmp(Batch& batch, uint16_t i, DropReason reason, uint8_t type, uint8_t code,
                      uint16_t mtu, const Snapshot& snap, WorkerContext& ctx) {
    PacketMeta& m = batch.meta[i];
    Frame& f = batch.frames[i];
    const InstanceView* from = snap.instance_on_port(m.in_port);
    if (!from || !may_send_icmp_error(f, m)) {
        batch.drop(i, reason);
        return;
    }
    if (!ctx.icmp_budget.take(ctx.now_ns, snap.icmp_errors_per_second, snap.icmp_errors_burst)) {
        bump(ctx.counters.icmp_errors_rate_limited);
        batch.drop(i, reason);
        return;
    }
    const Ipv4Addr gateway = snap.networks[from->network].gateway;
    if (!make_icmp_error(f, m, type, code, gateway, snap.gateway_mac, mtu)) {
        batch.drop(i, reason);
        return;
    }
    ctx.counters.count_drop(m.in_port, reason);
    bump(ctx.counters.icmp_errors_sent);
    m.verdict = Verdict::reply;
}

}  // namespace

void forward_stage(Batch& batch, const Snapshot& snap, WorkerContext& ctx) noexcept {
    for (uint16_t i = 0; i < batch.count; ++i) {
        PacketMeta& m = batch.meta[i];
        if (m.verdict != Verdict::pending || !m.is_ipv4) continue;
        Frame& f = batch.frames[i];
        switch (NextHop::kind(m.next_hop)) {
            case NextHopKind::instance: break;
            case NextHopKind::unassigned:
                reject_with_icmp(batch, i, DropReason::no_route, icmp::kDestUnreachable,
                                 icmp::kHostUnreachable, 0, snap, ctx);
                continue;
            default:
                reject_with_icmp(batch, i, DropReason::no_route, icmp::kDestUnreachable,
                                 icmp::kNetUnreachable, 0, snap, ctx);
                continue;
        }
        const uint16_t out_port = static_cast<uint16_t>(NextHop::index(m.next_hop));
        const InstanceView* to = snap.instance_on_port(out_port);
        if (!to) {  // the snapshot routes only to its own instances; defensive
            batch.drop(i, DropReason::no_route);
            continue;
        }
        if (out_port == m.in_port) {
            batch.drop(i, DropReason::hairpin);
            continue;
        }
        auto* ip = header_at<Ipv4Hdr>(f.data(), f.len, m.l3_offset);
        if (ip->ttl <= 1) {
            reject_with_icmp(batch, i, DropReason::ttl_exceeded, icmp::kTimeExceeded, 0, 0, snap,
                             ctx);
            continue;
        }
        const uint16_t mtu = snap.networks[to->network].mtu;
        if (ip->total_length.host() > mtu) {
            if (ip->frag.host() & Ipv4Hdr::kDontFragment)
                reject_with_icmp(batch, i, DropReason::mtu_exceeded, icmp::kDestUnreachable,
                                 icmp::kFragmentationNeeded, mtu, snap, ctx);
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
        eth->dst = to->mac;
        eth->src = snap.gateway_mac;
        m.out_port = out_port;
        m.verdict = Verdict::forward;
    }
}

}  // namespace calyx::dp
