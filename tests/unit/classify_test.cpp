// classify and anti-spoofing: only well-formed frames that really come from the instance
// get past the first stage.
#include "dp/classify.hpp"
#include "dp/route.hpp"
#include "gateway_fixture.hpp"

#include <random>

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

// A SYN whose data offset (8 words: 12 bytes of options) reaches past the datagram.
std::vector<uint8_t> tcp_claiming_options() {
    auto bytes = FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kAppIp, ipproto::kTcp).tcp(40000, 80, TcpHdr::kSyn).build();
    bytes[sizeof(EtherHdr) + sizeof(Ipv4Hdr) + 12] = 8 << 4;
    return bytes;
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
        // The exception for a DHCP client without an address is for whole datagrams only.
        {"0.0.0.0 source in a DHCP-shaped fragment",
         FrameBuilder()
             .eth(kWebMac, MacAddr::broadcast())
             .ipv4(Ipv4Addr{}, Ipv4Addr{0xffffffff}, ipproto::kUdp, 64, Ipv4Hdr::kMoreFragments)
             .udp(68, 67, std::vector<uint8_t>(16))
             .build(),
         DropReason::src_ipv4_spoofed},
        {"UDP header cut short", FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kAppIp, ipproto::kUdp).raw({0x13, 0x88, 0, 53}).build(),
         DropReason::l4_malformed},
        {"ICMP header cut short", FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kAppIp).raw({8, 0, 0, 0}).build(),
         DropReason::l4_malformed},
        // RFC 1858's tiny fragment: a first fragment that does not hold the whole L4 header.
        {"first fragment with a cut UDP header",
         FrameBuilder()
             .eth(kWebMac, kGatewayMac)
             .ipv4(kWebIp, kAppIp, ipproto::kUdp, 64, Ipv4Hdr::kMoreFragments)
             .raw({0x13, 0x88, 0, 53})
             .build(),
         DropReason::l4_malformed},
        {"TCP options beyond the datagram", tcp_claiming_options(), DropReason::l4_malformed},
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

// classify sums the header 32 bits at a time: it must agree with RFC 1071's 16-bit sum on
// every header, the ones whose sums carry most included, and miss no single flipped bit.
TEST_F(Classify, Ipv4ChecksumCheckAgreesWithRfc1071) {
    std::mt19937 rng(1071);
    for (int round = 0; round < 2000; ++round) {
        auto bytes = ping_from_web();
        auto* ip = reinterpret_cast<Ipv4Hdr*>(bytes.data() + sizeof(EtherHdr));
        const bool heavy = round % 4 == 0;  // all-ones fields: the most carries
        ip->tos = heavy ? 0xff : static_cast<uint8_t>(rng());
        ip->id = Be16::from_host(heavy ? 0xffff : static_cast<uint16_t>(rng()));
        ip->ttl = static_cast<uint8_t>(heavy ? 0xff : 2 + rng() % 254);
        ip->checksum = 0;
        ip->checksum = internet_checksum(ip, sizeof(Ipv4Hdr));
        {
            TestFrame f(bytes);
            const auto m = run(f, kWebPort);
            ASSERT_EQ(m.verdict, dp::Verdict::forward) << "round " << round << ": " << drop_reason_info(m.reason).name;
        }
        const size_t bit = rng() % (sizeof(Ipv4Hdr) * 8);
        bytes[sizeof(EtherHdr) + bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
        TestFrame f(bytes);
        const auto m = run(f, kWebPort);
        ASSERT_EQ(m.verdict, dp::Verdict::drop) << "round " << round << ", bit " << bit;
        ASSERT_EQ(m.reason, DropReason::ipv4_malformed) << "round " << round << ", bit " << bit;
    }
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

// The stage itself, not only the pipeline (later stages refuse some of these too, so the
// pipeline alone would not notice classify letting them through): the L4 header of a first
// fragment or a whole datagram must be there in full; a later fragment has none to check.
TEST_F(Classify, TheStageRefusesCutL4HeadersItself) {
    const auto verdict = [&](const std::vector<uint8_t>& bytes) {
        TestFrame f(bytes);
        dp::Batch batch;
        batch.count = 1;
        batch.frames[0] = f.frame;
        batch.meta[0].in_port = kWebPort;
        dp::classify_stage(batch, *snap_, ctx_);
        return batch.meta[0];
    };
    const auto cut_first = FrameBuilder()
                               .eth(kWebMac, kGatewayMac)
                               .ipv4(kWebIp, kAppIp, ipproto::kUdp, 64, Ipv4Hdr::kMoreFragments)
                               .raw({0x13, 0x88, 0, 53})
                               .build();
    const auto cut_icmp = FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kAppIp).raw({8, 0, 0, 0}).build();
    for (const auto& bytes : {cut_first, cut_icmp, tcp_claiming_options()}) {
        const auto m = verdict(bytes);
        EXPECT_EQ(m.verdict, dp::Verdict::drop);
        EXPECT_EQ(m.reason, DropReason::l4_malformed) << drop_reason_info(m.reason).name;
    }
    const auto later = FrameBuilder()
                           .eth(kWebMac, kGatewayMac)
                           .ipv4(kWebIp, kAppIp, ipproto::kUdp, 64, 16 / 8)
                           .raw({1, 2, 3, 4})
                           .build();
    EXPECT_EQ(verdict(later).verdict, dp::Verdict::pending) << "a later fragment's bytes are no L4 header";
    const auto whole = FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kAppIp).icmp_echo(1, 1, 0).build();
    const auto ok = verdict(whole);
    EXPECT_EQ(ok.verdict, dp::Verdict::pending);
    EXPECT_EQ(ok.l4_offset, sizeof(EtherHdr) + sizeof(Ipv4Hdr));
}

