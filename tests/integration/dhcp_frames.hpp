// DHCP (BOOTP) messages for the integration tests, built and parsed by hand so the test does
// not share code with the DHCP server it checks.
//
//   auto discover = dhcp_client_frame({.type = dhcp::kDiscover, .mac = web_mac, .xid = 7});
//   auto offer = vm.request(discover, 5s, is_dhcp_reply(dhcp::kOffer, 7));
//   auto msg = DhcpMessage::parse(*offer);     // msg->yiaddr, msg->ip_option(dhcp::kRouter)...
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "calyx/net.hpp"
#include "vm_peer.hpp"

namespace calyx::test {

namespace dhcp {
// Message types (option 53)
constexpr uint8_t kDiscover = 1, kOffer = 2, kRequest = 3, kDecline = 4, kAck = 5, kNak = 6,
                  kRelease = 7, kInform = 8;
// Option codes
constexpr uint8_t kPad = 0, kSubnetMask = 1, kRouter = 3, kDnsServers = 6, kDomainName = 15,
                  kInterfaceMtu = 26, kRequestedAddress = 50, kLeaseTime = 51, kMessageType = 53,
                  kServerId = 54, kParameterList = 55, kRenewalTime = 58, kRebindingTime = 59,
                  kClasslessRoutes = 121, kEnd = 255;
constexpr uint16_t kServerPort = 67, kClientPort = 68;
}  // namespace dhcp

struct DhcpClientMessage {
    uint8_t type = dhcp::kDiscover;
    MacAddr mac{};
    uint32_t xid = 0x1234;
    std::optional<Ipv4Addr> requested{};  // option 50
    std::optional<Ipv4Addr> server_id{};  // option 54
    Ipv4Addr ciaddr{};                    // set for INFORM / RELEASE / renewing REQUEST
    std::vector<uint8_t> parameter_list{dhcp::kSubnetMask,   dhcp::kRouter,
                                        dhcp::kDnsServers,   dhcp::kDomainName,
                                        dhcp::kInterfaceMtu, dhcp::kClasslessRoutes};
    bool broadcast_flag = false;
};

// The BOOTP payload (from `op` to the END option).
Bytes dhcp_payload(const DhcpClientMessage& m);

// A whole frame as a client in state INIT sends it: from ciaddr (0.0.0.0 unless set) port 68
// to 255.255.255.255 port 67, Ethernet broadcast.
Bytes dhcp_client_frame(const DhcpClientMessage& m);

// A parsed DHCP message from the server (Ethernet/IPv4/UDP/BOOTP frame).
struct DhcpMessage {
    uint8_t op = 0;
    uint32_t xid = 0;
    Ipv4Addr ciaddr, yiaddr, siaddr, giaddr;
    MacAddr chaddr;
    std::map<uint8_t, Bytes> options;  // code -> value; the last occurrence wins

    static std::optional<DhcpMessage> parse(const Bytes& frame);

    std::optional<uint8_t> message_type() const;
    bool has(uint8_t code) const { return options.contains(code); }
    std::optional<Ipv4Addr> ip_option(uint8_t code) const;     // exactly 4 bytes
    std::vector<Ipv4Addr> ip_list_option(uint8_t code) const;  // a multiple of 4 bytes
    std::optional<uint32_t> u32_option(uint8_t code) const;
    std::optional<uint16_t> u16_option(uint8_t code) const;
    // Option 121 decoded (RFC 3442): destination prefix -> router. nullopt if malformed.
    std::optional<std::vector<std::pair<Ipv4Prefix, Ipv4Addr>>> classless_routes() const;
};

// A DHCP reply (UDP from port 67 to 68) of message type `type` for transaction `xid`.
FramePredicate is_dhcp_reply(uint8_t type, uint32_t xid);
// Any DHCP reply at all (for "no answer" checks).
bool is_any_dhcp_reply(const Bytes& frame);

}  // namespace calyx::test
