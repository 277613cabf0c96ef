// Frames the integration tests send, and predicates and accessors for the ones they expect,
// built on tests/support/frame_builder.hpp. Accessors return copies of the wire headers and
// must only be used on frames a predicate has already accepted.
#pragma once

#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <vector>

#include "calyx/headers.hpp"
#include "calyx/net.hpp"
#include "support/frame_builder.hpp"
#include "support/reference_checksum.hpp"
#include "vm_peer.hpp"

namespace calyx::test {

constexpr size_t kEthLen = sizeof(EtherHdr);

template <typename T>
inline std::optional<T> header_copy(const Bytes& f, size_t offset) {
    if (offset > f.size() || f.size() - offset < sizeof(T)) return std::nullopt;
    T h;
    std::memcpy(&h, f.data() + offset, sizeof(T));
    return h;
}

inline uint16_t eth_type(const Bytes& f) {
    auto e = header_copy<EtherHdr>(f, 0);
    return e ? e->type.host() : 0;
}
inline MacAddr eth_src(const Bytes& f) {
    return header_copy<EtherHdr>(f, 0).value().src;
}
inline MacAddr eth_dst(const Bytes& f) {
    return header_copy<EtherHdr>(f, 0).value().dst;
}
inline ArpHdr arp_of(const Bytes& f) {
    return header_copy<ArpHdr>(f, kEthLen).value();
}
inline Ipv4Hdr ipv4_of(const Bytes& f) {
    return header_copy<Ipv4Hdr>(f, kEthLen).value();
}
inline size_t l4_offset(const Bytes& f) {
    return kEthLen + ipv4_of(f).header_length();
}
inline IcmpHdr icmp_of(const Bytes& f) {
    return header_copy<IcmpHdr>(f, l4_offset(f)).value();
}
inline UdpHdr udp_of(const Bytes& f) {
    return header_copy<UdpHdr>(f, l4_offset(f)).value();
}

inline TcpHdr tcp_of(const Bytes& f) {
    return header_copy<TcpHdr>(f, l4_offset(f)).value();
}

inline bool is_ipv4(const Bytes& f) {
    if (eth_type(f) != ethertype::kIpv4) return false;
    auto ip = header_copy<Ipv4Hdr>(f, kEthLen);
    return ip && ip->version() == 4 && ip->header_length() >= sizeof(Ipv4Hdr) &&
           f.size() >= kEthLen + ip->header_length();
}
inline bool is_icmp(const Bytes& f) {
    return is_ipv4(f) && ipv4_of(f).protocol == ipproto::kIcmp &&
           header_copy<IcmpHdr>(f, l4_offset(f)).has_value();
}
inline bool is_udp(const Bytes& f) {
    return is_ipv4(f) && ipv4_of(f).protocol == ipproto::kUdp &&
           header_copy<UdpHdr>(f, l4_offset(f)).has_value();
}
inline bool is_tcp(const Bytes& f) {
    return is_ipv4(f) && ipv4_of(f).protocol == ipproto::kTcp &&
           header_copy<TcpHdr>(f, l4_offset(f)).has_value();
}

// ARP ------------------------------------------------------------------------------------------

inline Bytes arp_request(MacAddr sha, Ipv4Addr spa, Ipv4Addr tpa,
                         MacAddr eth_dst = MacAddr::broadcast()) {
    return FrameBuilder()
        .eth(sha, eth_dst, ethertype::kArp)
        .arp(1, sha, spa, MacAddr{}, tpa)
        .build();
}

inline bool is_arp(const Bytes& f) {
    return eth_type(f) == ethertype::kArp && header_copy<ArpHdr>(f, kEthLen).has_value();
}
// An ARP reply that says where `spa` is.
inline FramePredicate is_arp_reply_for(Ipv4Addr spa) {
    return [spa](const Bytes& f) {
        return is_arp(f) && arp_of(f).oper.host() == 2 && arp_of(f).spa.host() == spa.value;
    };
}

// ICMP -----------------------------------------------------------------------------------------

inline Bytes echo_request(MacAddr src_mac, MacAddr dst_mac, Ipv4Addr src, Ipv4Addr dst, uint16_t id,
                          uint16_t seq, uint8_t ttl = 64, size_t payload = 56) {
    return FrameBuilder()
        .eth(src_mac, dst_mac)
        .ipv4(src, dst, ipproto::kIcmp, ttl)
        .icmp_echo(id, seq, payload)
        .build();
}

// The answer a VM's stack gives to an echo request: same id, seq and payload, type 0.
inline Bytes echo_reply(MacAddr src_mac, MacAddr dst_mac, Ipv4Addr src, Ipv4Addr dst, uint16_t id,
                        uint16_t seq, uint8_t ttl = 64, size_t payload = 56) {
    return FrameBuilder()
        .eth(src_mac, dst_mac)
        .ipv4(src, dst, ipproto::kIcmp, ttl)
        .icmp_echo(id, seq, payload, icmp::kEchoReply)
        .build();
}

inline FramePredicate is_echo(uint8_t type, uint16_t id, uint16_t seq) {
    return [=](const Bytes& f) {
        if (!is_icmp(f)) return false;
        const auto ic = icmp_of(f);
        return ic.type == type && ic.code == 0 && ic.id.host() == id && ic.seq.host() == seq;
    };
}
inline FramePredicate is_echo_request(uint16_t id, uint16_t seq) {
    return is_echo(icmp::kEchoRequest, id, seq);
}
inline FramePredicate is_echo_reply(uint16_t id, uint16_t seq) {
    return is_echo(icmp::kEchoReply, id, seq);
}
// An ICMP error of `type`.
inline FramePredicate is_icmp_error(uint8_t type) {
    return [type](const Bytes& f) { return is_icmp(f) && icmp_of(f).type == type; };
}

// The IPv4 header quoted inside an ICMP error (right after the 8-byte ICMP header).
inline std::optional<Ipv4Hdr> quoted_ipv4(const Bytes& f) {
    return header_copy<Ipv4Hdr>(f, l4_offset(f) + sizeof(IcmpHdr));
}

// True if the IPv4 header checksum and, for a whole TCP, UDP or ICMP datagram, its L4
// checksum verify (support/reference_checksum.hpp: not calyx's own arithmetic).
inline bool ipv4_checksums_ok(const Bytes& f) {
    return is_ipv4(f) && ref::ipv4_checksum_errors(f.data() + kEthLen, f.size() - kEthLen).empty();
}

}  // namespace calyx::test