// A datagram may be nothing but its header (a protocol with no ports, no payload): that is
// well formed.
TEST_F(Classify, ADatagramOfOnlyItsHeaderIsWellFormed) {
    TestFrame f(FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kAppIp, 47).build());
    ASSERT_EQ(f.frame.len, sizeof(EtherHdr) + sizeof(Ipv4Hdr));
    dp::Batch batch;
    batch.count = 1;
    batch.frames[0] = f.frame;
    batch.meta[0].in_port = kWebPort;
    dp::classify_stage(batch, *snap_, ctx_);
    EXPECT_EQ(batch.meta[0].verdict, dp::Verdict::pending) << drop_reason_info(batch.meta[0].reason).name;
    EXPECT_TRUE(batch.meta[0].is_ipv4);
    EXPECT_EQ(batch.meta[0].ip_proto, 47);
}

// The stage reads only the batch's `count` frames: a slot beyond it (a frame left over from a
// previous burst) is neither judged nor counted.
TEST_F(Classify, TheStageLeavesSlotsBeyondTheCountAlone) {
    TestFrame valid(FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kAppIp).icmp_echo(1, 1, 0).build());
    TestFrame stale(FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kAppIp, kWebIp).icmp_echo(1, 1, 0).build());
    dp::Batch batch;
    batch.count = 1;
    batch.frames[0] = valid.frame;
    batch.meta[0].in_port = kWebPort;
    batch.frames[1] = stale.frame;  // spoofed: classify would drop it
    batch.meta[1].in_port = kWebPort;
    const uint64_t before = total_drops(kWebPort);
    dp::classify_stage(batch, *snap_, ctx_);
    EXPECT_EQ(batch.meta[0].verdict, dp::Verdict::pending);
    EXPECT_EQ(batch.meta[1].verdict, dp::Verdict::pending);
    EXPECT_FALSE(batch.meta[1].is_ipv4);
    EXPECT_EQ(total_drops(kWebPort), before);
    // Routing too: slot 1, were it looked at, has a martian destination.
    TestFrame martian(FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, Ipv4Addr::from_octets(127, 0, 0, 1)).icmp_echo(1, 1, 0).build());
    batch.frames[1] = martian.frame;
    batch.meta[1].is_ipv4 = true;
    batch.meta[1].l3_offset = sizeof(EtherHdr);
    dp::route_stage(batch, *snap_, ctx_);
    EXPECT_EQ(batch.meta[1].verdict, dp::Verdict::pending);
    EXPECT_EQ(total_drops(kWebPort), before);
}

// A later fragment carries no L4 header: its few bytes are not a cut header. It passes
// classify (and, with no first fragment seen, is dropped as unmatched).
TEST_F(Classify, LaterFragmentWithFewBytesIsNoCutHeader) {
    TestFrame f(FrameBuilder()
                    .eth(kWebMac, kGatewayMac)
                    .ipv4(kWebIp, kAppIp, ipproto::kUdp, 64, 16 / 8)
                    .raw({1, 2, 3, 4})
                    .build());
    const auto m = run(f, kWebPort);
    EXPECT_EQ(m.verdict, dp::Verdict::drop);
    EXPECT_EQ(m.reason, DropReason::fragment_unmatched) << drop_reason_info(m.reason).name;
}

}  // namespace
}  // namespace calyx::test
