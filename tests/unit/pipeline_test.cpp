// Routing through the whole pipeline: what a router does with TTL, MTU, unknown
// destinations and its own addresses.
#include "dp/route.hpp"
#include "gateway_fixture.hpp"

namespace calyx::test {
namespace {

using Routing = GatewayTest;

bool ipv4_checksum_ok(TestFrame& f) {
    auto* ip = f.at<Ipv4Hdr>(sizeof(EtherHdr));
    return internet_checksum(ip, ip->header_length()) == 0;
}

TEST_F(Routing, PingBetweenInstancesIsForwardedWithTtlDecrementedAndNewMacs) {
    TestFrame f(FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kAppIp, ipproto::kIcmp, 64).icmp_echo(9, 1).build());
    const auto m = run(f, kWebPort);
    ASSERT_EQ(m.verdict, dp::Verdict::forward);
    EXPECT_EQ(m.out_port, kAppPort);
    auto* eth = f.at<EtherHdr>(0);
    EXPECT_EQ(eth->src, kGatewayMac);
    EXPECT_EQ(eth->dst, kAppMac);
    EXPECT_EQ(f.at<Ipv4Hdr>(sizeof(EtherHdr))->ttl, 63);
    EXPECT_TRUE(ipv4_checksum_ok(f)) << "incremental checksum update after TTL decrement";
    EXPECT_EQ(counters_->ports[kWebPort].drops, (std::array<uint64_t, kDropReasonCount>{}));
}

TEST_F(Routing, IncrementalTtlChecksumMatchesFullRecomputationForEveryTtl) {
    for (int ttl = 2; ttl <= 255; ++ttl) {
        TestFrame f(FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kDbIp, ipproto::kUdp, static_cast<uint8_t>(ttl)).udp(1000, 2000).build());
        ASSERT_EQ(run(f, kWebPort).verdict, dp::Verdict::forward);
        ASSERT_TRUE(ipv4_checksum_ok(f)) << "ttl " << ttl;
    }
}

TEST_F(Routing, PingToOwnGatewayIsAnswered) {
    TestFrame f(FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kWebGateway).icmp_echo(7, 3, 56).build());
    const auto m = run(f, kWebPort);
    ASSERT_EQ(m.verdict, dp::Verdict::reply);
    auto* eth = f.at<EtherHdr>(0);
    auto* ip = f.at<Ipv4Hdr>(sizeof(EtherHdr));
    auto* icmp_hdr = f.at<IcmpHdr>(sizeof(EtherHdr) + sizeof(Ipv4Hdr));
    EXPECT_EQ(eth->dst, kWebMac);
    EXPECT_EQ(eth->src, kGatewayMac);
    EXPECT_EQ(Ipv4Addr::from_be(ip->src), kWebGateway);
    EXPECT_EQ(Ipv4Addr::from_be(ip->dst), kWebIp);
    EXPECT_EQ(icmp_hdr->type, icmp::kEchoReply);
    EXPECT_EQ(icmp_hdr->id.host(), 7);
    EXPECT_EQ(icmp_hdr->seq.host(), 3);
    EXPECT_TRUE(ipv4_checksum_ok(f));
    EXPECT_EQ(internet_checksum(icmp_hdr, f.frame.len - sizeof(EtherHdr) - sizeof(Ipv4Hdr)), 0);
    EXPECT_EQ(counters_->icmp_echo_replies, 1u);
}

// The gateway answers whole datagrams only: a fragment of a ping to it is not answered.
TEST_F(Routing, FragmentToTheGatewayIsNotAnswered) {
    TestFrame f(FrameBuilder()
                    .eth(kWebMac, kGatewayMac)
                    .ipv4(kWebIp, kWebGateway, ipproto::kIcmp, 64, Ipv4Hdr::kMoreFragments)
                    .icmp_echo(1, 1, 24)
                    .build());
    const auto m = run(f, kWebPort);
    EXPECT_EQ(m.verdict, dp::Verdict::drop);
    EXPECT_EQ(m.reason, DropReason::to_gateway_unhandled) << drop_reason_info(m.reason).name;
}

