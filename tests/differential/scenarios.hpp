// Scenarios for the differential conntrack test: short packet sequences between two hosts, the
// same bytes for calyx and for the Linux router it is compared with.
//
// A scenario is 4 to 12 IPv4 datagrams, each sent by the client or the server host, on a flow
// of its own (the initiator's port, the ICMP echo identifier, derived from the scenario's
// index), so that hundreds of scenarios run side by side without meeting. The generator is
// deterministic: make_scenario(seed, index) always builds the same packets, on any machine, so
// a difference found in CI is rebuilt with its seed and index alone.
//
// What it covers: TCP handshakes (window scaling on one, both or no side, SACK permitted or
// not), simultaneous open, SYN and SYN-ACK retransmissions and restarts, refused connections,
// challenge ACKs, data in order, at and across the window's edges, retransmitted and below the
// window, ACKs of unsent or ancient data, SACK blocks in and far outside the window, zero
// windows and probes, FIN in every state, RST exact, in window, out of window and what
// follows it, reopening closed tuples, a SYN on a half-closed connection, flag combinations no
// stack sends, mid-stream pickup; UDP both ways and to closed ports; ICMP echo with odd codes
// and identifiers, other ICMP types; ICMP errors of every type about every kind of flow,
// quoting the right or the wrong direction, unknown flows, and truncated quotes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "calyx/net.hpp"

namespace calyx::difftest {

using Bytes = std::vector<uint8_t>;

// The two hosts. The client is web-1 of the integration fixture (public network), the server
// db-1 (private network); the router between them is calyx or Linux.
enum class Side : uint8_t { client, server };
inline Side other(Side s) { return s == Side::client ? Side::server : Side::client; }

inline const Ipv4Addr kClientIp = Ipv4Addr::from_octets(203, 0, 113, 10);
inline const Ipv4Addr kServerIp = Ipv4Addr::from_octets(10, 20, 0, 7);
inline Ipv4Addr address_of(Side s) { return s == Side::client ? kClientIp : kServerIp; }
inline const MacAddr kClientMac{{0x52, 0x54, 0x00, 0x00, 0x01, 0x01}};
inline const MacAddr kServerMac{{0x52, 0x54, 0x00, 0x00, 0x03, 0x01}};
inline MacAddr mac_of(Side s) { return s == Side::client ? kClientMac : kServerMac; }

// The policy both routers enforce on new connections (the security groups of calyx, the
// nftables rules of Linux): the client may open TCP and UDP to the server's ports
// kServerPorts and ping it; the server may open TCP and UDP to the client's ports kClientPorts
// and ping it. Everything else that is not part of a tracked connection is dropped.
struct PortRange {
    uint16_t first, last;
};
inline constexpr PortRange kServerPorts{1000, 59999};
inline constexpr PortRange kClientPorts{7000, 7999};

struct Packet {
    Side from;
    Bytes ip;          // the datagram, checksums filled in; the runner sets the IP ID
    std::string what;  // how the generator meant it, e.g. "data at right edge +1"
};

struct Scenario {
    uint32_t index = 0;
    std::string kind;  // the template, e.g. "tcp/simultaneous-open"
    std::vector<Packet> packets;
};

Scenario make_scenario(uint64_t seed, uint32_t index);

// Scenario indexes that may run concurrently without sharing a flow: the initiator's port is
// kFirstInitiatorPort + index % kDistinctFlows, the echo identifier index % kDistinctFlows.
// Packets that deliberately miss their flow use ports and identifiers from kStrayFirst up,
// which no flow uses.
inline constexpr uint16_t kFirstInitiatorPort = 20000;
inline constexpr uint32_t kDistinctFlows = 40000;
inline constexpr uint16_t kStrayFirst = 60000;

// "C>S tcp 20001>80 SA seq=1 ack=2 win=512 len=0 [wscale=7 sackok]": one line per packet.
std::string describe(const Packet& p);

// Sets the IP identification of a datagram built by make_scenario and fixes its checksum.
void set_ip_id(Bytes& ip, uint16_t id);

}  // namespace calyx::difftest
