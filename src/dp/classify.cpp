#include "dp/classify.hpp"

#include <cstring>

#include "calyx/headers.hpp"
#include "dp/dhcp.hpp"

namespace calyx::dp {
namespace {

// Whether an IPv4 header's checksum is right: its one's complement sum (RFC 1071) is all
// ones. Summed a 32-bit word at a time (a header is whole 32-bit words), half the additions of
// the 16-bit loop of internet_checksum(); folding the 64-bit total with end-around carries
// gives the same one's complement sum.
bool ipv4_checksum_ok(const Ipv4Hdr* ip, size_t ihl) {
    const auto* p = reinterpret_cast<const uint8_t*>(ip);
    uint64_t sum = 0;
    for (size_t k = 0; k < ihl; k += 4) {
        uint32_t w;
        std::memcpy(&w, p + k, 4);
        sum += w;
    }
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return sum == 0xffff;
}

// Parses and validates the IPv4 header and, for first fragments, the L4 header's presence.
// Returns a drop reason, or nullopt when the packet is well formed.
std::optional<DropReason> classify_ipv4(Frame& f, PacketMeta& m) {
    auto* ip = header_at<Ipv4Hdr>(f.data(), f.len, m.l3_offset);
    if (!ip || ip->version() != 4 || ip->header_length() < sizeof(Ipv4Hdr))
        return DropReason::ipv4_malformed;
    const size_t ihl = ip->header_length();
    const size_t total = ip->total_length.host();
    const size_t available = f.len - m.l3_offset;
    if (ihl > available || total < ihl || total > available) return DropReason::ipv4_malformed;
    if (!ipv4_checksum_ok(ip, ihl)) return DropReason::ipv4_malformed;
    // Ethernet pads short frames; what follows the IPv4 datagram is not part of it.
    f.len = static_cast<uint32_t>(m.l3_offset + total);

    m.is_ipv4 = true;
    m.ip_proto = ip->protocol;
    m.l4_offset = static_cast<uint8_t>(m.l3_offset + ihl);
    if (!ip->is_first_fragment()) return std::nullopt;  // no L4 header here

    size_t need = 0;
    switch (ip->protocol) {
        case ipproto::kTcp: {
            auto* tcp = header_at<TcpHdr>(f.data(), f.len, m.l4_offset);
            if (!tcp || tcp->header_length() < sizeof(TcpHdr)) return DropReason::l4_malformed;
            need = tcp->header_length();
            break;
        }
        case ipproto::kUdp: need = sizeof(UdpHdr); break;
        case ipproto::kIcmp: need = sizeof(IcmpHdr); break;
        default: return std::nullopt;
    }
    // A first fragment may legally carry less than the whole L4 header only in attacks
    // (RFC 1858 tiny fragments); treat it as malformed.
    if (f.len - m.l4_offset < need) return DropReason::l4_malformed;
    return std::nullopt;
}

// 0.0.0.0 is a legitimate source only for a DHCP client asking for its address.
bool is_dhcp_client_without_address(const Frame& f, const PacketMeta& m) {
    if (m.ip_proto != ipproto::kUdp) return false;
    auto* ip = header_at<Ipv4Hdr>(f.data(), f.len, m.l3_offset);
    auto* udp = header_at<UdpHdr>(f.data(), f.len, m.l4_offset);
    return ip && udp && !ip->is_fragment() && udp->src_port.host() == kDhcpClientPort &&
           udp->dst_port.host() == kDhcpServerPort;
}

}  // namespace

void classify_stage(Batch& batch, const Snapshot& snap, WorkerContext&) noexcept {
    for (uint16_t i = 0; i < batch.count; ++i) {
        PacketMeta& m = batch.meta[i];
        if (m.verdict != Verdict::pending) continue;
        Frame& f = batch.frames[i];
        const auto* eth = header_at<EtherHdr>(f.data(), f.len, 0);
        if (!eth) {
            batch.drop(i, DropReason::runt_frame);
            continue;
        }
        const uint16_t type = eth->type.host();
        if (type != ethertype::kIpv4 && type != ethertype::kArp) {
            batch.drop(i, DropReason::ethertype_unsupported);
            continue;
        }
        const InstanceView* inst = snap.instance_on_port(m.in_port);
        if (inst && eth->src != inst->mac) {
            batch.drop(i, DropReason::src_mac_spoofed);
            continue;
        }
        // Instances address the gateway MAC; the uplink's neighbours address the uplink's own.
        const bool from_uplink = snap.uplink && m.in_port == snap.uplink->port;
        const MacAddr& own_mac = from_uplink ? snap.uplink->mac : snap.gateway_mac;
        if (eth->dst != own_mac && !eth->dst.is_broadcast()) {
            batch.drop(i, DropReason::dst_mac_not_gateway);
            continue;
        }
        m.l3_offset = sizeof(EtherHdr);
        if (type == ethertype::kArp) {
            m.is_arp = true;
            continue;
        }
        if (auto reason = classify_ipv4(f, m)) {
            batch.drop(i, *reason);
            continue;
        }
        if (inst) {
            const auto* ip = header_at<Ipv4Hdr>(f.data(), f.len, m.l3_offset);
            const Ipv4Addr src = Ipv4Addr::from_be(ip->src);
            if (src != inst->ipv4 && !(src.is_zero() && is_dhcp_client_without_address(f, m))) {
                batch.drop(i, DropReason::src_ipv4_spoofed);
                continue;
            }
        }
    }
}

}  // namespace calyx::dp
