#include "dp/arp.hpp"

#include <rte_fib.h>

#include "calyx/headers.hpp"
#include "dp/neighbor.hpp"
#include "dp/route.hpp"

namespace calyx::dp {
namespace {

constexpr uint16_t kArpRequest = 1;
constexpr uint16_t kArpReply = 2;
constexpr uint16_t kHardwareEthernet = 1;

// Decides and, when answering, rewrites. Returns the drop reason or nullopt for a reply.
std::optional<DropReason> answer(Frame& f, const PacketMeta& m, const InstanceView& inst,
                                 MacAddr gateway_mac) {
    auto* eth = header_at<EtherHdr>(f.data(), f.len, 0);
    auto* arp = header_at<ArpHdr>(f.data(), f.len, m.l3_offset);
    if (!arp || arp->htype.host() != kHardwareEthernet ||
        arp->ptype.host() != ethertype::kIpv4 || arp->hlen != 6 || arp->plen != 4)
        return DropReason::arp_malformed;
    const Ipv4Addr spa = Ipv4Addr::from_be(arp->spa);
    const Ipv4Addr tpa = Ipv4Addr::from_be(arp->tpa);
    // 0.0.0.0 is an address probe (RFC 5227) by an instance that has no address yet.
    if (arp->sha != inst.mac || (spa != inst.ipv4 && !spa.is_zero()))
        return DropReason::arp_sender_spoofed;
    if (arp->oper.host() != kArpRequest) return DropReason::arp_not_request;
    if (spa == tpa) return DropReason::arp_gratuitous;
    if (tpa == inst.ipv4) return DropReason::arp_target_self;

    arp->oper = Be16::from_host(kArpReply);
    arp->tha = arp->sha;
    arp->tpa = arp->spa;
    arp->sha = gateway_mac;
    arp->spa = tpa.to_be();
    eth->dst = inst.mac;
    eth->src = gateway_mac;
    // Ethernet padding of the request is harmless in the reply; keep the frame as is.
    return std::nullopt;
}

// Whether calyx answers ARP on the uplink for `ip`: its own address there, and the public
// instances' addresses, so that an upstream router on the segment reaches them directly.
bool answered_on_uplink(const Snapshot& snap, Ipv4Addr ip) {
    if (ip == snap.uplink->address) return true;
    uint32_t dst = ip.value;
    uint64_t nh = 0;
    rte_fib_lookup_bulk(snap.fib, &dst, &nh, 1);
    if (NextHop::kind(static_cast<uint32_t>(nh)) != NextHopKind::instance) return false;
    const InstanceView* inst = snap.instance_on_port(static_cast<uint16_t>(NextHop::index(static_cast<uint32_t>(nh))));
    return inst && snap.networks[inst->network].kind == NetworkKind::public_;
}

// ARP from the uplink's segment: learn the sender (the gateway's MAC comes this way), answer
// requests for what calyx answers for, with the uplink's own MAC. An ARP whose sender hardware
// address is not its Ethernet source is forged or relayed by something calyx cannot trust:
// neither learnt from nor answered. A claim that a known neighbour moved is verified first
// (dp/neighbor.hpp).
std::optional<DropReason> uplink_arp(Frame& f, PacketMeta& m, const Snapshot& snap, uint64_t now_ns) {
    auto* eth = header_at<EtherHdr>(f.data(), f.len, 0);
    auto* arp = header_at<ArpHdr>(f.data(), f.len, m.l3_offset);
    if (!arp || arp->htype.host() != kHardwareEthernet ||
        arp->ptype.host() != ethertype::kIpv4 || arp->hlen != 6 || arp->plen != 4)
        return DropReason::arp_malformed;
    if (arp->sha != eth->src) return DropReason::arp_sender_mismatch;
    const UplinkView& up = *snap.uplink;
    const Ipv4Addr spa = Ipv4Addr::from_be(arp->spa);
    const Ipv4Addr tpa = Ipv4Addr::from_be(arp->tpa);
    const uint16_t oper = arp->oper.host();
    const bool request = oper == kArpRequest;
    const bool for_us = request && spa != tpa && answered_on_uplink(snap, tpa);
    Learned learned;
    if (up.subnet.contains(spa) && spa != up.address && !spa.is_zero())
        learned = snap.neighbors->learn(spa, arp->sha, now_ns, for_us);
    if (for_us) {
        arp->oper = Be16::from_host(kArpReply);
        arp->tha = arp->sha;
        arp->tpa = arp->spa;
        arp->sha = up.mac;
        arp->spa = tpa.to_be();
        eth->dst = arp->tha;
        eth->src = up.mac;
        m.verdict = Verdict::reply;
        return std::nullopt;
    }
    if (learned.outcome == Learned::held) return DropReason::arp_change_unverified;
    // Requests for other hosts (and announcements) may refresh a known neighbour, but are
    // still not for calyx: counted as such. A reply it learnt from was for calyx.
    if (request) return DropReason::arp_not_for_us;
    if (learned) {
        m.verdict = Verdict::consumed;
        return std::nullopt;
    }
    return DropReason::arp_not_request;
}

}  // namespace

void arp_stage(Batch& batch, const Snapshot& snap, WorkerContext& ctx) noexcept {
    for (uint16_t i = 0; i < batch.count; ++i) {
        PacketMeta& m = batch.meta[i];
        if (m.verdict != Verdict::pending || !m.is_arp) continue;
        if (snap.uplink && m.in_port == snap.uplink->port) {
            if (auto reason = uplink_arp(batch.frames[i], m, snap, ctx.now_ns))
                batch.drop(i, *reason);
            else if (m.verdict == Verdict::reply)
                bump(ctx.counters.arp_replies);
            continue;
        }
        const InstanceView* inst = snap.instance_on_port(m.in_port);
        if (!inst) {  // a port the snapshot does not name (being added or removed)
            batch.drop(i, DropReason::ethertype_unsupported);
            continue;
        }
        if (auto reason = answer(batch.frames[i], m, *inst, snap.gateway_mac)) {
            batch.drop(i, *reason);
            continue;
        }
        m.verdict = Verdict::reply;
        bump(ctx.counters.arp_replies);
    }
}

}  // namespace calyx::dp
