#include "dp/host.hpp"

#include "calyx/headers.hpp"
#include "dp/neighbor.hpp"

namespace calyx::dp {
namespace {

constexpr uint16_t kArpRequest = 1;
constexpr uint16_t kArpReply = 2;
constexpr uint16_t kHardwareEthernet = 1;

// The kernel asks who has an address of the uplink subnet: the answer comes from the uplink's
// ARP cache, as if that neighbour had answered.
std::optional<DropReason> answer_from_cache(Frame& f, const Snapshot& snap, uint64_t now_ns) {
    auto* eth = header_at<EtherHdr>(f.data(), f.len, 0);
    auto* arp = header_at<ArpHdr>(f.data(), f.len, sizeof(EtherHdr));
    if (!arp || arp->htype.host() != kHardwareEthernet || arp->ptype.host() != ethertype::kIpv4 ||
        arp->hlen != 6 || arp->plen != 4)
        return DropReason::arp_malformed;
    if (arp->oper.host() != kArpRequest) return DropReason::arp_not_request;
    const Ipv4Addr spa = Ipv4Addr::from_be(arp->spa);
    const Ipv4Addr tpa = Ipv4Addr::from_be(arp->tpa);
    if (spa == tpa) return DropReason::arp_gratuitous;
    const UplinkView& up = *snap.uplink;
    if (!up.subnet.contains(tpa) || tpa == up.address || tpa == up.subnet.addr || tpa == up.subnet.broadcast())
        return DropReason::arp_not_for_us;
    const auto mac = snap.neighbors->lookup(tpa, now_ns);
    if (!mac) {
        snap.neighbors->want(tpa, now_ns);
        return DropReason::neighbor_unresolved;
    }
    arp->oper = Be16::from_host(kArpReply);
    arp->tha = arp->sha;
    arp->tpa = arp->spa;
    arp->sha = *mac;
    arp->spa = tpa.to_be();
    eth->dst = arp->tha;
    eth->src = *mac;
    return std::nullopt;
}

}  // namespace

void host_stage(Batch& batch, const Snapshot& snap, WorkerContext& ctx) noexcept {
    if (snap.host_port >= kMaxPorts || !snap.uplink) return;
    for (uint16_t i = 0; i < batch.count; ++i) {
        PacketMeta& m = batch.meta[i];
        if (m.verdict != Verdict::pending || m.in_port != snap.host_port) continue;
        Frame& f = batch.frames[i];
        const auto* eth = header_at<EtherHdr>(f.data(), f.len, 0);
        if (!eth) {
            batch.drop(i, DropReason::runt_frame);
            continue;
        }
        if (eth->src != snap.uplink->mac) {
            batch.drop(i, DropReason::src_mac_spoofed);
            continue;
        }
        switch (eth->type.host()) {
            case ethertype::kIpv4:
                m.out_port = snap.uplink->port;
                m.verdict = Verdict::forward;
                break;
            case ethertype::kArp:
                if (auto reason = answer_from_cache(f, snap, ctx.now_ns)) {
                    batch.drop(i, *reason);
                } else {
                    m.verdict = Verdict::reply;
                    bump(ctx.counters.arp_replies);
                }
                break;
            default: batch.drop(i, DropReason::ethertype_unsupported);
        }
    }
}

}  // namespace calyx::dp
