// The uplink through the whole pipeline on byte buffers: ARP on the uplink, the default route
// and neighbour resolution, the network kinds of the seed (frames 2, 3, 6, 7 and the private
// network) and masquerade (TCP, UDP, ICMP echo, ICMP errors, exhaustion, expiry).
#include <fmt/format.h>

#include <set>

#include "calyx/headers.hpp"
#include "dp/conntrack.hpp"
#include "dp/nat.hpp"
#include "dp/neighbor.hpp"
#include "uplink_fixture.hpp"

namespace calyx::test {
namespace {

constexpr uint8_t kSyn = TcpHdr::kSyn, kAck = TcpHdr::kAck;

const Ipv4Addr kNeighbor = Ipv4Addr::from_octets(198, 51, 100, 20);  // on the uplink subnet
const MacAddr kNeighborMac{{0x02, 0x00, 0x00, 0x00, 0x00, 0x20}};

std::string site_without_uplink() {
    std::string y = uplink_site();
    const size_t from = y.find("uplink:"), to = y.find("security_groups:");
    return y.erase(from, to - from);
}

class Uplink : public GatewayTest {
protected:
    void SetUp() override {
        load(uplink_site());
        // The gateway answered calyx's ARP request.
        ASSERT_TRUE(neighbors_.learn(kUpstream, kUpstreamMac, ctx_.now_ns, true));
    }

    // A frame from an instance, addressed to the gateway MAC.
    TestFrame from_inside(const Inside& from, Ipv4Addr to, uint8_t proto) {
        return TestFrame(FrameBuilder().eth(from.mac, kGatewayMac).ipv4(from.ip, to, proto).build());
    }
    dp::PacketMeta tcp_out(const Inside& from, Ipv4Addr to, uint16_t sport, uint16_t dport, uint8_t flags,
                           uint32_t seq, uint32_t ack, TestFrame** out = nullptr) {
        frames_.push_back(std::make_unique<TestFrame>(FrameBuilder()
                                                          .eth(from.mac, kGatewayMac)
                                                          .ipv4(from.ip, to, ipproto::kTcp)
                                                          .tcp(sport, dport, flags, seq, ack)
                                                          .build()));
        if (out) *out = frames_.back().get();
        return run(*frames_.back(), from.port);
    }
    // A frame from the Internet, as the upstream router delivers it on the uplink.
    dp::PacketMeta tcp_in(Ipv4Addr from, Ipv4Addr to, uint16_t sport, uint16_t dport, uint8_t flags,
                          uint32_t seq, uint32_t ack, TestFrame** out = nullptr) {
        frames_.push_back(std::make_unique<TestFrame>(FrameBuilder()
                                                          .eth(kUpstreamMac, kUplinkMac)
                                                          .ipv4(from, to, ipproto::kTcp)
                                                          .tcp(sport, dport, flags, seq, ack)
                                                          .build()));
        if (out) *out = frames_.back().get();
        return run(*frames_.back(), kUplinkPort);
    }
    static void expect_drop(const dp::PacketMeta& m, DropReason r, const std::string& what) {
        EXPECT_EQ(m.verdict, dp::Verdict::drop) << what;
        EXPECT_EQ(m.reason, r) << what << ": got " << drop_reason_info(m.reason).name;
    }
    uint16_t src_port(TestFrame& f) { return f.at<TcpHdr>(sizeof(EtherHdr) + sizeof(Ipv4Hdr))->src_port.host(); }
    Ipv4Addr src_ip(TestFrame& f) { return Ipv4Addr::from_be(f.at<Ipv4Hdr>(sizeof(EtherHdr))->src); }
    Ipv4Addr dst_ip(TestFrame& f) { return Ipv4Addr::from_be(f.at<Ipv4Hdr>(sizeof(EtherHdr))->dst); }

