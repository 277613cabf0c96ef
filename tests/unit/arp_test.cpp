// Proxy-ARP on instance links: every request is answered with the gateway MAC, except
// announcements and requests for the instance's own address.
#include "gateway_fixture.hpp"

namespace calyx::test {
namespace {

constexpr uint16_t kRequest = 1, kReply = 2;

class ArpTest : public GatewayTest {
protected:
    std::vector<uint8_t> request(Ipv4Addr target, Ipv4Addr sender = kWebIp, MacAddr sha = kWebMac,
                                 uint16_t oper = kRequest) {
        return FrameBuilder()
            .eth(kWebMac, MacAddr::broadcast(), ethertype::kArp)
            .arp(oper, sha, sender, MacAddr{}, target)
            .build();
    }
};

TEST_F(ArpTest, RequestForGatewayIsAnsweredWithGatewayMac) {
    TestFrame f(request(kWebGateway));
    EXPECT_EQ(run(f, kWebPort).verdict, dp::Verdict::reply);
    auto* eth = f.at<EtherHdr>(0);
    auto* arp = f.at<ArpHdr>(sizeof(EtherHdr));
    EXPECT_EQ(eth->dst, kWebMac);
    EXPECT_EQ(eth->src, kGatewayMac);
    EXPECT_EQ(arp->oper.host(), kReply);
    EXPECT_EQ(arp->sha, kGatewayMac);
    EXPECT_EQ(Ipv4Addr::from_be(arp->spa), kWebGateway);
    EXPECT_EQ(arp->tha, kWebMac);
    EXPECT_EQ(Ipv4Addr::from_be(arp->tpa), kWebIp);
    EXPECT_EQ(counters_->arp_replies, 1u);
}

TEST_F(ArpTest, RequestForAnotherInstanceOrAnyAddressIsAnsweredWithGatewayMac) {
    for (Ipv4Addr target : {kAppIp, Ipv4Addr::from_octets(203, 0, 113, 99),
                            Ipv4Addr::from_octets(8, 8, 8, 8)}) {
        TestFrame f(request(target));
        ASSERT_EQ(run(f, kWebPort).verdict, dp::Verdict::reply) << target.to_string();
        auto* arp = f.at<ArpHdr>(sizeof(EtherHdr));
        EXPECT_EQ(arp->sha, kGatewayMac);
        EXPECT_EQ(Ipv4Addr::from_be(arp->spa), target);
    }
}

TEST_F(ArpTest, ProbeFromUnconfiguredInstanceIsAnswered) {
    TestFrame f(request(kWebGateway, Ipv4Addr{}));
    EXPECT_EQ(run(f, kWebPort).verdict, dp::Verdict::reply);
    EXPECT_EQ(Ipv4Addr::from_be(f.at<ArpHdr>(sizeof(EtherHdr))->tpa), Ipv4Addr{});
}

struct Unanswered {
    const char* name;
    Ipv4Addr target;
    Ipv4Addr sender;
    MacAddr sha;
    uint16_t oper;
    DropReason reason;
};

TEST_F(ArpTest, UnansweredArpIsDroppedWithItsReason) {
    const Unanswered cases[] = {
        {"gratuitous announcement", kWebIp, kWebIp, kWebMac, kRequest, DropReason::arp_gratuitous},
        {"own address (duplicate address detection)", kWebIp, Ipv4Addr{}, kWebMac, kRequest,
         DropReason::arp_target_self},
        {"reply from the instance", kWebGateway, kWebIp, kWebMac, kReply, DropReason::arp_not_request},
        {"sender claims another address", kWebGateway, kAppIp, kWebMac, kRequest,
         DropReason::arp_sender_spoofed},
        {"sender hardware address is not the instance's", kWebGateway, kWebIp, kAppMac, kRequest,
         DropReason::arp_sender_spoofed},
    };
    for (const auto& c : cases) {
        TestFrame f(request(c.target, c.sender, c.sha, c.oper));
        const auto before = f.bytes();
        const auto m = run(f, kWebPort);
        EXPECT_EQ(m.verdict, dp::Verdict::drop) << c.name;
        EXPECT_EQ(m.reason, c.reason) << c.name;
        EXPECT_EQ(f.bytes(), before) << c.name << ": a dropped frame is left as it was";
    }
    EXPECT_EQ(counters_->arp_replies, 0u);
    EXPECT_EQ(total_drops(kWebPort), std::size(cases));
}

TEST_F(ArpTest, MalformedArpIsDropped) {
    auto truncated = request(kWebGateway);
    truncated.resize(sizeof(EtherHdr) + 20);
    auto wrong_hlen = request(kWebGateway);
    wrong_hlen[sizeof(EtherHdr) + 4] = 8;
    auto ipv6_ptype = request(kWebGateway);
    ipv6_ptype[sizeof(EtherHdr) + 2] = 0x86;
    ipv6_ptype[sizeof(EtherHdr) + 3] = 0xdd;
    for (const auto& bytes : {truncated, wrong_hlen, ipv6_ptype}) {
        TestFrame f(bytes);
        const auto m = run(f, kWebPort);
        EXPECT_EQ(m.verdict, dp::Verdict::drop);
        EXPECT_EQ(m.reason, DropReason::arp_malformed);
    }
}

}  // namespace
}  // namespace calyx::test
