#include "dp/arp.hpp"

#include "calyx/headers.hpp"

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

}  // namespace

void arp_stage(Batch& batch, const Snapshot& snap, WorkerContext& ctx) noexcept {
    for (uint16_t i = 0; i < batch.count; ++i) {
        PacketMeta& m = batch.meta[i];
        if (m.verdict != Verdict::pending || !m.is_arp) continue;
        const InstanceView* inst = snap.instance_on_port(m.in_port);
        if (!inst) {
            // ARP on ports without an instance (the uplink) is answered by the uplink issue's
            // responder; until then it is not served.
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
