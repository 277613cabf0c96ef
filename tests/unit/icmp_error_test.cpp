// ICMP errors pass only as part of the connection they quote, and only to whoever sent the
// datagram they quote: with two instances on one network (one zone), a third party's address
// must never receive an error about its neighbour's connection.
#include "gateway_fixture.hpp"

namespace calyx::test {
namespace {

const MacAddr kWeb2Mac{{0x52, 0x54, 0x00, 0x00, 0x01, 0x02}};
const Ipv4Addr kWeb2Ip = Ipv4Addr::from_octets(203, 0, 113, 11);
constexpr size_t kL4 = sizeof(EtherHdr) + sizeof(Ipv4Hdr);

class IcmpErrorAssociation : public GatewayTest {
protected:
    void SetUp() override {
        // The gateway site plus web-2, web-1's neighbour on the public network.
        load(std::string(kSiteYaml) + R"(  - {name: web-2, network: public, mac: "52:54:00:00:01:02", ipv4: 203.0.113.11,
     security_groups: [open], port: {type: vhost-user, socket: /tmp/calyx-unit/web-2.sock}}
)");
        web2_port_ = slots_.at("web-2");
    }

    // app-1's port unreachable, sent to `to`, quoting the IPv4 datagram of `quoted`.
    static std::vector<uint8_t> port_unreachable(Ipv4Addr to, const std::vector<uint8_t>& quoted) {
        std::vector<uint8_t> icmp{icmp::kDestUnreachable, icmp::kPortUnreachable, 0, 0, 0, 0, 0, 0};
        icmp.insert(icmp.end(), quoted.begin() + sizeof(EtherHdr), quoted.end());
        ref::store_be16(icmp.data() + 2, ref::checksum(icmp.data(), icmp.size()));
        return FrameBuilder().eth(kAppMac, kGatewayMac).ipv4(kAppIp, to).raw(icmp).build();
    }

    uint16_t web2_port_ = 0;
};

TEST_F(IcmpErrorAssociation, AnErrorGoesOnlyToTheSenderOfTheDatagramItQuotes) {
    const auto datagram =
        FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kAppIp, ipproto::kUdp).udp(5000, 53, {1, 2, 3}).build();
    TestFrame sent(datagram);
    ASSERT_EQ(run(sent, kWebPort).verdict, dp::Verdict::forward);

    // The same connection's error, addressed to web-1's neighbour: the key (zone, addresses,
    // ports of the quote) finds web-1's connection, but web-2 never sent that datagram.
    TestFrame to_neighbour(port_unreachable(kWeb2Ip, datagram));
    const auto m = run(to_neighbour, kAppPort);
    EXPECT_EQ(m.verdict, dp::Verdict::drop);
    EXPECT_EQ(m.reason, DropReason::ct_icmp_error_unmatched) << drop_reason_info(m.reason).name;

    // To web-1 itself it passes, out of web-1's port, unchanged but for the hop.
    TestFrame to_sender(port_unreachable(kWebIp, datagram));
    const auto ok = run(to_sender, kAppPort);
    ASSERT_EQ(ok.verdict, dp::Verdict::forward) << drop_reason_info(ok.reason).name;
    EXPECT_EQ(ok.out_port, kWebPort);
    EXPECT_NE(ok.out_port, web2_port_);
    EXPECT_EQ(to_sender.at<IcmpHdr>(kL4)->type, icmp::kDestUnreachable);
}

}  // namespace
}  // namespace calyx::test
