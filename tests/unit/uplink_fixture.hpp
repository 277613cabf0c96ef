// What the uplink tests share (uplink_test.cpp, uplink_review_test.cpp): the seed's site with
// an uplink, the outside world's addresses, the instances' inside endpoints, and a checksum
// check of forwarded frames.
#pragma once

#include <fmt/format.h>

#include <string>

#include "calyx/headers.hpp"
#include "gateway_fixture.hpp"

namespace calyx::test {

inline const Ipv4Addr kHostAddr = Ipv4Addr::from_octets(198, 51, 100, 10);  // uplink.address
inline const Ipv4Addr kUpstream = Ipv4Addr::from_octets(198, 51, 100, 1);   // uplink.gateway
inline const Ipv4Addr kServer = Ipv4Addr::from_octets(192, 0, 2, 80);       // "the Internet"
inline const MacAddr kUpstreamMac{{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}};

// The seed after frame 7: web-1 (public) takes 443 from anywhere and may go anywhere, app-1
// (nat) may go anywhere, db-1 (private) may go anywhere "so the private network should be able
// to talk to any Internet IPv4 address, right? Wrong."
inline std::string uplink_site(const std::string& nat_ports = "20000-59999") {
    return fmt::format(R"(
dataplane:
  conntrack: {{capacity: 4096, udp_unreplied: 30, udp_replied: 120}}
uplink:
  port: {{type: tap, name: calyx-up}}
  address: 198.51.100.10/24
  gateway: 198.51.100.1
  nat_ports: "{}"
security_groups:
  - name: public-sg
    rules:
      - {{direction: egress, protocol: any, remote: 0.0.0.0/0}}
      - {{direction: ingress, protocol: tcp, ports: 443, remote: 0.0.0.0/0}}
  - name: everywhere
    rules:
      - {{direction: egress, protocol: any, remote: 0.0.0.0/0}}
      - {{direction: ingress, protocol: any, remote: 0.0.0.0/0}}
networks:
  - {{name: public, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1}}
  - {{name: nat, kind: nat, cidr: 10.10.0.0/24, gateway: 10.10.0.1}}
  - {{name: private, kind: private, cidr: 10.20.0.0/24, gateway: 10.20.0.1}}
instances:
  - {{name: web-1, network: public, mac: "52:54:00:00:01:01", ipv4: 203.0.113.10, security_groups: [public-sg],
     port: {{type: vhost-user, socket: /tmp/calyx-unit/web-1.sock}}}}
  - {{name: app-1, network: nat, mac: "52:54:00:00:02:01", ipv4: 10.10.0.5, security_groups: [everywhere],
     port: {{type: vhost-user, socket: /tmp/calyx-unit/app-1.sock}}}}
  - {{name: db-1, network: private, mac: "52:54:00:00:03:01", ipv4: 10.20.0.7, security_groups: [everywhere],
     port: {{type: vhost-user, socket: /tmp/calyx-unit/db-1.sock}}}}
)",
                       nat_ports);
}

struct Inside {
    MacAddr mac;
    Ipv4Addr ip;
    uint16_t port;
};
inline const Inside kWeb{kWebMac, kWebIp, kWebPort};
inline const Inside kApp{kAppMac, kAppIp, kAppPort};
inline const Inside kDb{kDbMac, kDbIp, kDbPort};

inline constexpr size_t kL3 = sizeof(EtherHdr);

// Every checksum of a forwarded IPv4 frame recomputed from scratch sums to zero (first
// fragments and later ones carry no whole L4 datagram: their IPv4 header only).
inline void expect_checksums_valid(TestFrame& f) {
    auto* ip = f.at<Ipv4Hdr>(kL3);
    ASSERT_NE(ip, nullptr);
    EXPECT_EQ(internet_checksum(ip, ip->header_length()), 0) << "IPv4 header checksum";
    if (!ip->is_first_fragment() || ip->is_fragment()) return;
    const size_t l4_len = ip->total_length.host() - ip->header_length();
    const uint8_t* l4 = f.frame.data() + kL3 + ip->header_length();
    if (ip->protocol == ipproto::kIcmp) {
        EXPECT_EQ(internet_checksum(l4, l4_len), 0) << "ICMP checksum";
    } else if (ip->protocol == ipproto::kTcp || ip->protocol == ipproto::kUdp) {
        EXPECT_EQ(l4_checksum_ipv4(*ip, l4, l4_len), 0) << "L4 checksum";
    }
}

}  // namespace calyx::test
