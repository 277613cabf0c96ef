// ICMP error budget: the token bucket that keeps a flood of expiring packets from turning
// calyx into an ICMP amplifier.
#include <gtest/gtest.h>

#include "dp/icmp.hpp"
#include "dp/worker_context.hpp"
#include "support/frame_builder.hpp"

namespace calyx::dp {
namespace {

TEST(IcmpErrorBudget, StartsWithAFullBurst) {
    IcmpErrorBudget b;
    for (int i = 0; i < 5; ++i) EXPECT_TRUE(b.take(1000, 100, 5)) << i;
    EXPECT_FALSE(b.take(1000, 100, 5));
}

TEST(IcmpErrorBudget, RefillsAtTheConfiguredRateUpToTheBurst) {
    IcmpErrorBudget b;
    for (int i = 0; i < 5; ++i) b.take(0, 100, 5);
    EXPECT_FALSE(b.take(5'000'000, 100, 5)) << "half a token after 5 ms at 100/s";
    EXPECT_TRUE(b.take(10'000'000, 100, 5)) << "one token after 10 ms";
    EXPECT_FALSE(b.take(10'000'000, 100, 5));
    // An hour later the bucket holds at most the burst.
    int granted = 0;
    while (b.take(3'600'000'000'000ull, 100, 5)) ++granted;
    EXPECT_EQ(granted, 5);
}

TEST(IcmpErrorBudget, SlowRatesStillRefill) {
    IcmpErrorBudget b;
    b.take(0, 1, 1);
    EXPECT_FALSE(b.take(999'000'000, 1, 1));
    EXPECT_TRUE(b.take(1'000'000'000, 1, 1));
}

// RFC 1812 4.3.2.7: no ICMP error about an ICMP error, a non-first fragment, or a datagram
// whose source names no single host or whose destination is multicast or broadcast.
TEST(IcmpErrorRules, WhoMayGetAnError) {
    const MacAddr mac{{0x52, 0x54, 0, 0, 1, 1}}, gw{{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}};
    const Ipv4Addr host = Ipv4Addr::from_octets(203, 0, 113, 10), other = Ipv4Addr::from_octets(10, 10, 0, 5);
    const auto may = [](std::vector<uint8_t> bytes) {
        test::TestFrame f(bytes);
        PacketMeta m;
        m.l3_offset = sizeof(EtherHdr);
        m.l4_offset = sizeof(EtherHdr) + sizeof(Ipv4Hdr);
        return may_send_icmp_error(f.frame, m);
    };
    const auto udp = [&](Ipv4Addr src, Ipv4Addr dst) {
        return test::FrameBuilder().eth(mac, gw).ipv4(src, dst, ipproto::kUdp).udp(1, 2).build();
    };
    const auto icmp_of_type = [&](uint8_t type) {
        return test::FrameBuilder().eth(mac, gw).ipv4(host, other).icmp_echo(1, 1, 8, type).build();
    };
    EXPECT_TRUE(may(udp(host, other)));
    EXPECT_FALSE(may(udp(Ipv4Addr{}, other))) << "from 0.0.0.0";
    EXPECT_FALSE(may(udp(Ipv4Addr{0xffffffff}, other))) << "from the limited broadcast";
    EXPECT_FALSE(may(udp(Ipv4Addr::from_octets(224, 0, 0, 1), other))) << "from a multicast address";
    EXPECT_FALSE(may(udp(host, Ipv4Addr{0xffffffff}))) << "to the limited broadcast";
    EXPECT_FALSE(may(udp(host, Ipv4Addr::from_octets(239, 1, 2, 3)))) << "to a multicast group";
    // ICMP queries qualify (echo, timestamp, information, address mask), errors do not.
    for (uint8_t query : {icmp::kEchoRequest, icmp::kEchoReply, uint8_t{13}, uint8_t{15}, uint8_t{17}})
        EXPECT_TRUE(may(icmp_of_type(query))) << "ICMP type " << int{query};
    for (uint8_t error : {icmp::kDestUnreachable, icmp::kTimeExceeded, icmp::kParameterProblem, uint8_t{5}})
        EXPECT_FALSE(may(icmp_of_type(error))) << "ICMP type " << int{error};
    auto later = test::FrameBuilder()
                     .eth(mac, gw)
                     .ipv4(host, other, ipproto::kUdp, 64, 16 / 8)
                     .raw(std::vector<uint8_t>(16))
                     .build();
    EXPECT_FALSE(may(later)) << "a non-first fragment";
}

}  // namespace
}  // namespace calyx::dp