// A BOOTP request from web-1 (RFC 2131): its MAC, the magic cookie, the message type and
// `more` options, END.
std::vector<uint8_t> dhcp_from_web(uint8_t type, std::vector<uint8_t> more = {}) {
    std::vector<uint8_t> b(236, 0);
    b[0] = 1, b[1] = 1, b[2] = 6;
    b[4] = 0x12, b[5] = 0x34, b[6] = 0x56, b[7] = 0x78;
    std::copy(kWebMac.bytes.begin(), kWebMac.bytes.end(), b.begin() + 28);
    b.insert(b.end(), {99, 130, 83, 99, 53, 1, type});
    b.insert(b.end(), more.begin(), more.end());
    b.push_back(255);
    return FrameBuilder()
        .eth(kWebMac, MacAddr::broadcast())
        .ipv4(Ipv4Addr{}, Ipv4Addr{0xffffffff}, ipproto::kUdp)
        .udp(68, 67, b)
        .build();
}

// What the DHCP responder did is counted: replies by type, releases and declines.
TEST_F(Routing, DhcpRepliesReleasesAndDeclinesAreCounted) {
    TestFrame discover(dhcp_from_web(1));
    EXPECT_EQ(run(discover, kWebPort).verdict, dp::Verdict::reply);
    EXPECT_EQ(counters_->dhcp_replies[static_cast<size_t>(dp::DhcpReplyType::offer)], 1u);
    EXPECT_EQ(counters_->dhcp_declines, 0u);
    const std::vector<uint8_t> requested_and_server{50, 4, 203, 0, 113, 10, 54, 4, 203, 0, 113, 1};
    TestFrame decline(dhcp_from_web(4, requested_and_server));
    EXPECT_EQ(run(decline, kWebPort).verdict, dp::Verdict::consumed);
    EXPECT_EQ(counters_->dhcp_declines, 1u);
    EXPECT_EQ(counters_->dhcp_releases, 0u);
    EXPECT_EQ(counters_->dhcp_replies[static_cast<size_t>(dp::DhcpReplyType::offer)], 1u) << "a decline gets no reply";
}

TEST_F(Routing, OtherTrafficToTheGatewayIsDropped) {
    TestFrame f(FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kWebGateway, ipproto::kTcp).tcp(40000, 22, TcpHdr::kSyn).build());
    const auto m = run(f, kWebPort);
    EXPECT_EQ(m.verdict, dp::Verdict::drop);
    EXPECT_EQ(m.reason, DropReason::to_gateway_unhandled);
}

// Checks an ICMP error in `f` that quotes the datagram `original` (starting at its IPv4 header).
void expect_icmp_error(TestFrame& f, uint8_t type, uint8_t code, Ipv4Addr from, Ipv4Addr to,
                       const std::vector<uint8_t>& original, uint16_t mtu = 0) {
    auto* eth = f.at<EtherHdr>(0);
    auto* ip = f.at<Ipv4Hdr>(sizeof(EtherHdr));
    ASSERT_NE(ip, nullptr);
    EXPECT_EQ(eth->src, kGatewayMac);
    EXPECT_EQ(Ipv4Addr::from_be(ip->src), from);
    EXPECT_EQ(Ipv4Addr::from_be(ip->dst), to);
    EXPECT_EQ(ip->protocol, ipproto::kIcmp);
    EXPECT_EQ(ip->tos, 0xc0) << "precedence internetwork control, as Linux marks its ICMP errors";
    EXPECT_EQ(internet_checksum(ip, sizeof(Ipv4Hdr)), 0);
    EXPECT_EQ(ip->total_length.host(), f.frame.len - sizeof(EtherHdr));
    auto* h = f.at<IcmpHdr>(sizeof(EtherHdr) + sizeof(Ipv4Hdr));
    EXPECT_EQ(h->type, type);
    EXPECT_EQ(h->code, code);
    EXPECT_EQ(h->id.host(), 0) << "unused: zero (RFC 792; RFC 1191 before the next-hop MTU)";
    EXPECT_EQ(h->seq.host(), mtu);
    EXPECT_EQ(internet_checksum(h, f.frame.len - sizeof(EtherHdr) - sizeof(Ipv4Hdr)), 0);
    const size_t quoted_at = sizeof(EtherHdr) + sizeof(Ipv4Hdr) + sizeof(IcmpHdr);
    const size_t quoted = f.frame.len - quoted_at;
    ASSERT_LE(quoted, original.size());
    EXPECT_GE(quoted, std::min<size_t>(original.size(), 28u)) << "at least header + 8 bytes";
    EXPECT_TRUE(std::equal(original.begin(), original.begin() + quoted, f.frame.data() + quoted_at));
    EXPECT_LE(f.frame.len - sizeof(EtherHdr), 576u);
}