    std::vector<std::unique_ptr<TestFrame>> frames_;
};

// ---- ARP on the uplink ----

TEST_F(Uplink, AnswersArpForTheHostAddressAndPublicInstancesOnly) {
    auto ask = [&](Ipv4Addr target) {
        TestFrame f(FrameBuilder()
                        .eth(kNeighborMac, MacAddr::broadcast(), ethertype::kArp)
                        .arp(1, kNeighborMac, kNeighbor, MacAddr{}, target)
                        .build());
        const auto m = run(f, kUplinkPort);
        return std::pair{m, f.bytes()};
    };
    for (Ipv4Addr target : {kHostAddr, kWebIp}) {
        auto [m, bytes] = ask(target);
        ASSERT_EQ(m.verdict, dp::Verdict::reply) << target.to_string();
        TestFrame reply(bytes);
        const auto* eth = reply.at<EtherHdr>(0);
        const auto* arp = reply.at<ArpHdr>(sizeof(EtherHdr));
        EXPECT_EQ(eth->dst, kNeighborMac);
        EXPECT_EQ(eth->src, kUplinkMac);
        EXPECT_EQ(arp->oper.host(), 2);
        EXPECT_EQ(arp->sha, kUplinkMac);
        EXPECT_EQ(Ipv4Addr::from_be(arp->spa), target);
        EXPECT_EQ(arp->tha, kNeighborMac);
        EXPECT_EQ(Ipv4Addr::from_be(arp->tpa), kNeighbor);
    }
    // nat and private instances, the gateways of the networks, strangers: not from outside.
    for (Ipv4Addr target : {kAppIp, kDbIp, kWebGateway, Ipv4Addr::from_octets(198, 51, 100, 99)})
        expect_drop(ask(target).first, DropReason::arp_not_for_us, target.to_string());
    // Who asked for calyx's address is about to talk to it: learnt (RFC 826's merge).
    EXPECT_EQ(neighbors_.lookup(kNeighbor), kNeighborMac);
}

// An ARP packet for anything but Ethernet and IPv4 addresses of their usual lengths is
// malformed: neither answered nor learnt from, whichever one field is off.
TEST_F(Uplink, ArpWithAnyWrongAddressLengthIsMalformed) {
    const struct {
        const char* name;
        size_t offset;  // in the ARP header
        uint8_t value;
    } cases[] = {{"hardware address length 8", 4, 8}, {"protocol address length 16", 5, 16}};
    for (const auto& c : cases) {
        auto bytes = FrameBuilder()
                         .eth(kNeighborMac, MacAddr::broadcast(), ethertype::kArp)
                         .arp(1, kNeighborMac, kNeighbor, MacAddr{}, kHostAddr)
                         .build();
        bytes[sizeof(EtherHdr) + c.offset] = c.value;
        TestFrame f(bytes);
        expect_drop(run(f, kUplinkPort), DropReason::arp_malformed, c.name);
    }
    EXPECT_FALSE(neighbors_.lookup(kNeighbor)) << "nothing learnt";
}

TEST_F(Uplink, LearnsOnlyNeighboursItWantsOrThatAskForIt) {
    const Ipv4Addr stranger = Ipv4Addr::from_octets(198, 51, 100, 77);
    const MacAddr stranger_mac{{0x02, 0, 0, 0, 0, 0x77}};
    TestFrame unsolicited(FrameBuilder()
                              .eth(stranger_mac, kUplinkMac, ethertype::kArp)
                              .arp(2, stranger_mac, stranger, kUplinkMac, kHostAddr)
                              .build());
    expect_drop(run(unsolicited, kUplinkPort), DropReason::arp_not_request, "unsolicited reply");
    EXPECT_FALSE(neighbors_.lookup(stranger));
    // Once a packet wanted it, the answer is learnt and consumed.
    neighbors_.want(stranger, ctx_.now_ns);
    TestFrame answer(unsolicited.bytes());
    EXPECT_EQ(run(answer, kUplinkPort).verdict, dp::Verdict::consumed);
    EXPECT_EQ(neighbors_.lookup(stranger), stranger_mac);
}

// An ARP for the gateway's address whose Ethernet source is `eth_src` and sender hardware
// address `sha` (a forged reply, as an attacker on the provider segment sends it).
TestFrame gateway_claim(MacAddr eth_src, MacAddr sha, uint16_t oper = 2) {
    return TestFrame(FrameBuilder()
                         .eth(eth_src, oper == 2 ? kUplinkMac : MacAddr::broadcast(), ethertype::kArp)
                         .arp(oper, sha, kUpstream, oper == 2 ? kUplinkMac : MacAddr{}, oper == 2 ? kHostAddr : kUpstream)
                         .build());
}

TEST_F(Uplink, ArpWhoseSenderIsNotItsEthernetSourceIsDroppedUnlearntAndUnanswered) {
    const MacAddr attacker{{0x02, 0, 0, 0, 0, 0x66}};
    TestFrame forged = gateway_claim(attacker, kNeighborMac);
    expect_drop(run(forged, kUplinkPort), DropReason::arp_sender_mismatch, "reply for the gateway");
    TestFrame ask(FrameBuilder()
                      .eth(attacker, MacAddr::broadcast(), ethertype::kArp)
                      .arp(1, kNeighborMac, kNeighbor, MacAddr{}, kHostAddr)
                      .build());
    expect_drop(run(ask, kUplinkPort), DropReason::arp_sender_mismatch, "request for the host address");
    EXPECT_EQ(drops(kUplinkPort, DropReason::arp_sender_mismatch), 2u);
    EXPECT_EQ(neighbors_.lookup(kUpstream), kUpstreamMac);
    EXPECT_FALSE(neighbors_.lookup(kNeighbor)) << "nothing learnt from it";
    for (const auto& e : neighbors_.entries()) EXPECT_FALSE(e.claimed) << "not even held";
}

TEST_F(Uplink, PoisonedReplyForTheGatewayIsHeldWhileTrafficKeepsGoingToTheKnownMac) {
    const MacAddr attacker{{0x02, 0, 0, 0, 0, 0x66}};
    for (uint16_t oper : {2, 1}) {  // a forged reply, and a forged gratuitous request
        TestFrame poison = gateway_claim(attacker, attacker, oper);
        expect_drop(run(poison, kUplinkPort), DropReason::arp_change_unverified, fmt::format("oper {}", oper));
    }
    EXPECT_EQ(neighbors_.lookup(kUpstream), kUpstreamMac);
    TestFrame* out = nullptr;
    ASSERT_EQ(tcp_out(kWeb, kServer, 40000, 443, kSyn, 1000, 0, &out).verdict, dp::Verdict::forward);
    EXPECT_EQ(out->at<EtherHdr>(0)->dst, kUpstreamMac) << "still to the gateway's known MAC";
    // Its known MAC answers the probe: the claim is gone and the reply is consumed as usual.
    TestFrame answer = gateway_claim(kUpstreamMac, kUpstreamMac);
    EXPECT_EQ(run(answer, kUplinkPort).verdict, dp::Verdict::consumed);
    for (const auto& e : neighbors_.entries()) EXPECT_FALSE(e.claimed);
}

// ---- frame 2: public egress with its own address ----

TEST_F(Uplink, Frame2PublicInstanceReachesTheInternetWithItsOwnAddress) {
    TestFrame* out = nullptr;
    const auto m = tcp_out(kWeb, kServer, 40000, 443, kSyn, 1000, 0, &out);
    ASSERT_EQ(m.verdict, dp::Verdict::forward);
    EXPECT_EQ(m.out_port, kUplinkPort);
    EXPECT_EQ(out->at<EtherHdr>(0)->dst, kUpstreamMac) << "to the gateway's MAC";
    EXPECT_EQ(out->at<EtherHdr>(0)->src, kUplinkMac);
    EXPECT_EQ(src_ip(*out), kWebIp) << "public: not masqueraded";
    EXPECT_EQ(out->at<Ipv4Hdr>(sizeof(EtherHdr))->ttl, 63);
    expect_checksums_valid(*out);
    // The reply comes back to web-1 with the gateway MAC as source.
    TestFrame* back = nullptr;
    const auto r = tcp_in(kServer, kWebIp, 443, 40000, kSyn | kAck, 5000, 1001, &back);
    ASSERT_EQ(r.verdict, dp::Verdict::forward);
    EXPECT_EQ(r.out_port, kWebPort);
    EXPECT_EQ(back->at<EtherHdr>(0)->src, kGatewayMac);
    EXPECT_EQ(back->at<EtherHdr>(0)->dst, kWebMac);
}

TEST_F(Uplink, OnLinkDestinationsAreResolvedThemselvesAndMissesAreCounted) {
    // Not resolved yet: dropped with its reason, and the control plane is asked to resolve.
    expect_drop(tcp_out(kWeb, kNeighbor, 40000, 22, kSyn, 1, 0), DropReason::neighbor_unresolved, "first packet");
    EXPECT_EQ(drops(kWebPort, DropReason::neighbor_unresolved), 1u);
    const auto due = neighbors_.due_requests(ctx_.now_ns);
    ASSERT_TRUE(std::any_of(due.begin(), due.end(), [](const auto& r) { return r.ip == kNeighbor && !r.unicast_to; }));
    neighbors_.learn(kNeighbor, kNeighborMac, ctx_.now_ns, false);
    TestFrame* out = nullptr;
    ASSERT_EQ(tcp_out(kWeb, kNeighbor, 40000, 22, kSyn, 1, 0, &out).verdict, dp::Verdict::forward);
    EXPECT_EQ(out->at<EtherHdr>(0)->dst, kNeighborMac) << "on-link: straight to the host, not via the gateway";
}

TEST_F(Uplink, UnresolvedGatewayDropsWithItsReason) {
    // A reload names a new gateway, which has not answered yet (the router pins it).
    std::string yaml = uplink_site();
    yaml.replace(yaml.find("gateway: 198.51.100.1"), 21, "gateway: 198.51.100.2");
    neighbors_.pin(Ipv4Addr::from_octets(198, 51, 100, 2), ctx_.now_ns);
    load(yaml);
    expect_drop(tcp_out(kWeb, kServer, 40000, 443, kSyn, 1, 0), DropReason::neighbor_unresolved, "gateway unknown");
}

// ---- frame 3: the Internet reaches a public instance, on 443 only ----

TEST_F(Uplink, Frame3InternetReachesPublicInstanceOn443Only) {
    const auto m = tcp_in(kServer, kWebIp, 50000, 443, kSyn, 1, 0);
    ASSERT_EQ(m.verdict, dp::Verdict::forward);
    EXPECT_EQ(m.out_port, kWebPort);
    expect_drop(tcp_in(kServer, kWebIp, 50001, 22, kSyn, 1, 0), DropReason::sg_no_ingress_rule, "22 is closed");
}

// ---- frame 6 and the private network: no Internet, whatever the groups say ----

TEST_F(Uplink, PrivateNetworkHasNoInternetEvenWithAllowAllGroups) {
    expect_drop(tcp_out(kDb, kServer, 40000, 443, kSyn, 1, 0), DropReason::private_isolated, "db-1 -> Internet");
    expect_drop(tcp_in(kServer, kDbIp, 40000, 22, kSyn, 1, 0), DropReason::private_isolated, "Internet -> db-1");
    TestFrame ping(FrameBuilder().eth(kDbMac, kGatewayMac).ipv4(kDbIp, kServer).icmp_echo(9, 1).build());
    expect_drop(run(ping, kDbPort), DropReason::private_isolated, "ping");
    // Inside the site it still reaches everyone its groups allow.
    EXPECT_EQ(tcp_out(kDb, kAppIp, 40001, 4545, kSyn, 1, 0).verdict, dp::Verdict::forward);
}

// ---- frame 7: nat egress is masqueraded; nothing unsolicited comes in ----

TEST_F(Uplink, Frame7NatInstanceIsMasqueradedAndRepliesFindTheirWayBack) {
    TestFrame* out = nullptr;
    ASSERT_EQ(tcp_out(kApp, kServer, 40000, 443, kSyn, 1000, 0, &out).verdict, dp::Verdict::forward);
    EXPECT_EQ(src_ip(*out), kHostAddr) << "the far side sees the host's address";
    const uint16_t external = src_port(*out);
    EXPECT_EQ(external, 40000) << "port preserved: in the range and free";
    EXPECT_EQ(out->at<EtherHdr>(0)->src, kUplinkMac);
    expect_checksums_valid(*out);

    TestFrame* back = nullptr;
    const auto r = tcp_in(kServer, kHostAddr, 443, external, kSyn | kAck, 5000, 1001, &back);
    ASSERT_EQ(r.verdict, dp::Verdict::forward) << drop_reason_info(r.reason).name;
    EXPECT_EQ(r.out_port, kAppPort);
    EXPECT_EQ(dst_ip(*back), kAppIp);
    EXPECT_EQ(back->at<TcpHdr>(sizeof(EtherHdr) + sizeof(Ipv4Hdr))->dst_port.host(), 40000);
    EXPECT_EQ(back->at<EtherHdr>(0)->dst, kAppMac);
    expect_checksums_valid(*back);
    EXPECT_EQ(tcp_out(kApp, kServer, 40000, 443, kAck, 1001, 5001).verdict, dp::Verdict::forward);
    EXPECT_EQ(nat_->in_use(ipproto::kTcp), 1u);
}

TEST_F(Uplink, PortOutsideTheRangeIsMappedIntoIt) {
    TestFrame* out = nullptr;
    ASSERT_EQ(tcp_out(kApp, kServer, 1022, 443, kSyn, 1000, 0, &out).verdict, dp::Verdict::forward);
    const uint16_t external = src_port(*out);
    EXPECT_GE(external, 20000);
    EXPECT_LE(external, 59999);
    EXPECT_EQ(tcp_in(kServer, kHostAddr, 443, external, kSyn | kAck, 5000, 1001).verdict, dp::Verdict::forward);
}

TEST_F(Uplink, NothingUnsolicitedReachesTheNatNetwork) {
    // To the host address on a port no connection holds: no mapping.
    expect_drop(tcp_in(kServer, kHostAddr, 443, 40000, kSyn, 1, 0), DropReason::nat_no_mapping, "no mapping");
    // Straight to the instance's inside address (someone routed 10.10.0.0/24 to the host).
    expect_drop(tcp_in(kServer, kAppIp, 443, 40000, kSyn, 1, 0), DropReason::nat_unsolicited, "inside address");
    // Even with a live connection, its inside tuple is no way in: only the external one.
    ASSERT_EQ(tcp_out(kApp, kServer, 40000, 443, kSyn, 1000, 0).verdict, dp::Verdict::forward);
    expect_drop(tcp_in(kServer, kAppIp, 443, 40000, kSyn | kAck, 5000, 1001), DropReason::nat_unsolicited,
                "reply to the inside tuple");
}

TEST_F(Uplink, UdpAndPingAreMasqueradedIcmpEchoByIdentifier) {
    TestFrame udp(FrameBuilder().eth(kAppMac, kGatewayMac).ipv4(kAppIp, kServer, ipproto::kUdp).udp(5353, 53, {1, 2, 3}).build());
    ASSERT_EQ(run(udp, kAppPort).verdict, dp::Verdict::forward);
    EXPECT_EQ(src_ip(udp), kHostAddr);
    expect_checksums_valid(udp);
    const uint16_t udp_external = udp.at<UdpHdr>(sizeof(EtherHdr) + sizeof(Ipv4Hdr))->src_port.host();
    TestFrame udp_back(FrameBuilder().eth(kUpstreamMac, kUplinkMac).ipv4(kServer, kHostAddr, ipproto::kUdp).udp(53, udp_external, {4}).build());
    ASSERT_EQ(run(udp_back, kUplinkPort).verdict, dp::Verdict::forward);
    EXPECT_EQ(udp_back.at<UdpHdr>(sizeof(EtherHdr) + sizeof(Ipv4Hdr))->dst_port.host(), 5353);
    expect_checksums_valid(udp_back);

    TestFrame ping(FrameBuilder().eth(kAppMac, kGatewayMac).ipv4(kAppIp, kServer).icmp_echo(7, 1).build());
    ASSERT_EQ(run(ping, kAppPort).verdict, dp::Verdict::forward);
    EXPECT_EQ(src_ip(ping), kHostAddr);
    expect_checksums_valid(ping);
    const uint16_t id = ping.at<IcmpHdr>(sizeof(EtherHdr) + sizeof(Ipv4Hdr))->id.host();
    TestFrame pong(FrameBuilder().eth(kUpstreamMac, kUplinkMac).ipv4(kServer, kHostAddr).icmp_echo(id, 1, 32, icmp::kEchoReply).build());
    const auto m = run(pong, kUplinkPort);
    ASSERT_EQ(m.verdict, dp::Verdict::forward) << drop_reason_info(m.reason).name;
    EXPECT_EQ(pong.at<IcmpHdr>(sizeof(EtherHdr) + sizeof(Ipv4Hdr))->id.host(), 7);
    EXPECT_EQ(dst_ip(pong), kAppIp);
    expect_checksums_valid(pong);
}

TEST_F(Uplink, IcmpErrorFromOutsideIsTranslatedBackToTheConnection) {
    TestFrame udp(FrameBuilder().eth(kAppMac, kGatewayMac).ipv4(kAppIp, kServer, ipproto::kUdp).udp(5353, 53, {1, 2, 3}).build());
    ASSERT_EQ(run(udp, kAppPort).verdict, dp::Verdict::forward);
    // A router says port unreachable, quoting the datagram as it left the host.
    std::vector<uint8_t> quoted(udp.frame.data() + sizeof(EtherHdr), udp.frame.data() + udp.frame.len);
    TestFrame error(FrameBuilder()
                        .eth(kUpstreamMac, kUplinkMac)
                        .ipv4(kServer, kHostAddr)
                        .raw({icmp::kDestUnreachable, icmp::kPortUnreachable, 0, 0, 0, 0, 0, 0})
                        .raw(quoted)
                        .build());
    auto* h = error.at<IcmpHdr>(sizeof(EtherHdr) + sizeof(Ipv4Hdr));
    h->checksum = internet_checksum(h, error.frame.len - sizeof(EtherHdr) - sizeof(Ipv4Hdr));
    const auto m = run(error, kUplinkPort);
    ASSERT_EQ(m.verdict, dp::Verdict::forward) << drop_reason_info(m.reason).name;
    EXPECT_EQ(m.out_port, kAppPort);
    EXPECT_EQ(dst_ip(error), kAppIp);
    // The instance sees its own datagram quoted: source 10.10.0.5:5353.
    const auto* inner = error.at<Ipv4Hdr>(sizeof(EtherHdr) + sizeof(Ipv4Hdr) + sizeof(IcmpHdr));
    EXPECT_EQ(Ipv4Addr::from_be(inner->src), kAppIp);
    EXPECT_EQ(error.at<UdpHdr>(sizeof(EtherHdr) + 2 * sizeof(Ipv4Hdr) + sizeof(IcmpHdr))->src_port.host(), 5353);
    expect_checksums_valid(error);
}

TEST_F(Uplink, PortExhaustionRefusesNewConnectionsAndKeepsTheOthers) {
    // 64 ports: the 65th connection towards one server finds none.
    nat_.reset();
    conntrack_.reset();
    load(uplink_site("30000-30063"));
    neighbors_.learn(kUpstream, kUpstreamMac, ctx_.now_ns, true);
    std::set<uint16_t> external;
    for (uint16_t i = 0; i < 64; ++i) {
        TestFrame* out = nullptr;
        ASSERT_EQ(tcp_out(kApp, kServer, static_cast<uint16_t>(41000 + i), 443, kSyn, 1, 0, &out).verdict,
                  dp::Verdict::forward) << i;
        external.insert(src_port(*out));
    }
    EXPECT_EQ(external.size(), 64u) << "every connection its own port towards the same server";
    expect_drop(tcp_out(kApp, kServer, 42000, 443, kSyn, 1, 0), DropReason::nat_exhausted, "65th");
    EXPECT_EQ(drops(kAppPort, DropReason::nat_exhausted), 1u);
    // Existing ones continue, both ways.
    EXPECT_EQ(tcp_in(kServer, kHostAddr, 443, *external.begin(), kSyn | kAck, 5000, 2).verdict, dp::Verdict::forward);
    // A server whose pool is another partition still gets ports (port overlapping, RFC 7857).
    Ipv4Addr other = Ipv4Addr::from_octets(192, 0, 2, 81);
    while (nat_->partition_of(ipproto::kTcp, other, 443) == nat_->partition_of(ipproto::kTcp, kServer, 443)) ++other.value;
    EXPECT_EQ(tcp_out(kApp, other, 42000, 443, kSyn, 1, 0).verdict, dp::Verdict::forward);
}

TEST_F(Uplink, ExpiryRemovesTheConnectionAndFreesThePortForReuse) {
    TestFrame udp(FrameBuilder().eth(kAppMac, kGatewayMac).ipv4(kAppIp, kServer, ipproto::kUdp).udp(40053, 53, {1}).build());
    ASSERT_EQ(run(udp, kAppPort).verdict, dp::Verdict::forward);
    EXPECT_EQ(conntrack_->size(), 1u) << "one key: the way back is the port's slot in the NAT connection map";
    EXPECT_EQ(nat_->in_use(ipproto::kUdp), 1u);
    // 31 s later the unreplied UDP connection (30 s) has expired; the sweep removes it.
    const uint64_t later = ctx_.now_ns + 31'000'000'000ull;
    EXPECT_EQ(conntrack_->sweep(later, conntrack_->slots(), nullptr), 1u) << "one connection";
    EXPECT_EQ(conntrack_->size(), 0u);
    EXPECT_EQ(nat_->in_use(ipproto::kUdp), 0u);
    // A late reply finds no mapping.
    ctx_.now_ns = later;
    TestFrame late(FrameBuilder().eth(kUpstreamMac, kUplinkMac).ipv4(kServer, kHostAddr, ipproto::kUdp).udp(53, 40053, {4}).build());
    expect_drop(run(late, kUplinkPort), DropReason::nat_no_mapping, "after expiry");
    // And the port serves again.
    TestFrame again(FrameBuilder().eth(kAppMac, kGatewayMac).ipv4(kAppIp, kServer, ipproto::kUdp).udp(40053, 53, {1}).build());
    ASSERT_EQ(run(again, kAppPort).verdict, dp::Verdict::forward);
    EXPECT_EQ(again.at<UdpHdr>(sizeof(EtherHdr) + sizeof(Ipv4Hdr))->src_port.host(), 40053);
}

TEST_F(Uplink, ReloadThatMakesANetworkNatCutsItsUntranslatedConnections) {
    ASSERT_EQ(tcp_out(kWeb, kServer, 40000, 443, kSyn, 1000, 0).verdict, dp::Verdict::forward);
    std::string yaml = uplink_site();
    yaml.replace(yaml.find("name: public, kind: public"), 26, "name: public, kind: nat   ");
    load(yaml);
    expect_drop(tcp_in(kServer, kWebIp, 443, 40000, kSyn | kAck, 5000, 1001), DropReason::sg_revoked,
                "a reply to the untranslated connection");
}

// ---- the uplink itself ----

TEST_F(Uplink, SpoofedSourcesAndTransitFromTheUplinkAreDropped) {
    for (Ipv4Addr spoofed : {kAppIp, kWebIp, kHostAddr})
        expect_drop(tcp_in(spoofed, kWebIp, 1, 443, kSyn, 1, 0), DropReason::martian_source, spoofed.to_string());
    // An address of the site's networks no instance has: dropped too, under its own reason.
    expect_drop(tcp_in(Ipv4Addr::from_octets(10, 20, 0, 99), kWebIp, 1, 443, kSyn, 1, 0),
                DropReason::site_source_unrouted, "10.20.0.99");
    expect_drop(tcp_in(kServer, Ipv4Addr::from_octets(192, 0, 2, 99), 1, 443, kSyn, 1, 0), DropReason::uplink_transit,
                "Internet to Internet");
}

TEST_F(Uplink, HostAddressAnswersPingFromBothSides) {
    TestFrame from_out(FrameBuilder().eth(kUpstreamMac, kUplinkMac).ipv4(kServer, kHostAddr).icmp_echo(3, 1).build());
    ASSERT_EQ(run(from_out, kUplinkPort).verdict, dp::Verdict::reply);
    EXPECT_EQ(from_out.at<EtherHdr>(0)->src, kUplinkMac);
    EXPECT_EQ(src_ip(from_out), kHostAddr);
    TestFrame from_in(FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kHostAddr).icmp_echo(3, 1).build());
    ASSERT_EQ(run(from_in, kWebPort).verdict, dp::Verdict::reply);
    EXPECT_EQ(from_in.at<EtherHdr>(0)->src, kGatewayMac);
}

TEST_F(Uplink, TtlExpiryFromOutsideIsAnsweredFromTheUplinkAddress) {
    TestFrame f(FrameBuilder().eth(kUpstreamMac, kUplinkMac).ipv4(kServer, kWebIp, ipproto::kTcp, 1).tcp(1, 443, kSyn).build());
    const auto m = run(f, kUplinkPort);
    ASSERT_EQ(m.verdict, dp::Verdict::reply);
    EXPECT_EQ(src_ip(f), kHostAddr);
    EXPECT_EQ(dst_ip(f), kServer);
    EXPECT_EQ(f.at<EtherHdr>(0)->dst, kUpstreamMac);
    EXPECT_EQ(f.at<EtherHdr>(0)->src, kUplinkMac);
    // Nothing about addresses of nat networks, though.
    TestFrame hidden(FrameBuilder().eth(kUpstreamMac, kUplinkMac).ipv4(kServer, Ipv4Addr::from_octets(10, 10, 0, 99), ipproto::kTcp).tcp(1, 443, kSyn).build());
    expect_drop(run(hidden, kUplinkPort), DropReason::no_route, "unassigned nat address");
}

TEST_F(Uplink, WithoutUplinkTheInternetHasNoRoute) {
    load(site_without_uplink());
    TestFrame f(FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kServer, ipproto::kTcp).tcp(1, 443, kSyn).build());
    const auto m = run(f, kWebPort);
    EXPECT_EQ(m.verdict, dp::Verdict::reply) << "ICMP net unreachable";
    EXPECT_EQ(drops(kWebPort, DropReason::no_route), 1u);
}

}  // namespace
}  // namespace calyx::test
