// classify and anti-spoofing: only well-formed frames that really come from the instance
// get past the first stage.
#include "gateway_fixture.hpp"

namespace calyx::test {
namespace {

using Classify = GatewayTest;

std::vector<uint8_t> ping_from_web(Ipv4Addr src = kWebIp, MacAddr mac = kWebMac) {
    return FrameBuilder().eth(mac, kGatewayMac).ipv4(src, kAppIp).icmp_echo(1, 1).build();
}

TEST_F(Classify, WellFormedPacketFromTheInstanceIsForwarded) {
    TestFrame f(ping_from_web());
    EXPECT_EQ(run(f, kWebPort).verdict, dp::Verdict::forward);
}

TEST_F(Classify, EthernetPaddingIsTrimmedToTheDatagram) {
    auto bytes = FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kAppIp).icmp_echo(1, 1, 0).build();
    const size_t datagram_end = bytes.size();
    bytes.resize(60, 0);  // minimum Ethernet frame
    TestFrame f(bytes);
    EXPECT_EQ(run(f, kWebPort).verdict, dp::Verdict::forward);
    EXPECT_EQ(f.frame.len, datagram_end);
}

struct Bad {
    const char* name;
    std::vector<uint8_t> bytes;
    DropReason reason;
};

TEST_F(Classify, EachBadFrameIsDroppedWithExactlyOneReason) {
    auto bad_checksum = ping_from_web();
    bad_checksum[sizeof(EtherHdr) + 10] ^= 0xff;
    auto long_total = ping_from_web();
    long_total[sizeof(EtherHdr) + 2] = 0x40;  // total length 16384 > frame
    auto short_ihl = ping_from_web();
    short_ihl[sizeof(EtherHdr)] = 0x44;
    auto ipv6 = ping_from_web();
    ipv6[12] = 0x86;
    ipv6[13] = 0xdd;
    auto tiny_tcp = FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kAppIp, ipproto::kTcp).build();
    tiny_tcp.push_back(0);
    tiny_tcp.push_back(80);  // two bytes of a TCP header
    {
        auto* ip = reinterpret_cast<Ipv4Hdr*>(tiny_tcp.data() + sizeof(EtherHdr));
        ip->total_length = Be16::from_host(static_cast<uint16_t>(tiny_tcp.size() - sizeof(EtherHdr)));
        ip->checksum = 0;
        ip->checksum = internet_checksum(ip, sizeof(Ipv4Hdr));
    }
    const Bad cases[] = {
        {"runt", {0x52, 0x54, 0x00}, DropReason::runt_frame},
        {"IPv6", ipv6, DropReason::ethertype_unsupported},
        {"spoofed source MAC", ping_from_web(kWebIp, kAppMac), DropReason::src_mac_spoofed},
        {"spoofed source IPv4", ping_from_web(kAppIp), DropReason::src_ipv4_spoofed},
        {"unicast to another MAC",
         FrameBuilder().eth(kWebMac, kAppMac).ipv4(kWebIp, kAppIp).icmp_echo(1, 1).build(),
         DropReason::dst_mac_not_gateway},
        {"bad IPv4 checksum", bad_checksum, DropReason::ipv4_malformed},
        {"total length beyond the frame", long_total, DropReason::ipv4_malformed},
        {"header length below 20", short_ihl, DropReason::ipv4_malformed},
        {"TCP header cut short", tiny_tcp, DropReason::l4_malformed},
        {"0.0.0.0 source outside DHCP",
         FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(Ipv4Addr{}, kAppIp, ipproto::kUdp).udp(68, 53).build(),
         DropReason::src_ipv4_spoofed},
    };
    for (const auto& c : cases) {
        TestFrame f(c.bytes);
        const uint64_t before = drops(kWebPort, c.reason);
        const auto m = run(f, kWebPort);
        EXPECT_EQ(m.verdict, dp::Verdict::drop) << c.name;
        EXPECT_EQ(m.reason, c.reason) << c.name << ": got " << drop_reason_info(m.reason).name;
        EXPECT_EQ(drops(kWebPort, c.reason), before + 1) << c.name;
    }
    EXPECT_EQ(total_drops(kWebPort), std::size(cases));
}

TEST_F(Classify, DhcpClientWithoutAddressPassesAntiSpoofing) {
    // A DISCOVER-shaped packet from 0.0.0.0: classify lets it through to the DHCP responder,
    // which judges the BOOTP payload (here empty, so malformed).
    TestFrame f(FrameBuilder()
                    .eth(kWebMac, MacAddr::broadcast())
                    .ipv4(Ipv4Addr{}, Ipv4Addr{0xffffffff}, ipproto::kUdp)
                    .udp(68, 67)
                    .build());
    const auto m = run(f, kWebPort);
    EXPECT_EQ(m.reason, DropReason::dhcp_malformed);
}

}  // namespace
}  // namespace calyx::test