TEST_F(Routing, TtlExpiryAnswersTimeExceededQuotingTheOriginal) {
    const auto bytes = FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kAppIp, ipproto::kUdp, 1).udp(5000, 33434, std::vector<uint8_t>(800, 0xab)).build();
    const std::vector<uint8_t> original(bytes.begin() + sizeof(EtherHdr), bytes.end());
    TestFrame f(bytes);
    const auto m = run(f, kWebPort);
    ASSERT_EQ(m.verdict, dp::Verdict::reply);
    expect_icmp_error(f, icmp::kTimeExceeded, 0, kWebGateway, kWebIp, original);
    EXPECT_EQ(drops(kWebPort, DropReason::ttl_exceeded), 1u);
    EXPECT_EQ(counters_->icmp_errors_sent, 1u);
}

TEST_F(Routing, UnknownDestinationAnswersNetUnreachable) {
    const auto bytes = FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, Ipv4Addr::from_octets(198, 18, 0, 1)).icmp_echo(1, 1).build();
    TestFrame f(bytes);
    ASSERT_EQ(run(f, kWebPort).verdict, dp::Verdict::reply);
    expect_icmp_error(f, icmp::kDestUnreachable, icmp::kNetUnreachable, kWebGateway, kWebIp,
                      {bytes.begin() + sizeof(EtherHdr), bytes.end()});
    EXPECT_EQ(drops(kWebPort, DropReason::no_route), 1u);
}

TEST_F(Routing, UnassignedAddressInAnInstanceNetworkAnswersHostUnreachable) {
    const auto bytes = FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, Ipv4Addr::from_octets(10, 10, 0, 99)).icmp_echo(1, 1).build();
    TestFrame f(bytes);
    ASSERT_EQ(run(f, kWebPort).verdict, dp::Verdict::reply);
    expect_icmp_error(f, icmp::kDestUnreachable, icmp::kHostUnreachable, kWebGateway, kWebIp,
                      {bytes.begin() + sizeof(EtherHdr), bytes.end()});
}

TEST_F(Routing, PacketLargerThanEgressMtuWithDfAnswersFragmentationNeeded) {
    // app-1's network has MTU 1400.
    const auto bytes = FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kAppIp, ipproto::kUdp).udp(1, 2, std::vector<uint8_t>(1450, 1)).build();
    TestFrame f(bytes);
    ASSERT_EQ(run(f, kWebPort).verdict, dp::Verdict::reply);
    expect_icmp_error(f, icmp::kDestUnreachable, icmp::kFragmentationNeeded, kWebGateway, kWebIp,
                      {bytes.begin() + sizeof(EtherHdr), bytes.end()}, 1400);
    EXPECT_EQ(drops(kWebPort, DropReason::mtu_exceeded), 1u);
}

// The MTU is the largest datagram that fits: one of exactly 1400 bytes goes through.
TEST_F(Routing, PacketOfExactlyTheEgressMtuIsForwarded) {
    const auto bytes = FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kAppIp, ipproto::kUdp).udp(1, 2, std::vector<uint8_t>(1400 - 28, 1)).build();
    ASSERT_EQ(bytes.size(), sizeof(EtherHdr) + 1400);
    TestFrame f(bytes);
    const auto m = run(f, kWebPort);
    EXPECT_EQ(m.verdict, dp::Verdict::forward) << drop_reason_info(m.reason).name;
    EXPECT_EQ(drops(kWebPort, DropReason::mtu_exceeded), 0u);
}

TEST_F(Routing, PacketLargerThanEgressMtuWithoutDfIsDropped) {
    TestFrame f(FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kAppIp, ipproto::kUdp, 64, 0).udp(1, 2, std::vector<uint8_t>(1450, 1)).build());
    const auto m = run(f, kWebPort);
    EXPECT_EQ(m.verdict, dp::Verdict::drop);
    EXPECT_EQ(m.reason, DropReason::mtu_exceeded);
}

TEST_F(Routing, NoIcmpErrorAboutAnIcmpErrorOrANonFirstFragment) {
    TestFrame error(FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, Ipv4Addr::from_octets(198, 18, 0, 1)).icmp_echo(0, 0, 8, icmp::kDestUnreachable).build());
    auto m = run(error, kWebPort);
    EXPECT_EQ(m.verdict, dp::Verdict::drop);
    EXPECT_EQ(m.reason, DropReason::no_route);
    // The first fragment passes and opens the way for the rest of its datagram...
    TestFrame first(FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kAppIp, ipproto::kUdp, 2, Ipv4Hdr::kMoreFragments).udp(1, 2, std::vector<uint8_t>(32, 0)).build());
    ASSERT_EQ(run(first, kWebPort).verdict, dp::Verdict::forward);
    // ...whose next fragment expires on the way: dropped, but no ICMP error about it.
    TestFrame fragment(FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kAppIp, ipproto::kUdp, 1, 5).raw(std::vector<uint8_t>(40, 0)).build());
    m = run(fragment, kWebPort);
    EXPECT_EQ(m.verdict, dp::Verdict::drop);
    EXPECT_EQ(m.reason, DropReason::ttl_exceeded);
    EXPECT_EQ(counters_->icmp_errors_sent, 0u);
}

