#include "dp/icmp.hpp"

#include <cstring>

#include "calyx/headers.hpp"

namespace calyx::dp {
namespace {
constexpr uint8_t kDefaultTtl = 64;
constexpr size_t kIcmpErrorMaxDatagram = 576;
}  // namespace

void make_echo_reply(Frame& f, const PacketMeta& m, MacAddr gateway_mac) noexcept {
    auto* eth = header_at<EtherHdr>(f.data(), f.len, 0);
    auto* ip = header_at<Ipv4Hdr>(f.data(), f.len, m.l3_offset);
    auto* icmp_hdr = header_at<IcmpHdr>(f.data(), f.len, m.l4_offset);
    eth->dst = eth->src;
    eth->src = gateway_mac;
    const Be32 requester = ip->src;
    ip->src = ip->dst;
    ip->dst = requester;
    ip->ttl = kDefaultTtl;
    ip->checksum = 0;
    ip->checksum = internet_checksum(ip, ip->header_length());
    // Only the type byte changes (8 -> 0): the high byte of the first 16-bit word.
    const uint16_t old_word = static_cast<uint16_t>(icmp_hdr->type | icmp_hdr->code << 8);
    icmp_hdr->type = icmp::kEchoReply;
    const uint16_t new_word = static_cast<uint16_t>(icmp_hdr->type | icmp_hdr->code << 8);
    icmp_hdr->checksum = checksum_update16(icmp_hdr->checksum, old_word, new_word);
}

bool may_send_icmp_error(const Frame& f, const PacketMeta& m) noexcept {
    const auto* ip = header_at<Ipv4Hdr>(f.data(), f.len, m.l3_offset);
    if (!ip || !ip->is_first_fragment()) return false;
    const Ipv4Addr src = Ipv4Addr::from_be(ip->src);
    const Ipv4Addr dst = Ipv4Addr::from_be(ip->dst);
    if (src.is_zero() || src.is_limited_broadcast() || src.is_multicast()) return false;
    if (dst.is_limited_broadcast() || dst.is_multicast()) return false;
    if (ip->protocol == ipproto::kIcmp) {
        const auto* h = header_at<IcmpHdr>(f.data(), f.len, m.l4_offset);
        // Errors are never sent about errors; only queries (echo and the like) qualify.
        if (!h || !(h->type == icmp::kEchoRequest || h->type == icmp::kEchoReply ||
                    h->type == 13 || h->type == 15 || h->type == 17))
            return false;
    }
    return true;
}

bool make_icmp_error(Frame& f, const PacketMeta& m, uint8_t type, uint8_t code, Ipv4Addr from,
                     MacAddr gateway_mac, uint16_t mtu) noexcept {
    constexpr uint32_t kAdded = sizeof(Ipv4Hdr) + sizeof(IcmpHdr);
    const uint32_t l3 = m.l3_offset;
    const uint32_t quoted =
        std::min<uint32_t>(f.len - l3, kIcmpErrorMaxDatagram - static_cast<uint32_t>(kAdded));
    if (f.headroom() < kAdded) return false;
    const EtherHdr old_eth = *header_at<EtherHdr>(f.data(), f.len, 0);
    const Be32 original_src = header_at<Ipv4Hdr>(f.data(), f.len, l3)->src;

    // [eth][orig ip ...] -> [eth][new ip][icmp][orig ip (truncated)]: grow at the front and
    // rebuild the headers there, leaving the quoted datagram where it is.
    f.prepend(kAdded);
    f.len = l3 + kAdded + quoted;
    auto* eth = header_at<EtherHdr>(f.data(), f.len, 0);
    eth->dst = old_eth.src;
    eth->src = gateway_mac;
    eth->type = Be16::from_host(ethertype::kIpv4);

    auto* ip = header_at<Ipv4Hdr>(f.data(), f.len, l3);
    *ip = Ipv4Hdr{};
    ip->version_ihl = 0x45;
    ip->tos = 0xc0;  // internetwork control, as Linux marks its ICMP errors
    ip->total_length = Be16::from_host(static_cast<uint16_t>(kAdded + quoted));
    ip->ttl = kDefaultTtl;
    ip->protocol = ipproto::kIcmp;
    ip->src = from.to_be();
    ip->dst = original_src;
    ip->checksum = internet_checksum(ip, sizeof(Ipv4Hdr));

    auto* h = header_at<IcmpHdr>(f.data(), f.len, l3 + sizeof(Ipv4Hdr));
    h->type = type;
    h->code = code;
    h->checksum = 0;
    h->id = Be16{0};
    h->seq = Be16::from_host(mtu);
    h->checksum = internet_checksum(h, sizeof(IcmpHdr) + quoted);
    return true;
}

}  // namespace calyx::dp
