// Bad packets lose nothing: mutated and truncated frames of every kind go through the whole
// pipeline without crashing, each ends with exactly one verdict, and every drop is counted
// once.
#include <random>

#include "gateway_fixture.hpp"

namespace calyx::test {
namespace {

using Robustness = GatewayTest;

std::vector<std::vector<uint8_t>> seeds() {
    return {
        FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kAppIp).icmp_echo(1, 1).build(),
        FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kAppIp, ipproto::kTcp).tcp(40000, 80, TcpHdr::kSyn).build(),
        FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kDbIp, ipproto::kUdp).udp(5000, 53, {1, 2, 3, 4}).build(),
        FrameBuilder().eth(kWebMac, MacAddr::broadcast(), ethertype::kArp).arp(1, kWebMac, kWebIp, MacAddr{}, kWebGateway).build(),
        FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kWebGateway).icmp_echo(3, 4).build(),
        FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kAppIp, ipproto::kUdp, 1).udp(1, 2).build(),
        FrameBuilder()
            .eth(kWebMac, MacAddr::broadcast())
            .ipv4(Ipv4Addr{}, Ipv4Addr{0xffffffff}, ipproto::kUdp)
            .udp(68, 67, std::vector<uint8_t>(300, 0))
            .build(),
    };
}

TEST_F(Robustness, RandomlyMutatedFramesEachGetOneVerdictAndDropsAreCountedOnce) {
    std::mt19937 rng(12345);
    const auto base = seeds();
    uint64_t expected_drops = 0;
    for (int round = 0; round < 20000; ++round) {
        std::vector<uint8_t> bytes = base[rng() % base.size()];
        // A few byte flips, sometimes a truncation or an extension.
        for (int flips = static_cast<int>(rng() % 4); flips >= 0; --flips)
            bytes[rng() % bytes.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
        if (rng() % 4 == 0) bytes.resize(rng() % (bytes.size() + 1));
        if (rng() % 8 == 0) bytes.resize(bytes.size() + rng() % 64, static_cast<uint8_t>(rng()));
        TestFrame f(bytes);
        const auto before = total_drops(kWebPort);
        const dp::PacketMeta m = run(f, kWebPort);
        ASSERT_NE(m.verdict, dp::Verdict::pending) << "round " << round;
        ASSERT_LE(f.frame.off + f.frame.len, f.frame.buf_len) << "round " << round;
        const auto after = total_drops(kWebPort);
        if (m.verdict == dp::Verdict::drop) {
            ASSERT_EQ(after, before + 1) << "round " << round << ": a drop is counted exactly once";
            ++expected_drops;
        } else if (after != before) {
            // Only an ICMP error replaces a dropped packet: the original is counted, the
            // error is the reply.
            ASSERT_EQ(m.verdict, dp::Verdict::reply) << "round " << round;
            ASSERT_EQ(after, before + 1) << "round " << round;
            ++expected_drops;
        }
    }
    EXPECT_EQ(total_drops(kWebPort), expected_drops);
}

}  // namespace
}  // namespace calyx::test