TEST_F(Routing, IcmpErrorsAreRateLimitedAndTheBudgetRefillsWithTime) {
    // The site allows a burst of 3 and 10 per second.
    auto expired = [&] {
        TestFrame f(FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kAppIp, ipproto::kUdp, 1).udp(1, 2).build());
        return run(f, kWebPort).verdict;
    };
    for (int i = 0; i < 3; ++i) EXPECT_EQ(expired(), dp::Verdict::reply) << i;
    EXPECT_EQ(expired(), dp::Verdict::drop);
    EXPECT_EQ(counters_->icmp_errors_rate_limited, 1u);
    ctx_.now_ns += 100'000'000;  // 0.1 s: one token at 10/s
    EXPECT_EQ(expired(), dp::Verdict::reply);
    EXPECT_EQ(expired(), dp::Verdict::drop);
    EXPECT_EQ(drops(kWebPort, DropReason::ttl_exceeded), 6u) << "every expired packet counted once";
}

// The attack: app-1 provokes errors by the thousand (TTL 1, unassigned addresses). web-1 still
// gets the fragmentation-needed error its path MTU discovery needs, and its own budget is whole.
TEST_F(Routing, OneInstanceExhaustingItsIcmpErrorBudgetLeavesOthersTheirs) {
    for (int i = 0; i < 1000; ++i) {
        TestFrame ttl(FrameBuilder().eth(kAppMac, kGatewayMac).ipv4(kAppIp, kWebIp, ipproto::kUdp, 1).udp(1, 2).build());
        run(ttl, kAppPort);
        TestFrame unassigned(FrameBuilder().eth(kAppMac, kGatewayMac).ipv4(kAppIp, Ipv4Addr::from_octets(10, 10, 0, 99), ipproto::kUdp).udp(1, 2).build());
        run(unassigned, kAppPort);
    }
    EXPECT_EQ(counters_->icmp_errors_sent, 3u) << "app-1 had its burst";
    EXPECT_EQ(counters_->icmp_errors_rate_limited, 1997u);
    // web-1 sends 1450 bytes with DF towards app-1's network (MTU 1400), several times.
    for (int i = 0; i < 3; ++i) {
        TestFrame big(FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kAppIp, ipproto::kUdp).udp(1, 2, std::vector<uint8_t>(1422, 1)).build());
        const auto m = run(big, kWebPort);
        ASSERT_EQ(m.verdict, dp::Verdict::reply) << "fragmentation needed #" << i << " reached web-1";
        EXPECT_EQ(big.at<IcmpHdr>(sizeof(EtherHdr) + sizeof(Ipv4Hdr))->code, icmp::kFragmentationNeeded);
    }
    EXPECT_EQ(counters_->icmp_errors_rate_limited, 1997u);
}

// A fragment of a UDP datagram with IP id `id` (first: with the UDP header, more to come).
std::vector<uint8_t> udp_fragment(MacAddr mac, Ipv4Addr src, Ipv4Addr dst, uint16_t id, bool first) {
    auto b = first ? FrameBuilder().eth(mac, kGatewayMac).ipv4(src, dst, ipproto::kUdp, 64, Ipv4Hdr::kMoreFragments)
                         .udp(5000, 6000, std::vector<uint8_t>(64, 1)).build()
                   : FrameBuilder().eth(mac, kGatewayMac).ipv4(src, dst, ipproto::kUdp, 64, 9)
                         .raw(std::vector<uint8_t>(40, 2)).build();
    auto* ip = reinterpret_cast<Ipv4Hdr*>(b.data() + sizeof(EtherHdr));
    ip->id = Be16::from_host(id);
    ip->checksum = 0;
    ip->checksum = internet_checksum(ip, sizeof(Ipv4Hdr));
    return b;
}

