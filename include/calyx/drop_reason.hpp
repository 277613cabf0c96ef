// The one list of reasons a packet is dropped. It yields the enum, the counter index, the
// Prometheus `reason` label and the text `calyxctl drops` prints; every dropped packet is
// counted under exactly one of these.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace calyx {

// X(identifier, "what happened")
#define CALYX_DROP_REASONS(X)                                                                  \
    X(runt_frame, "frame shorter than an Ethernet header")                                     \
    X(multi_segment, "frame spread over several buffers")                                      \
    X(oversize_frame, "longer than a packet buffer (a guest's long descriptor chain): refused before it was copied") \
    X(ethertype_unsupported, "neither IPv4 nor ARP (VLAN tags and IPv6 are not served)")       \
    X(src_mac_spoofed, "source MAC is not the instance's own")                                 \
    X(dst_mac_not_gateway, "unicast frame not addressed to calyx (the gateway MAC; the uplink's own MAC on the uplink)") \
    X(arp_malformed, "ARP that is truncated or not Ethernet/IPv4")                             \
    X(arp_sender_spoofed, "ARP sender address is not the instance's own")                      \
    X(arp_not_request, "ARP reply or unknown ARP operation")                                   \
    X(arp_gratuitous, "gratuitous ARP (announcements are not answered)")                       \
    X(arp_target_self, "ARP for the instance's own address")                                   \
    X(ipv4_malformed, "bad IPv4 version, header length, total length or checksum")            \
    X(src_ipv4_spoofed, "IPv4 source is not the instance's own")                               \
    X(l4_malformed, "truncated TCP, UDP or ICMP header")                                       \
    X(dhcp_malformed, "DHCP that is truncated or has bad option lengths")                      \
    X(dhcp_unknown_client, "DHCP from a client hardware address that is not the instance's")   \
    X(dhcp_not_for_us, "DHCP request naming another server, or a message a server ignores")    \
    X(to_gateway_unhandled, "addressed to the gateway but neither ICMP echo nor DHCP")         \
    X(ttl_exceeded, "TTL reached zero (ICMP time exceeded sent unless rate-limited)")          \
    X(no_route, "no route to the destination (ICMP unreachable sent unless rate-limited)")     \
    X(mtu_exceeded, "larger than the egress MTU (ICMP fragmentation needed sent if DF)")       \
    X(sg_no_egress_rule, "new connection: no egress rule of the source instance allows it")     \
    X(sg_no_ingress_rule, "new connection: no ingress rule of the destination instance allows it") \
    X(sg_revoked, "connection cut: the current rules no longer allow it")                      \
    X(ct_invalid_new, "no tracked connection and not a valid first packet (e.g. TCP without SYN)") \
    X(ct_invalid_state, "not valid in the connection's state (flags, direction, ICMP id)")     \
    X(ct_invalid_tcp_flags, "TCP flag combination no stack sends")                              \
    X(ct_out_of_window, "TCP sequence or acknowledgment outside the tracked window")            \
    X(ct_table_full, "new connection refused: the connection table is full and no unanswered connection could be evicted") \
    X(ct_icmp_error_unmatched, "ICMP error that quotes no tracked connection")                  \
    X(icmp_redirect_or_quench, "ICMP redirect or source quench (never forwarded, not even about a tracked connection)") \
    X(fragment_unmatched, "fragment of a datagram whose first fragment was not allowed or not seen") \
    X(martian_destination, "destination is multicast, broadcast or 0.0.0.0")                  \
    X(martian_source, "from the uplink with a source this host owns, one no router accepts (0/8, 127/8, multicast, 240/4), or another host's instance sent by a neighbour its route does not lead to") \
    X(site_source_unrouted, "from the uplink with a source inside a site network that no instance here has and no imported route leads to (no host announced it, or BIRD has not learnt it yet)") \
    X(uplink_transit, "from the uplink and routed back to it (calyx is no transit router)")    \
    X(arp_not_for_us, "ARP on the uplink for an address calyx does not answer for")            \
    X(arp_sender_mismatch, "ARP on the uplink whose sender hardware address is not its Ethernet source") \
    X(arp_change_unverified, "ARP on the uplink giving a known neighbour a new MAC: held until the known MAC fails to answer probes") \
    X(private_isolated, "a private network has no traffic to or from outside the site")       \
    X(nat_unsolicited, "new connection from outside to a nat network (only replies come in)")  \
    X(nat_exhausted, "no free masquerade port towards that destination")                      \
    X(nat_unsupported, "protocol a nat network cannot use outside (only TCP, UDP, ICMP echo)")  \
    X(nat_no_mapping, "to the uplink address but no masquerade mapping matches (nor a ping)")  \
    X(neighbor_unresolved, "next hop on the uplink not resolved by ARP yet (request sent)")    \
    X(hairpin, "routed back out of the port it came in on")                                    \
    X(port_down, "egress port has no connected peer")                                          \
    X(tx_full, "egress queue full")                                                            \
    X(no_buffer, "no packet buffer for a generated reply")                                     \
    X(limit_connections, "new connection refused: the instance holds its limits.connections")  \
    X(limit_new_connections_per_second, "new connection refused: the instance opens more than its limits.new_connections_per_second") \
    X(limit_nat_ports, "new connection refused: the instance holds its limits.nat_ports towards that destination")

enum class DropReason : uint8_t {
#define CALYX_X(id, text) id,
    CALYX_DROP_REASONS(CALYX_X)
#undef CALYX_X
};

constexpr size_t kDropReasonCount = 0
#define CALYX_X(id, text) +1
    CALYX_DROP_REASONS(CALYX_X)
#undef CALYX_X
    ;

struct DropReasonInfo {
    std::string_view name;  // metric label and calyxctl key
    std::string_view text;  // human explanation
};

inline constexpr std::array<DropReasonInfo, kDropReasonCount> kDropReasons{{
#define CALYX_X(id, text) {#id, text},
    CALYX_DROP_REASONS(CALYX_X)
#undef CALYX_X
}};

constexpr const DropReasonInfo& drop_reason_info(DropReason r) {
    return kDropReasons[static_cast<size_t>(r)];
}

}  // namespace calyx
