// DHCP server for instance links (RFC 2131, options RFC 2132, classless routes RFC 3442,
// long options RFC 3396).
//
// Every instance has its own point-to-point link to calyx, and calyx is its only server, so a
// "lease" is fixed: the instance's configured address. The control plane encodes each
// network's options once (encode_dhcp_network_options) into NetworkView; the data path parses
// the request strictly (parse_dhcp) and rewrites the frame into the reply in place
// (dhcp_respond), copying the pre-encoded options.
//
// dhcp_respond
//   reads:    frame bytes; meta.l3_offset and meta.l4_offset, which classify has set for an
//             IPv4 UDP packet to port 67 (the UDP length is checked here against the frame)
//   writes:   the frame, when the verdict is `reply` (Ethernet/IPv4/UDP/BOOTP reply starting at
//             the frame's first byte, resized); nothing otherwise
//   verdicts: reply (OFFER, ACK, NAK), consumed (RELEASE, DECLINE), drop
//   drops:    dhcp_malformed, dhcp_unknown_client, dhcp_not_for_us, no_buffer
//
// parse_dhcp and dhcp_respond do not allocate, throw or log.
#pragma once

#include <cstddef>
#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <vector>

#include "calyx/drop_reason.hpp"
#include "calyx/headers.hpp"
#include "calyx/net.hpp"
#include "dp/batch.hpp"
#include "dp/counters.hpp"
#include "dp/frame.hpp"
#include "dp/snapshot.hpp"

namespace calyx::dp {

inline constexpr uint16_t kDhcpServerPort = 67;
inline constexpr uint16_t kDhcpClientPort = 68;
inline constexpr uint32_t kDhcpMagicCookie = 0x63825363;  // 99.130.83.99
inline constexpr uint16_t kBootpBroadcastFlag = 0x8000;
// BOOTP payload length replies are padded to: RFC 1542 clients may discard anything shorter.
inline constexpr size_t kBootpMinReplyLength = 300;
// Options that fit in the 576-byte IP datagram every client must accept (RFC 2131 2: an
// options field of 312 bytes, cookie included). A network whose lease blob is longer than
// kDhcpMaxOptionBlob still gets replies, but clients that honour only the minimum may drop them.
inline constexpr size_t kDhcpMinClientOptionsField = 312 - 4;
inline constexpr size_t kDhcpMaxOptionBlob = kDhcpMinClientOptionsField - 3 /*53*/ - 1 /*END*/;

namespace dhcp_option {
constexpr uint8_t kPad = 0;
constexpr uint8_t kSubnetMask = 1;
constexpr uint8_t kRouter = 3;
constexpr uint8_t kDns = 6;
constexpr uint8_t kDomainName = 15;
constexpr uint8_t kInterfaceMtu = 26;
constexpr uint8_t kRequestedIp = 50;
constexpr uint8_t kLeaseTime = 51;
constexpr uint8_t kOverload = 52;
constexpr uint8_t kMessageType = 53;
constexpr uint8_t kServerId = 54;
constexpr uint8_t kRenewalTime = 58;    // T1
constexpr uint8_t kRebindingTime = 59;  // T2
constexpr uint8_t kClasslessRoutes = 121;
constexpr uint8_t kEnd = 255;
}  // namespace dhcp_option

enum class DhcpMessageType : uint8_t {
    discover = 1,
    offer = 2,
    request = 3,
    decline = 4,
    ack = 5,
    nak = 6,
    release = 7,
    inform = 8,
};

// The fixed BOOTP part of a DHCP message (RFC 2131 figure 1) and the magic cookie.
#pragma pack(push, 1)
struct BootpHdr {
    uint8_t op;  // 1 BOOTREQUEST, 2 BOOTREPLY
    uint8_t htype;
    uint8_t hlen;
    uint8_t hops;
    Be32 xid;
    Be16 secs;
    Be16 flags;
    Be32 ciaddr;
    Be32 yiaddr;
    Be32 siaddr;
    Be32 giaddr;
    uint8_t chaddr[16];
    uint8_t sname[64];
    uint8_t file[128];
    Be32 cookie;

    static constexpr uint8_t kBootRequest = 1;
    static constexpr uint8_t kBootReply = 2;
    static constexpr uint8_t kHtypeEthernet = 1;
};
#pragma pack(pop)
static_assert(sizeof(BootpHdr) == 240);
inline constexpr size_t kBootpFixedLength = sizeof(BootpHdr);  // 236 + magic cookie

// What calyx needs from a client's message; every field has passed parse_dhcp's checks.
struct DhcpMessage {
    DhcpMessageType type = DhcpMessageType::discover;
    uint32_t xid = 0;  // host order, echoed as is
    uint16_t secs = 0;
    uint16_t flags = 0;  // host order; kBootpBroadcastFlag
    Ipv4Addr ciaddr;
    Ipv4Addr giaddr;
    MacAddr chaddr;
    std::optional<Ipv4Addr> requested_ip;  // option 50
    std::optional<Ipv4Addr> server_id;     // option 54

