// Bad packets lose nothing: mutated and truncated frames of every kind go through the whole
// pipeline without crashing, each ends with exactly one verdict, and every drop is counted
// once.
#include <random>

#include "gateway_fixture.hpp"

namespace calyx::test {
namespace {

using Robustness = GatewayTest;

// A BOOTP DHCPDISCOVER from web-1 (RFC 2131): op, htype, hlen, xid, its MAC, the magic
// cookie and option 53 = 1.
std::vector<uint8_t> dhcp_discover() {
    std::vector<uint8_t> b(236, 0);
    b[0] = 1, b[1] = 1, b[2] = 6;
    b[4] = 0x12, b[5] = 0x34, b[6] = 0x56, b[7] = 0x78;
    std::copy(kWebMac.bytes.begin(), kWebMac.bytes.end(), b.begin() + 28);
    b.insert(b.end(), {99, 130, 83, 99, 53, 1, 1, 255});
    return b;
}

// Valid frames of every kind, each with the verdict the pipeline gives it unmutated.
struct Seed {
    std::vector<uint8_t> bytes;
    dp::Verdict verdict;
};
std::vector<Seed> seeds() {
    return {
        {FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kAppIp).icmp_echo(1, 1).build(), dp::Verdict::forward},
        {FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kAppIp, ipproto::kTcp).tcp(40000, 80, TcpHdr::kSyn).build(),
         dp::Verdict::forward},
        {FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kDbIp, ipproto::kUdp).udp(5000, 53, {1, 2, 3, 4}).build(),
         dp::Verdict::forward},
        {FrameBuilder().eth(kWebMac, MacAddr::broadcast(), ethertype::kArp).arp(1, kWebMac, kWebIp, MacAddr{}, kWebGateway).build(),
         dp::Verdict::reply},
        {FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kWebGateway).icmp_echo(3, 4).build(), dp::Verdict::reply},
        // TTL 1: dropped (ttl_exceeded), with an ICMP error as the reply unless rate-limited.
        {FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kAppIp, ipproto::kUdp, 1).udp(1, 2).build(),
         dp::Verdict::drop},
        {FrameBuilder()
             .eth(kWebMac, MacAddr::broadcast())
             .ipv4(Ipv4Addr{}, Ipv4Addr{0xffffffff}, ipproto::kUdp)
             .udp(68, 67, dhcp_discover())
             .build(),
         dp::Verdict::reply},
    };
}

TEST_F(Robustness, RandomlyMutatedFramesEachGetOneVerdictAndDropsAreCountedOnce) {
    std::mt19937 rng(12345);
    const auto base = seeds();
    uint64_t expected_drops = 0, valid = 0;
    for (int round = 0; round < 20000; ++round) {
        const Seed& seed = base[rng() % base.size()];
        std::vector<uint8_t> bytes = seed.bytes;
        // Every fourth frame is sent as it is: valid traffic between the bad, which must get
        // its verdict (a pipeline that dropped everything would count every drop right).
        const bool unmutated = round % 4 == 0;
        if (!unmutated) {
            // A few byte flips, sometimes a truncation or an extension.
            for (int flips = static_cast<int>(rng() % 4); flips >= 0; --flips)
                bytes[rng() % bytes.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
            if (rng() % 4 == 0) bytes.resize(rng() % (bytes.size() + 1));
            if (rng() % 8 == 0) bytes.resize(bytes.size() + rng() % 64, static_cast<uint8_t>(rng()));
        }
        TestFrame f(bytes);
        const auto before = total_drops(kWebPort);
        const dp::PacketMeta m = run(f, kWebPort);
        ASSERT_NE(m.verdict, dp::Verdict::pending) << "round " << round;
        ASSERT_LE(f.frame.off + f.frame.len, f.frame.buf_len) << "round " << round;
        const auto after = total_drops(kWebPort);
        if (unmutated) {
            const std::string why = m.verdict == dp::Verdict::drop ? std::string(drop_reason_info(m.reason).name) : "";
            if (seed.verdict == dp::Verdict::drop)  // TTL 1: the ICMP error, or a rate-limited drop
                ASSERT_TRUE(m.verdict == dp::Verdict::reply || m.reason == DropReason::ttl_exceeded)
                    << "round " << round << ": " << why;
            else
                ASSERT_EQ(m.verdict, seed.verdict) << "round " << round << ": a valid frame: " << why;
            ++valid;
        }
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
    EXPECT_EQ(valid, 5000u);
}

}  // namespace
}  // namespace calyx::test