// The attack: app-1 sends first fragments by the thousand while web-1 is in the middle of a
// fragmented datagram. app-1 only recycles its own slots; web-1's later fragment still passes.
TEST_F(Routing, FragmentFloodFromOneInstanceDoesNotEvictAnotherInstancesDatagram) {
    TestFrame first(udp_fragment(kWebMac, kWebIp, kDbIp, 7, true));
    ASSERT_EQ(run(first, kWebPort).verdict, dp::Verdict::forward);
    for (uint16_t id = 0; id < 20000; ++id) {
        TestFrame flood(udp_fragment(kAppMac, kAppIp, kDbIp, id, true));
        ASSERT_EQ(run(flood, kAppPort).verdict, dp::Verdict::forward);
    }
    EXPECT_LE(fragments_->held(kAppPort), dp::FragmentVerdicts::kSlots);
    TestFrame later(udp_fragment(kWebMac, kWebIp, kDbIp, 7, false));
    const auto m = run(later, kWebPort);
    EXPECT_EQ(m.verdict, dp::Verdict::forward) << "web-1's datagram was evicted: " << drop_reason_info(m.reason).name;
    // The flooder's own latest datagram is still followed.
    TestFrame own(udp_fragment(kAppMac, kAppIp, kDbIp, 19999, false));
    EXPECT_EQ(run(own, kAppPort).verdict, dp::Verdict::forward);
}

TEST_F(Routing, MulticastAndZeroDestinationsAreMartians) {
    for (Ipv4Addr dst : {Ipv4Addr::from_octets(224, 0, 0, 251), Ipv4Addr{}, Ipv4Addr::from_octets(127, 0, 0, 1)}) {
        TestFrame f(FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, dst, ipproto::kUdp).udp(5353, 5353).build());
        const auto m = run(f, kWebPort);
        EXPECT_EQ(m.reason, DropReason::martian_destination) << dst.to_string();
    }
}

TEST_F(Routing, PacketToTheSendersOwnAddressIsAHairpinDrop) {
    TestFrame f(FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kWebIp).icmp_echo(1, 1).build());
    EXPECT_EQ(run(f, kWebPort).reason, DropReason::hairpin);
}

TEST_F(Routing, BatchWithMixedTrafficGivesEachPacketItsOwnVerdict) {
    TestFrame ping(FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kDbIp).icmp_echo(1, 1).build());
    TestFrame spoof(FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kDbIp, kAppIp).icmp_echo(1, 1).build());
    TestFrame arp(FrameBuilder().eth(kWebMac, MacAddr::broadcast(), ethertype::kArp).arp(1, kWebMac, kWebIp, MacAddr{}, kWebGateway).build());
    dp::Batch batch;
    batch.count = 3;
    TestFrame* frames[] = {&ping, &spoof, &arp};
    for (uint16_t i = 0; i < 3; ++i) {
        batch.frames[i] = frames[i]->frame;
        batch.admit(i, kWebPort);
    }
    dp::run_pipeline(batch, *snap_, ctx_);
    EXPECT_EQ(batch.meta[0].verdict, dp::Verdict::forward);
    EXPECT_EQ(batch.meta[0].out_port, kDbPort);
    EXPECT_EQ(batch.meta[1].verdict, dp::Verdict::drop);
    EXPECT_EQ(batch.meta[1].reason, DropReason::src_ipv4_spoofed);
    EXPECT_EQ(batch.meta[2].verdict, dp::Verdict::reply);
    EXPECT_EQ(total_drops(kWebPort), 1u);
}

// The worker reuses one batch per burst: slots beyond `count` hold the previous burst's
// packets, verdicts included. The drop counters count the batch's own packets only.
TEST_F(Routing, DropsLeftInSlotsBeyondTheBatchAreNotCountedAgain) {
    TestFrame ping(FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kDbIp).icmp_echo(1, 1).build());
    TestFrame stale(FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kDbIp, kAppIp).icmp_echo(1, 1).build());
    dp::Batch batch;
    batch.count = 1;
    batch.frames[0] = ping.frame;
    batch.meta[0].in_port = kWebPort;
    batch.frames[1] = stale.frame;  // dropped in the previous burst and counted then
    batch.meta[1].in_port = kWebPort;
    batch.drop(1, DropReason::src_ipv4_spoofed);
    dp::run_pipeline(batch, *snap_, ctx_);
    EXPECT_EQ(batch.meta[0].verdict, dp::Verdict::forward);
    EXPECT_EQ(total_drops(kWebPort), 0u);
}

}  // namespace
}  // namespace calyx::test