    bool broadcast() const { return (flags & kBootpBroadcastFlag) != 0; }
};

// Parses the UDP payload of a client message. Strict and bounded: a BOOTREQUEST over Ethernet
// (htype 1, hlen 6), at least the 240 fixed bytes with the magic cookie, every option inside
// its area, every area (options, and file then sname when option 52 says so) ending with END.
// Option 52 is honoured once, from the options field only (one inside file/sname is skipped),
// so option areas cannot chain or loop. Options 53 (exactly once, length 1, type 1..8), 50 and
// 54 (at most once, length 4) and 52 (at most once, length 1, value 1..3) are checked; a
// repeated 50/53/54 is malformed (an RFC 3396 concatenation would give a bad length anyway).
// Any failure is DropReason::dhcp_malformed.
std::expected<DhcpMessage, DropReason> parse_dhcp(const uint8_t* bootp, size_t len) noexcept;

struct DhcpOutcome {
    Verdict verdict = Verdict::drop;                 // reply, consumed or drop
    DropReason reason = DropReason::dhcp_malformed;  // when verdict == drop
    std::optional<DhcpReplyType> reply;              // when verdict == reply
    bool released = false;                           // consumed a RELEASE
    bool declined = false;                           // consumed a DECLINE

    static DhcpOutcome dropped(DropReason r) {
        return DhcpOutcome{Verdict::drop, r, {}, false, false};
    }
};

// Answers the DHCP message in `frame` from the instance `inst` on network `net`, as the server
// `net.gateway` with MAC `gateway_mac`:
//   chaddr other than inst.mac                        -> drop dhcp_unknown_client
//   DISCOVER                                          -> OFFER of inst.ipv4
//   REQUEST naming another server (54 != gateway)     -> drop dhcp_not_for_us
//   REQUEST SELECTING / INIT-REBOOT (50 present)      -> ACK if 50 == inst.ipv4, else NAK
//   REQUEST RENEWING / REBINDING (ciaddr, no 50)      -> ACK if ciaddr == inst.ipv4, else NAK
//   REQUEST with neither 50 nor ciaddr                -> NAK (the client restarts with DISCOVER)
//   INFORM                                            -> ACK, yiaddr 0, no lease times
//   RELEASE, DECLINE                                  -> consumed
//   OFFER, ACK, NAK (server messages)                 -> drop dhcp_not_for_us
// Replies carry 53, then the network's pre-encoded options (NAK: only 54), then END, padded to
// 300 bytes. Destination (RFC 2131 4.1): giaddr if set (port 67, Ethernet source of the
// request); else NAK broadcast; else ciaddr if set (at chaddr); else broadcast if the client set
// the broadcast flag or there is no yiaddr; else unicast to yiaddr at chaddr. Broadcast is
// 255.255.255.255 at ff:ff:ff:ff:ff:ff. INFORM, RELEASE and DECLINE naming another server in
// option 54 are dropped as dhcp_not_for_us too.
DhcpOutcome dhcp_respond(Frame& frame, const PacketMeta& meta, const InstanceView& inst,
                         const NetworkView& net, MacAddr gateway_mac) noexcept;

// What a network hands out by DHCP; the snapshot builder fills it from the network's
// configuration.
struct DhcpNetworkSettings {
    Ipv4Prefix cidr;
    Ipv4Addr gateway;  // also the server id
    std::vector<Ipv4Addr> dns;
    std::optional<std::string> domain;
    uint16_t mtu = 0;
    uint32_t lease_seconds = 0;  // 0xffffffff: infinite
    std::vector<Ipv4Prefix> routes;  // besides the default route, each via the gateway
};

// Control plane: the options a network hands out, as they go on the wire, in this order:
// 54 server id (= gateway); if with_lease 51 lease time, 58 T1 (50%), 59 T2 (87.5%); 1 subnet
// mask; 3 router; 6 DNS (if any); 15 domain (if any); 26 interface MTU; 121 classless static
// routes (RFC 3442: 0.0.0.0/0 via the gateway, since clients that take 121 ignore 3, then
// each of net.routes via the gateway). Neither 53 nor END. Options longer than 255 bytes are
// split into consecutive instances of the same code (RFC 3396).
std::vector<uint8_t> encode_dhcp_network_options(const DhcpNetworkSettings& net, bool with_lease);

}  // namespace calyx::dp
