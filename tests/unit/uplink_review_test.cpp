// A review of the uplink and masquerade data path, through the whole pipeline (GatewayTest).
// The tests after "Regressions" each failed on the code the review read, one defect each
// (leaked keys and ports, untranslated escapes after reloads, martian sources, a forgotten busy
// neighbour, ...); the others add coverage the first tests lacked.
#include <fmt/format.h>

#include <random>
#include <set>

#include "calyx/headers.hpp"
#include "dp/conntrack.hpp"
#include "dp/nat.hpp"
#include "dp/classify.hpp"
#include "dp/forward.hpp"
#include "dp/local.hpp"
#include "dp/neighbor.hpp"
#include "dp/policy.hpp"
#include "dp/route.hpp"
#include "uplink_fixture.hpp"

namespace calyx::test {
namespace {

constexpr uint8_t kSyn = TcpHdr::kSyn, kAck = TcpHdr::kAck, kRst = TcpHdr::kRst, kFin = TcpHdr::kFin;

constexpr uint64_t kSecond = 1'000'000'000ull;

std::string with_kind(std::string yaml, const std::string& net, const std::string& kind) {
    const std::string from = fmt::format("name: {}, kind: {}", net, net);
    const size_t at = yaml.find(from);
    return yaml.replace(at, from.size(), fmt::format("name: {}, kind: {}", net, kind));
}

constexpr size_t kL4 = sizeof(EtherHdr) + sizeof(Ipv4Hdr);

// An ICMP error from `from` to `to` quoting the IPv4 datagram of `quoted` (a frame).
std::vector<uint8_t> icmp_error(MacAddr src_mac, MacAddr dst_mac, Ipv4Addr from, Ipv4Addr to, uint8_t type,
                                uint8_t code, TestFrame& quoted, size_t quote_bytes = 0) {
    const uint8_t* q = quoted.frame.data() + kL3;
    size_t n = quoted.frame.len - kL3;
    if (quote_bytes) n = std::min(n, quote_bytes);
    std::vector<uint8_t> bytes = FrameBuilder()
                                     .eth(src_mac, dst_mac)
                                     .ipv4(from, to)
                                     .raw({type, code, 0, 0, 0, 0, 0, 0})
                                     .raw(std::vector<uint8_t>(q, q + n))
                                     .build();
    auto* h = reinterpret_cast<IcmpHdr*>(bytes.data() + kL4);
    h->checksum = 0;
    h->checksum = internet_checksum(h, bytes.size() - kL4);
    return bytes;
}

class UplinkReview : public GatewayTest {
protected:
    void SetUp() override {
        load(uplink_site());
        ASSERT_TRUE(neighbors_.learn(kUpstream, kUpstreamMac, ctx_.now_ns, true));
    }
    void reset(const std::string& yaml) {
        snap_.reset();
        conntrack_.reset();
        nat_.reset();
        load(yaml);
        ASSERT_TRUE(neighbors_.learn(kUpstream, kUpstreamMac, ctx_.now_ns, true));
    }

    TestFrame& keep(std::vector<uint8_t> bytes) {
        frames_.push_back(std::make_unique<TestFrame>(bytes));
        return *frames_.back();
    }
    TestFrame& tcp_frame_out(const Inside& from, Ipv4Addr to, uint16_t sport, uint16_t dport, uint8_t flags,
                             uint32_t seq, uint32_t ack) {
        return keep(FrameBuilder()
                        .eth(from.mac, kGatewayMac)
                        .ipv4(from.ip, to, ipproto::kTcp)
                        .tcp(sport, dport, flags, seq, ack)
                        .build());
    }
    TestFrame& tcp_frame_in(Ipv4Addr from, Ipv4Addr to, uint16_t sport, uint16_t dport, uint8_t flags,
                            uint32_t seq, uint32_t ack) {
        return keep(FrameBuilder()
                        .eth(kUpstreamMac, kUplinkMac)
                        .ipv4(from, to, ipproto::kTcp)
                        .tcp(sport, dport, flags, seq, ack)
                        .build());
    }
    dp::PacketMeta tcp_out(const Inside& from, Ipv4Addr to, uint16_t sport, uint16_t dport, uint8_t flags,
                           uint32_t seq, uint32_t ack, TestFrame** out = nullptr) {
        TestFrame& f = tcp_frame_out(from, to, sport, dport, flags, seq, ack);
        if (out) *out = &f;
        return run(f, from.port);
    }
    dp::PacketMeta tcp_in(Ipv4Addr from, Ipv4Addr to, uint16_t sport, uint16_t dport, uint8_t flags,
                          uint32_t seq, uint32_t ack, TestFrame** out = nullptr) {
        TestFrame& f = tcp_frame_in(from, to, sport, dport, flags, seq, ack);
        if (out) *out = &f;
        return run(f, kUplinkPort);
    }
    TestFrame& udp_frame_out(const Inside& from, Ipv4Addr to, uint16_t sport, uint16_t dport,
                             const std::vector<uint8_t>& payload = {1, 2, 3}) {
        return keep(FrameBuilder().eth(from.mac, kGatewayMac).ipv4(from.ip, to, ipproto::kUdp).udp(sport, dport, payload).build());
    }
    TestFrame& udp_frame_in(Ipv4Addr from, Ipv4Addr to, uint16_t sport, uint16_t dport,
                            const std::vector<uint8_t>& payload = {4, 5}) {
        return keep(FrameBuilder().eth(kUpstreamMac, kUplinkMac).ipv4(from, to, ipproto::kUdp).udp(sport, dport, payload).build());
    }
    // Several frames from one port in one batch, as a burst from a queue.
    std::vector<dp::PacketMeta> run_batch(const std::vector<TestFrame*>& fs, uint16_t port) {
        dp::Batch batch;
        batch.count = static_cast<uint16_t>(fs.size());
        for (size_t i = 0; i < fs.size(); ++i) {
            batch.frames[i] = fs[i]->frame;
            batch.admit(i, port);
        }
        dp::run_pipeline(batch, *snap_, ctx_);
        std::vector<dp::PacketMeta> out;
        for (size_t i = 0; i < fs.size(); ++i) {
            fs[i]->frame = batch.frames[i];
            out.push_back(batch.meta[i]);
        }
        return out;
    }
    static std::string why(const dp::PacketMeta& m) {
        return m.verdict == dp::Verdict::drop ? std::string(drop_reason_info(m.reason).name) : "not dropped";
    }
    static uint16_t tcp_sport(TestFrame& f) { return f.at<TcpHdr>(kL4)->src_port.host(); }
    static uint16_t tcp_dport(TestFrame& f) { return f.at<TcpHdr>(kL4)->dst_port.host(); }
    static uint16_t udp_sport(TestFrame& f) { return f.at<UdpHdr>(kL4)->src_port.host(); }
    static uint16_t udp_dport(TestFrame& f) { return f.at<UdpHdr>(kL4)->dst_port.host(); }
    static Ipv4Addr src_ip(TestFrame& f) { return Ipv4Addr::from_be(f.at<Ipv4Hdr>(kL3)->src); }
    static Ipv4Addr dst_ip(TestFrame& f) { return Ipv4Addr::from_be(f.at<Ipv4Hdr>(kL3)->dst); }

    // Everything that can expire has: the sweep at `now` removes it.
    uint32_t sweep_at(uint64_t now) { return conntrack_->sweep(now, conntrack_->slots(), nullptr); }

    std::vector<std::unique_ptr<TestFrame>> frames_;
};

// =====================================================================================
// Regressions
// =====================================================================================

// conntrack_state.cpp tcp_update: an RST before any reply ("connection refused") sets
// expires_s = 0, i.e. marks the entry dead *without* removing its key. The sweep skips dead
// entries (conntrack.cpp sweep: `if (e.dead() ...) continue`), so for a masqueraded
// connection the key and the external port both stay forever.
TEST_F(UplinkReview, RefusedNatConnectionGivesBackItsPortAndBothKeys) {
    TestFrame* syn = nullptr;
    ASSERT_EQ(tcp_out(kApp, kServer, 40000, 443, kSyn, 1000, 0, &syn).verdict, dp::Verdict::forward);
    const uint16_t external = tcp_sport(*syn);
    // The server refuses: RST|ACK acknowledging the SYN.
    const auto rst = tcp_in(kServer, kHostAddr, 443, external, kRst | kAck, 0, 1001);
    ASSERT_EQ(rst.verdict, dp::Verdict::forward) << why(rst);
    EXPECT_EQ(rst.out_port, kAppPort);
    // Long after anything could still be alive, the sweep must have given everything back.
    sweep_at(ctx_.now_ns + 3600 * kSecond);
    EXPECT_EQ(nat_->in_use(ipproto::kTcp), 0u) << "the refused connection's external port is never released";
    EXPECT_EQ(conntrack_->size(), 0u) << "the refused connection's key stays in the table";
}

// The same root cause without NAT: every SYN to a closed port of a public instance (the
// instance answers RST) leaves one key in the connection table for good, so a port scan
// fills the table (then every new connection is dropped as ct_table_full).
TEST_F(UplinkReview, RefusedConnectionToAPublicInstanceIsSweptAway) {
    for (uint16_t sport = 50000; sport < 50010; ++sport) {
        ASSERT_EQ(tcp_in(kServer, kWebIp, sport, 443, kSyn, 7000, 0).verdict, dp::Verdict::forward);
        const auto rst = tcp_out(kWeb, kServer, 443, sport, kRst | kAck, 0, 7001);
        ASSERT_EQ(rst.verdict, dp::Verdict::forward) << why(rst);
    }
    sweep_at(ctx_.now_ns + 3600 * kSecond);
    EXPECT_EQ(conntrack_->size(), 0u) << "refused connections' keys are never removed";
}

// A masqueraded connection takes one key of the table, like any other: its way back in is the
// NAT allocator's connection map, not a second key. With room for exactly one more key, it
// opens and its replies come back (when it took two keys, this was ct_table_full).
TEST_F(UplinkReview, AMasqueradedConnectionTakesOneKeyOfTheTable) {
    const uint32_t fill = conntrack_->capacity() - conntrack_->reserved() - 1;
    ASSERT_TRUE(conntrack_->reserve(fill, ctx_.now_ns));
    const uint32_t keys_before = conntrack_->size();
    TestFrame* syn = nullptr;
    const auto out = tcp_out(kApp, kServer, 40000, 443, kSyn, 1000, 0, &syn);
    ASSERT_EQ(out.verdict, dp::Verdict::forward) << why(out);
    EXPECT_EQ(src_ip(*syn), kHostAddr);
    const auto back = tcp_in(kServer, kHostAddr, 443, tcp_sport(*syn), kSyn | kAck, 5000, 1001);
    EXPECT_EQ(back.verdict, dp::Verdict::forward) << why(back);
    EXPECT_EQ(back.out_port, kAppPort);
    ASSERT_EQ(tcp_out(kApp, kServer, 40000, 443, kAck, 1001, 5001).verdict, dp::Verdict::forward);
    EXPECT_EQ(conntrack_->size(), keys_before + 1);
    // Now the table is full and nothing in it may be evicted (established).
    const auto full = tcp_out(kApp, kServer, 40001, 443, kSyn, 1000, 0);
    EXPECT_EQ(full.reason, DropReason::ct_table_full) << why(full);
    conntrack_->unreserve(fill);
}

// The connection map's slots are per pool of remote endpoints, and a pool is shared: a packet
// from another remote endpoint of the same pool to a mapped external port finds the slot of a
// connection that is not its own. It must not be let in as that connection's reply: nat_in
// checks the connection's remote address and port (ConnTable::outside_connection).
TEST_F(UplinkReview, AnotherRemoteOfTheSamePoolDoesNotGetThroughAMappedPort) {
    TestFrame* syn = nullptr;
    ASSERT_EQ(tcp_out(kApp, kServer, 40000, 443, kSyn, 1000, 0, &syn).verdict, dp::Verdict::forward);
    const uint16_t ext = tcp_sport(*syn);
    const uint32_t pool = nat_->partition_of(ipproto::kTcp, kServer, 443);
    // Another address, and another port of the server, that share the connection's pool.
    std::optional<Ipv4Addr> other_ip;
    for (uint32_t host = 1; !other_ip && host < 100000; ++host) {
        const Ipv4Addr ip{Ipv4Addr::from_octets(198, 18, 0, 0).value + host};
        if (nat_->partition_of(ipproto::kTcp, ip, 443) == pool) other_ip = ip;
    }
    std::optional<uint16_t> other_port;
    for (uint16_t port = 1; !other_port && port < 60000; ++port)
        if (port != 443 && nat_->partition_of(ipproto::kTcp, kServer, port) == pool) other_port = port;
    ASSERT_TRUE(other_ip && other_port);
    ASSERT_GE(conntrack_->outside_candidate(ipproto::kTcp, *other_ip, 443, ext), 0) << "the slot is the pool's";
    const auto from_other = tcp_in(*other_ip, kHostAddr, 443, ext, kSyn | kAck, 5000, 1001);
    EXPECT_EQ(from_other.verdict, dp::Verdict::drop);
    EXPECT_EQ(from_other.reason, DropReason::nat_no_mapping) << why(from_other);
    const auto other_port_in = tcp_in(kServer, kHostAddr, *other_port, ext, kSyn | kAck, 5000, 1001);
    EXPECT_EQ(other_port_in.verdict, dp::Verdict::drop);
    EXPECT_EQ(other_port_in.reason, DropReason::nat_no_mapping) << why(other_port_in);
    // The server itself gets through.
    const auto back = tcp_in(kServer, kHostAddr, 443, ext, kSyn | kAck, 5000, 1001);
    EXPECT_EQ(back.verdict, dp::Verdict::forward) << why(back);
    // Once the connection is gone (reset, swept), its port's slot is empty: nothing gets in.
    ASSERT_EQ(tcp_out(kApp, kServer, 40000, 443, kRst, 1001, 0).verdict, dp::Verdict::forward);
    sweep_at(ctx_.now_ns + 3600 * kSecond);
    EXPECT_LT(conntrack_->outside_candidate(ipproto::kTcp, kServer, 443, ext), 0);
    const auto late = tcp_in(kServer, kHostAddr, 443, ext, kAck, 5001, 1001);
    EXPECT_EQ(late.reason, DropReason::nat_no_mapping) << why(late);
}

// nat_in passes the position of the connection it translated a reply for (meta.nat_connection),
// so that policy does not look its key up again. Policy takes it only if the packet's key is
// that connection's key: a packet that claims another connection's position (here forged; in
// life, e.g. a reply after its instance moved networks) is looked up as usual, and a datagram
// to a port app-1 never opened from is unsolicited.
TEST_F(UplinkReview, PolicyTakesNatInsConnectionOnlyForThatConnectionsOwnKey) {
    TestFrame& q = udp_frame_out(kApp, kServer, 5353, 53);
    ASSERT_EQ(run(q, kAppPort).verdict, dp::Verdict::forward);
    const int32_t pos =
        conntrack_->lookup(dp::make_ct_key(ipproto::kUdp, {zones_.at("nat"), kAppIp, 5353}, {0, kServer, 53}).key);
    ASSERT_GE(pos, 0);
    const auto through_policy_claiming = [&](TestFrame& f, int32_t claimed) {
        dp::Batch batch = batch_of(f, kUplinkPort);
        dp::classify_stage(batch, *snap_, ctx_);
        // As nat_in leaves a reply it translated (the frame already carries the instance's
        // address and port).
        batch.meta[0].nat_translated_in = true;
        batch.meta[0].nat_connection = static_cast<uint32_t>(claimed) + 1;
        dp::route_stage(batch, *snap_, ctx_);
        dp::local_stage(batch, *snap_, ctx_);
        dp::PendingOpens opens;
        dp::policy_stage(batch, *snap_, ctx_, opens);
        dp::forward_stage(batch, *snap_, ctx_);
        dp::commit_stage(batch, *snap_, ctx_, opens);
        return batch.meta[0];
    };
    const auto forged = through_policy_claiming(udp_frame_in(kServer, kAppIp, 53, 5999), pos);
    EXPECT_EQ(forged.verdict, dp::Verdict::drop);
    EXPECT_EQ(forged.reason, DropReason::nat_unsolicited) << why(forged);
    // The connection's own reply, with its own position: through.
    const auto own = through_policy_claiming(udp_frame_in(kServer, kAppIp, 53, 5353), pos);
    EXPECT_EQ(own.verdict, dp::Verdict::forward) << why(own);
    EXPECT_EQ(own.out_port, kAppPort);
}

// nat_stages.cpp (its first version): `if (!ip->is_first_fragment()) return false;` so later
// fragments of an inbound reply are never translated: they reach the local stage with the
// uplink address as destination and are dropped as nat_no_mapping. Every fragmented reply to
// a nat instance (large DNS/EDNS answers, UDP tunnels) is lost. (Outbound, policy remembers
// the first fragment's translation and nat_out rewrites the later ones: inbound has nothing
// equivalent.)
TEST_F(UplinkReview, LaterFragmentsOfAnInboundReplyReachTheNatInstance) {
    TestFrame& q = udp_frame_out(kApp, kServer, 5353, 53);
    ASSERT_EQ(run(q, kAppPort).verdict, dp::Verdict::forward);
    const uint16_t external = udp_sport(q);
    // The answer, in two fragments (id 0x1234 from the builder): UDP header + 120 bytes, then
    // 40 more bytes at offset 128.
    std::vector<uint8_t> part1(120, 0xab), part2(40, 0xcd);
    TestFrame& first = keep(FrameBuilder()
                                .eth(kUpstreamMac, kUplinkMac)
                                .ipv4(kServer, kHostAddr, ipproto::kUdp, 64, Ipv4Hdr::kMoreFragments)
                                .udp(53, external, part1)
                                .build());
    TestFrame& second = keep(FrameBuilder()
                                 .eth(kUpstreamMac, kUplinkMac)
                                 .ipv4(kServer, kHostAddr, ipproto::kUdp, 64, 128 / 8)
                                 .raw(part2)
                                 .build());
    const auto m1 = run(first, kUplinkPort);
    ASSERT_EQ(m1.verdict, dp::Verdict::forward) << why(m1);
    EXPECT_EQ(dst_ip(first), kAppIp);
    const auto m2 = run(second, kUplinkPort);
    EXPECT_EQ(m2.verdict, dp::Verdict::forward) << "later fragment: " << why(m2);
    EXPECT_EQ(m2.out_port, kAppPort);
    EXPECT_EQ(dst_ip(second), kAppIp);
    expect_checksums_valid(second);
}

// policy.cpp check_icmp_error: it never re-checks a connection against a newer snapshot
// (existing() does, and cuts connections whose network kind changed). After a reload that
// makes a public network `nat`, its old untranslated connections are cut for every packet
// but ICMP errors: an error from outside quoting one of them still reaches the instance,
// addressed to its inside address: unsolicited inbound reaching a nat instance.
TEST_F(UplinkReview, IcmpErrorFromOutsideDoesNotReachAnInstanceWhoseNetworkBecameNat) {
    TestFrame* syn = nullptr;
    ASSERT_EQ(tcp_out(kWeb, kServer, 40000, 443, kSyn, 1000, 0, &syn).verdict, dp::Verdict::forward);
    load(with_kind(uplink_site(), "public", "nat"));
    TestFrame& err = keep(icmp_error(kUpstreamMac, kUplinkMac, kServer, kWebIp, icmp::kDestUnreachable,
                                     icmp::kPortUnreachable, *syn));
    const auto m = run(err, kUplinkPort);
    EXPECT_EQ(m.verdict, dp::Verdict::drop) << "error straight to the inside address of a nat instance";
    EXPECT_EQ(m.reason, DropReason::sg_revoked) << why(m);
    // The connection's own packets are cut, as designed.
    const auto synack = tcp_in(kServer, kWebIp, 443, 40000, kSyn | kAck, 5000, 1001);
    EXPECT_EQ(synack.verdict, dp::Verdict::drop);
    EXPECT_EQ(synack.reason, DropReason::sg_revoked) << why(synack);
}

// Same root cause, other direction: the instance (now in a `nat` network) sends an ICMP error
// about a datagram of its old untranslated connection; check_icmp_error finds the entry, its
// binding is none, so nothing is translated and the error leaves through the uplink with the
// instance's inside address as source (and quoted as destination).
TEST_F(UplinkReview, IcmpErrorFromAnInstanceWhoseNetworkBecameNatDoesNotLeaveUntranslated) {
    ASSERT_EQ(tcp_out(kWeb, kServer, 40000, 443, kSyn, 1000, 0).verdict, dp::Verdict::forward);
    TestFrame* synack = nullptr;
    ASSERT_EQ(tcp_in(kServer, kWebIp, 443, 40000, kSyn | kAck, 5000, 1001, &synack).verdict, dp::Verdict::forward);
    load(with_kind(uplink_site(), "public", "nat"));
    // web-1 answers the SYN-ACK (as it received it) with an ICMP error.
    TestFrame& err = keep(icmp_error(kWebMac, kGatewayMac, kWebIp, kServer, icmp::kDestUnreachable,
                                     icmp::kAdminProhibited, *synack, 28));
    const auto m = run(err, kWebPort);
    // Refused: the connection is not translated, and its network is nat now.
    EXPECT_EQ(m.verdict, dp::Verdict::drop) << "a nat instance's inside address leaves through the uplink";
    EXPECT_EQ(m.reason, DropReason::sg_revoked) << why(m);
    EXPECT_EQ(src_ip(err), kWebIp) << "nothing was rewritten";
}

// The same for a network that became `private`: ICMP errors keep crossing the uplink.
TEST_F(UplinkReview, IcmpErrorsDoNotCrossTheUplinkForANetworkThatBecamePrivate) {
    TestFrame* syn = nullptr;
    ASSERT_EQ(tcp_out(kWeb, kServer, 40000, 443, kSyn, 1000, 0, &syn).verdict, dp::Verdict::forward);
    load(with_kind(uplink_site(), "public", "private"));
    TestFrame& err = keep(icmp_error(kUpstreamMac, kUplinkMac, kServer, kWebIp, icmp::kDestUnreachable,
                                     icmp::kPortUnreachable, *syn));
    const auto m = run(err, kUplinkPort);
    EXPECT_EQ(m.verdict, dp::Verdict::drop) << "from the Internet into a private network";
    EXPECT_EQ(m.reason, DropReason::private_isolated) << why(m);
}

// The same gap for fragments: FragmentVerdicts remembers a first fragment's verdict (and
// nat_addr 0 for an untranslated one) and policy.cpp passes later fragments on that alone,
// without looking at the snapshot generation. A datagram in flight across a reload that
// makes its network `nat` leaves its later fragments with the inside address.
TEST_F(UplinkReview, LaterFragmentAfterAReloadToNatDoesNotLeaveUntranslated) {
    TestFrame& first = keep(FrameBuilder()
                                .eth(kWebMac, kGatewayMac)
                                .ipv4(kWebIp, kServer, ipproto::kUdp, 64, Ipv4Hdr::kMoreFragments)
                                .udp(5353, 53, std::vector<uint8_t>(120, 1))
                                .build());
    TestFrame& second = keep(FrameBuilder()
                                 .eth(kWebMac, kGatewayMac)
                                 .ipv4(kWebIp, kServer, ipproto::kUdp, 64, 128 / 8)
                                 .raw(std::vector<uint8_t>(40, 2))
                                 .build());
    ASSERT_EQ(run(first, kWebPort).verdict, dp::Verdict::forward);
    load(with_kind(uplink_site(), "public", "nat"));
    const auto m = run(second, kWebPort);
    // The first fragment's verdict belongs to the old generation: the later one matches none.
    EXPECT_EQ(m.verdict, dp::Verdict::drop) << "a later fragment leaves a nat network with the inside address";
    EXPECT_EQ(m.reason, DropReason::fragment_unmatched) << why(m);
}

// policy.cpp create(): a packet whose bulk lookup missed allocates a port *before* it finds
// out (insert returning a live entry) that an earlier packet of the same batch (or another
// worker) created its connection. When that earlier packet took the last port, the later one
// is dropped as nat_exhausted although its connection exists and needs no new port.
TEST_F(UplinkReview, SecondPacketOfANewConnectionInOneBatchPassesWhenItTookTheLastPort) {
    reset(uplink_site("30000-30063"));  // 64 ports (the minimum); 63 taken towards the server
    for (int i = 0; i < 63; ++i) ASSERT_TRUE(nat_->allocate(ipproto::kUdp, kServer, 53, 0, static_cast<uint64_t>(i)));
    TestFrame& a = udp_frame_out(kApp, kServer, 30000, 53, {1});
    TestFrame& b = udp_frame_out(kApp, kServer, 30000, 53, {2});
    const auto ms = run_batch({&a, &b}, kAppPort);
    ASSERT_EQ(ms[0].verdict, dp::Verdict::forward) << why(ms[0]);
    EXPECT_EQ(ms[1].verdict, dp::Verdict::forward) << "same connection, second datagram: " << why(ms[1]);
    EXPECT_EQ(nat_->in_use(ipproto::kUdp), 64u);
}

// policy.cpp commit_stage (b8327f6): every first packet of a burst claims before any
// finishes, so the second datagram of a new connection holds the port it allocated (given
// back only when finish() finds the connection the first one made) while a third packet, of
// another connection, looks for a port: with two ports left it finds none (nat_exhausted),
// where packet by packet the second port was back in the pool.
TEST_F(UplinkReview, SecondPacketOfANewConnectionInOneBatchDoesNotHoldAPortAnotherConnectionNeeds) {
    reset(uplink_site("30000-30063"));  // 64 ports; 62 taken towards the server, 2 left
    for (int i = 0; i < 62; ++i) ASSERT_TRUE(nat_->allocate(ipproto::kUdp, kServer, 53, 0, static_cast<uint64_t>(i)));
    TestFrame& a = udp_frame_out(kApp, kServer, 30000, 53, {1});
    TestFrame& b = udp_frame_out(kApp, kServer, 30000, 53, {2});
    TestFrame& c = udp_frame_out(kApp, kServer, 30001, 53, {3});
    const auto ms = run_batch({&a, &b, &c}, kAppPort);
    for (size_t i = 0; i < ms.size(); ++i) EXPECT_EQ(ms[i].verdict, dp::Verdict::forward) << i << ": " << why(ms[i]);
    EXPECT_EQ(udp_sport(a), udp_sport(b)) << "one connection, one mapping";
    EXPECT_NE(udp_sport(a), udp_sport(c));
    EXPECT_EQ(nat_->in_use(ipproto::kUdp), 64u);
    EXPECT_EQ(conntrack_->reserved(), 2u);
}

// route.cpp: the martian source check drops only sources the site routes to itself. Sources
// that are never valid on the wire (RFC 1812 5.3.7: 0/8, 127/8, multicast, 240/4, the
// limited broadcast) route to the default (uplink) and pass into public instances.
TEST_F(UplinkReview, MartianSourcesFromTheUplinkAreDropped) {
    for (Ipv4Addr bogus : {Ipv4Addr::from_octets(127, 0, 0, 1), Ipv4Addr::from_octets(0, 0, 0, 0),
                           Ipv4Addr::from_octets(224, 0, 0, 5), Ipv4Addr::from_octets(240, 0, 0, 1),
                           Ipv4Addr::from_octets(255, 255, 255, 255)}) {
        const auto m = tcp_in(bogus, kWebIp, 1234, 443, kSyn, 1, 0);
        EXPECT_EQ(m.verdict, dp::Verdict::drop) << bogus.to_string();
        EXPECT_EQ(m.reason, DropReason::martian_source) << bogus.to_string() << ": " << why(m);
    }
}

// neighbor.hpp/.cpp: "Unpinned entries nobody wanted for 60 s are removed", but workers call
// want() only on a miss: lookup() hits never refresh wanted_ns. An on-link host in constant
// use goes reachable -> stale at 30 s, is refreshed, and at 60 s after its first miss
// due_requests() retires it (stale and "not recently wanted") although packets use it every
// second: the next packets are dropped as neighbor_unresolved until it is resolved again,
// once a minute for as long as the flow lasts.
TEST_F(UplinkReview, OnLinkNeighbourInConstantUseStaysResolved) {
    const Ipv4Addr neighbor = Ipv4Addr::from_octets(198, 51, 100, 20);
    const MacAddr neighbor_mac{{0x02, 0x00, 0x00, 0x00, 0x00, 0x20}};
    const uint64_t t0 = ctx_.now_ns;
    uint64_t unresolved_after_first = 0;
    for (uint64_t s = 0; s <= 180; ++s) {
        ctx_.now_ns = t0 + s * kSecond;
        TestFrame& f = udp_frame_out(kWeb, neighbor, 40000, 9999);
        const auto m = run(f, kWebPort);
        if (s > 0 && m.verdict != dp::Verdict::forward) {
            ++unresolved_after_first;
            ADD_FAILURE() << "t=" << s << " s: " << why(m);
        }
        // The control plane's tick (here once a second), and the host answers at once.
        for (const auto& req : neighbors_.due_requests(ctx_.now_ns))
            if (req.ip == neighbor) neighbors_.learn(neighbor, neighbor_mac, ctx_.now_ns, false);
        neighbors_.release_retired();  // no workers: the grace period is over at once
    }
    EXPECT_EQ(unresolved_after_first, 0u) << "packets to a resolved, constantly used on-link host dropped";
}

// =====================================================================================
// Coverage (these pass)
// =====================================================================================

// Two datagrams of one new connection in one burst share one mapping and one port.
TEST_F(UplinkReview, TwoPacketsOfANewConnectionInOneBatchShareOneMapping) {
    TestFrame& a = udp_frame_out(kApp, kServer, 5353, 53, {1});
    TestFrame& b = udp_frame_out(kApp, kServer, 5353, 53, {2});
    const auto ms = run_batch({&a, &b}, kAppPort);
    ASSERT_EQ(ms[0].verdict, dp::Verdict::forward) << why(ms[0]);
    ASSERT_EQ(ms[1].verdict, dp::Verdict::forward) << why(ms[1]);
    EXPECT_EQ(udp_sport(a), udp_sport(b));
    EXPECT_EQ(src_ip(b), kHostAddr);
    expect_checksums_valid(b);
    EXPECT_EQ(nat_->in_use(ipproto::kUdp), 1u) << "the second packet's provisional port went back";
    EXPECT_EQ(conntrack_->size(), 1u);
}

// TIME_WAIT reopened from inside keeps its external port; from outside it cannot
// be reopened; closing and expiry give everything back.
TEST_F(UplinkReview, TimeWaitReopenKeepsTheMappingOnlyFromInside) {
    TestFrame* syn = nullptr;
    ASSERT_EQ(tcp_out(kApp, kServer, 40000, 443, kSyn, 1000, 0, &syn).verdict, dp::Verdict::forward);
    const uint16_t ext = tcp_sport(*syn);
    ASSERT_EQ(tcp_in(kServer, kHostAddr, 443, ext, kSyn | kAck, 5000, 1001).verdict, dp::Verdict::forward);
    ASSERT_EQ(tcp_out(kApp, kServer, 40000, 443, kAck, 1001, 5001).verdict, dp::Verdict::forward);
    // Close: FIN from the app, ACK, FIN from the server, ACK.
    ASSERT_EQ(tcp_out(kApp, kServer, 40000, 443, kFin | kAck, 1001, 5001).verdict, dp::Verdict::forward);
    ASSERT_EQ(tcp_in(kServer, kHostAddr, 443, ext, kFin | kAck, 5001, 1002).verdict, dp::Verdict::forward);
    ASSERT_EQ(tcp_out(kApp, kServer, 40000, 443, kAck, 1002, 5002).verdict, dp::Verdict::forward);
    // The server may not reopen it through the external port.
    const auto remote = tcp_in(kServer, kHostAddr, 443, ext, kSyn, 90000, 0);
    EXPECT_EQ(remote.verdict, dp::Verdict::drop);
    EXPECT_EQ(remote.reason, DropReason::nat_unsolicited) << why(remote);
    // The app reopens it: same external port, replies come back.
    TestFrame* syn2 = nullptr;
    const auto reopen = tcp_out(kApp, kServer, 40000, 443, kSyn, 200000, 0, &syn2);
    ASSERT_EQ(reopen.verdict, dp::Verdict::forward) << why(reopen);
    EXPECT_EQ(tcp_sport(*syn2), ext);
    EXPECT_EQ(src_ip(*syn2), kHostAddr);
    const auto back = tcp_in(kServer, kHostAddr, 443, ext, kSyn | kAck, 700000, 200001);
    EXPECT_EQ(back.verdict, dp::Verdict::forward) << why(back);
    EXPECT_EQ(nat_->in_use(ipproto::kTcp), 1u);
    EXPECT_EQ(conntrack_->size(), 1u);
    // A reset from the app ends it; the sweep gives the port and the key back.
    ASSERT_EQ(tcp_out(kApp, kServer, 40000, 443, kRst, 200001, 0).verdict, dp::Verdict::forward);
    sweep_at(ctx_.now_ns + 3600 * kSecond);
    EXPECT_EQ(nat_->in_use(ipproto::kTcp), 0u);
    EXPECT_EQ(conntrack_->size(), 0u);
}

// The instance's own ICMP error about a reply it received leaves with the external endpoint,
// quoting the datagram as the remote sent it.
TEST_F(UplinkReview, IcmpErrorFromANatInstanceLeavesWithTheExternalEndpoint) {
    TestFrame& q = udp_frame_out(kApp, kServer, 40053, 53);
    ASSERT_EQ(run(q, kAppPort).verdict, dp::Verdict::forward);
    const uint16_t ext = udp_sport(q);
    TestFrame& answer = udp_frame_in(kServer, kHostAddr, 53, ext, {9, 9, 9, 9, 9, 9, 9, 9, 9, 9});
    ASSERT_EQ(run(answer, kUplinkPort).verdict, dp::Verdict::forward);
    ASSERT_EQ(dst_ip(answer), kAppIp);
    // The socket is gone: port unreachable, quoting what it received.
    TestFrame& err = keep(icmp_error(kAppMac, kGatewayMac, kAppIp, kServer, icmp::kDestUnreachable,
                                     icmp::kPortUnreachable, answer));
    const auto m = run(err, kAppPort);
    ASSERT_EQ(m.verdict, dp::Verdict::forward) << why(m);
    EXPECT_EQ(m.out_port, kUplinkPort);
    EXPECT_EQ(src_ip(err), kHostAddr);
    const auto* inner = err.at<Ipv4Hdr>(kL4 + sizeof(IcmpHdr));
    EXPECT_EQ(Ipv4Addr::from_be(inner->dst), kHostAddr);
    EXPECT_EQ(err.at<UdpHdr>(kL4 + sizeof(IcmpHdr) + sizeof(Ipv4Hdr))->dst_port.host(), ext);
    EXPECT_EQ(internet_checksum(inner, sizeof(Ipv4Hdr)), 0) << "quoted header checksum";
    // The quote is the server's datagram again, byte for byte (UDP checksum included).
    const auto* qudp = err.at<UdpHdr>(kL4 + sizeof(IcmpHdr) + sizeof(Ipv4Hdr));
    TestFrame& original = udp_frame_in(kServer, kHostAddr, 53, ext, {9, 9, 9, 9, 9, 9, 9, 9, 9, 9});
    EXPECT_EQ(qudp->checksum, original.at<UdpHdr>(kL4)->checksum);
    expect_checksums_valid(err);
    // About a connection it does not have: nothing leaves.
    TestFrame& stray = udp_frame_in(kServer, kHostAddr, 53, 1, {1});
    TestFrame& bogus = keep(icmp_error(kAppMac, kGatewayMac, kAppIp, kServer, icmp::kDestUnreachable,
                                       icmp::kPortUnreachable, stray));
    EXPECT_EQ(run(bogus, kAppPort).verdict, dp::Verdict::drop);
}

// Coverage (commit_stage's two passes): first fragments of two datagrams of one new connection
// in one burst, the second finding no port left (it follows the connection the first makes):
// both are remembered with the translation, and their later fragments leave translated.
TEST_F(UplinkReview, FirstFragmentsOfOneNewConnectionInOneBurstBothLetTheirLaterFragmentsOut) {
    reset(uplink_site("30000-30063"));  // 64 ports; 63 taken towards the server: one left
    for (int i = 0; i < 63; ++i) ASSERT_TRUE(nat_->allocate(ipproto::kUdp, kServer, 53, 0, static_cast<uint64_t>(i)));
    const auto with_id = [](TestFrame& f, uint16_t id) -> TestFrame& {
        auto* ip = f.at<Ipv4Hdr>(kL3);
        ip->id = Be16::from_host(id);
        ip->checksum = 0;
        ip->checksum = internet_checksum(ip, sizeof(Ipv4Hdr));
        return f;
    };
    std::vector<TestFrame*> firsts, laters;
    for (uint16_t id : {1, 2}) {
        firsts.push_back(&with_id(keep(FrameBuilder()
                                           .eth(kAppMac, kGatewayMac)
                                           .ipv4(kAppIp, kServer, ipproto::kUdp, 64, Ipv4Hdr::kMoreFragments)
                                           .udp(5353, 53, std::vector<uint8_t>(120, 1))
                                           .build()),
                                  id));
        laters.push_back(&with_id(keep(FrameBuilder()
                                           .eth(kAppMac, kGatewayMac)
                                           .ipv4(kAppIp, kServer, ipproto::kUdp, 64, 128 / 8)
                                           .raw(std::vector<uint8_t>(40, 2))
                                           .build()),
                                  id));
    }
    const auto ms = run_batch(firsts, kAppPort);
    for (size_t i = 0; i < ms.size(); ++i) ASSERT_EQ(ms[i].verdict, dp::Verdict::forward) << i << ": " << why(ms[i]);
    EXPECT_EQ(udp_sport(*firsts[0]), udp_sport(*firsts[1]));
    const auto later = run_batch(laters, kAppPort);
    for (size_t i = 0; i < later.size(); ++i) {
        EXPECT_EQ(later[i].verdict, dp::Verdict::forward) << i << ": " << why(later[i]);
        EXPECT_EQ(src_ip(*laters[i]), kHostAddr) << i;
    }
    EXPECT_EQ(nat_->in_use(ipproto::kUdp), 64u);
}

// Defect (b8327f6): commit_stage remembered the first fragment of a packet that followed, in
// claim(), a connection another worker made at once, before the first fragments of the burst's
// earlier new connections (remembered in finish()). The order counts when the fragment table is
// contended: a datagram may take another source's slot only while that source holds two more
// than its own. Here P1's set is full of four other sources' datagrams, two each; P2's set has
// room. Packet by packet P1 (app-1 holding none) takes one of those slots and P2 a free one:
// both datagrams' later fragments leave. In one burst P2 was counted first, P1 found no slot it
// could take, and its later fragment was dropped as fragment_unmatched.
TEST_F(UplinkReview, AFirstFragmentFollowingAnotherWorkersConnectionIsRememberedInTheBurstsOrder) {
    const auto fragment = [&](uint16_t id, bool first, uint16_t sport, uint16_t dport) {
        std::vector<uint8_t> bytes =
            first ? FrameBuilder()
                        .eth(kAppMac, kGatewayMac)
                        .ipv4(kAppIp, kServer, ipproto::kUdp, 64, Ipv4Hdr::kMoreFragments)
                        .udp(sport, dport, std::vector<uint8_t>(120, 1))
                        .build()
                  : FrameBuilder().eth(kAppMac, kGatewayMac).ipv4(kAppIp, kServer, ipproto::kUdp, 64, 128 / 8).raw(std::vector<uint8_t>(40, 2)).build();
        auto* ip = reinterpret_cast<Ipv4Hdr*>(bytes.data() + kL3);
        ip->id = Be16::from_host(id);
        ip->checksum = 0;
        ip->checksum = internet_checksum(ip, sizeof(Ipv4Hdr));
        return bytes;
    };
    const auto run_scenario = [&](bool one_burst) -> std::string {
        reset(uplink_site("30000-30063"));  // 64 ports; 63 taken towards the server's port 53
        if (HasFatalFailure()) return {};
        for (int i = 0; i < 63; ++i) EXPECT_TRUE(nat_->allocate(ipproto::kUdp, kServer, 53, 0, static_cast<uint64_t>(i)));
        uint16_t p1_dport = 5001;  // P1's connection: a port of another pool
        while (nat_->partition_of(ipproto::kUdp, kServer, p1_dport) == nat_->partition_of(ipproto::kUdp, kServer, 53))
            ++p1_dport;
        SplitWorker second(ctx_.now_ns);
        dp::FragmentVerdicts& verdicts = *second.fragments;
        const uint16_t zone = zones_.at("nat");
        const auto datagram = [&](uint16_t id) {
            return dp::FragmentKey{kAppIp.value, kServer.value, id, zone, ipproto::kUdp};
        };
        const uint16_t p1_id = 1;
        uint16_t p2_id = 2;
        while (verdicts.set_index(datagram(p2_id)) == verdicts.set_index(datagram(p1_id))) ++p2_id;
        // P1's set, full: four sources from outside, two datagrams each.
        const uint64_t later = ctx_.now_ns + 3600 * kSecond;
        int filled = 0;
        for (uint16_t id = 0; filled < int{dp::FragmentVerdicts::kWays}; ++id) {
            const dp::FragmentKey k{Ipv4Addr::from_octets(198, 18, 0, 1).value, kServer.value, id, 0, ipproto::kUdp};
            if (verdicts.set_index(k) != verdicts.set_index(datagram(p1_id))) continue;
            EXPECT_TRUE(verdicts.remember(k, static_cast<uint16_t>(dp::kMaxPorts + filled / 2), ctx_.now_ns, later));
            ++filled;
        }
        const auto p1 = fragment(p1_id, true, 5000, p1_dport);
        const auto p2 = fragment(p2_id, true, 5353, 53);
        // P2's connection, made by this fixture's worker between the second worker's lookups
        // and its commit: it takes the last port, so P2 finds none and follows it in claim().
        const auto other_worker_opens_p2s_connection = [&] {
            EXPECT_EQ(run(udp_frame_out(kApp, kServer, 5353, 53), kAppPort).verdict, dp::Verdict::forward);
        };
        std::vector<dp::PacketMeta> firsts;
        if (one_burst) {
            second.until_commit({p1, p2}, kAppPort, *snap_);
            other_worker_opens_p2s_connection();
            second.from_commit();
            firsts.assign(second.batch.meta, second.batch.meta + 2);
        } else {
            firsts.push_back(second.run({p1}, kAppPort, *snap_)[0]);
            second.until_commit({p2}, kAppPort, *snap_);
            other_worker_opens_p2s_connection();
            second.from_commit();
            firsts.push_back(second.batch.meta[0]);
        }
        const auto laters = second.run({fragment(p1_id, false, 0, 0), fragment(p2_id, false, 0, 0)}, kAppPort, *snap_);
        std::string out = fmt::format("first fragments: P1 {}, P2 {}; later fragments:", why(firsts[0]), why(firsts[1]));
        for (size_t i = 0; i < laters.size(); ++i)
            out += fmt::format(" P{} {} from {}", i + 1, why(laters[i]), src_ip(*second.frames[i]).to_string());
        return out;
    };
    const std::string packet_by_packet = run_scenario(false);
    const std::string both_leave =
        fmt::format("first fragments: P1 not dropped, P2 not dropped; later fragments: P1 not dropped from {0} P2 not dropped from {0}",
                    kHostAddr.to_string());
    ASSERT_EQ(packet_by_packet, both_leave) << "the scenario packet by packet";
    EXPECT_EQ(run_scenario(true), packet_by_packet);
}

// An ICMP error from outside about a masqueraded ping (quoted echo request with the external
// identifier) reaches the instance with its own identifier quoted.
TEST_F(UplinkReview, TimeExceededAboutAMasqueradedPingIsTranslatedBack) {
    TestFrame& ping = keep(FrameBuilder().eth(kAppMac, kGatewayMac).ipv4(kAppIp, kServer).icmp_echo(7, 1).build());
    ASSERT_EQ(run(ping, kAppPort).verdict, dp::Verdict::forward);
    const Ipv4Addr router = Ipv4Addr::from_octets(192, 0, 2, 1);
    TestFrame& err = keep(icmp_error(kUpstreamMac, kUplinkMac, router, kHostAddr, icmp::kTimeExceeded, 0, ping, 28));
    const auto m = run(err, kUplinkPort);
    ASSERT_EQ(m.verdict, dp::Verdict::forward) << why(m);
    EXPECT_EQ(m.out_port, kAppPort);
    EXPECT_EQ(dst_ip(err), kAppIp);
    const auto* inner = err.at<Ipv4Hdr>(kL4 + sizeof(IcmpHdr));
    EXPECT_EQ(Ipv4Addr::from_be(inner->src), kAppIp);
    EXPECT_EQ(err.at<IcmpHdr>(kL4 + sizeof(IcmpHdr) + sizeof(Ipv4Hdr))->id.host(), 7);
    expect_checksums_valid(err);
}

// Outbound fragments of a masqueraded datagram: the first one is fully translated, the later
// ones get the external address; a later fragment without its first never leaves.
TEST_F(UplinkReview, LaterFragmentsOfAMasqueradedDatagramLeaveWithTheUplinkAddress) {
    std::vector<uint8_t> part1(120, 1), part2(40, 2);
    TestFrame& first = keep(FrameBuilder()
                                .eth(kAppMac, kGatewayMac)
                                .ipv4(kAppIp, kServer, ipproto::kUdp, 64, Ipv4Hdr::kMoreFragments)
                                .udp(5353, 53, part1)
                                .build());
    TestFrame& second = keep(FrameBuilder()
                                 .eth(kAppMac, kGatewayMac)
                                 .ipv4(kAppIp, kServer, ipproto::kUdp, 64, 128 / 8)
                                 .raw(part2)
                                 .build());
    ASSERT_EQ(run(first, kAppPort).verdict, dp::Verdict::forward);
    EXPECT_EQ(src_ip(first), kHostAddr);
    const auto m = run(second, kAppPort);
    ASSERT_EQ(m.verdict, dp::Verdict::forward) << why(m);
    EXPECT_EQ(src_ip(second), kHostAddr);
    expect_checksums_valid(second);
    // An orphan later fragment (another datagram id) is dropped, not sent with 10.10.0.5.
    std::vector<uint8_t> orphan_bytes = FrameBuilder()
                                            .eth(kAppMac, kGatewayMac)
                                            .ipv4(kAppIp, kServer, ipproto::kUdp, 64, 128 / 8)
                                            .raw(part2)
                                            .build();
    auto* oip = reinterpret_cast<Ipv4Hdr*>(orphan_bytes.data() + kL3);
    oip->id = Be16::from_host(0x9999);
    oip->checksum = 0;
    oip->checksum = internet_checksum(oip, sizeof(Ipv4Hdr));
    TestFrame& orphan = keep(orphan_bytes);
    const auto o = run(orphan, kAppPort);
    EXPECT_EQ(o.verdict, dp::Verdict::drop);
    EXPECT_EQ(o.reason, DropReason::fragment_unmatched) << why(o);
}

// A translated reply calyx cannot deliver (TTL, MTU) is dropped silently: an ICMP error about
// it would quote the instance's inside address towards the Internet.
TEST_F(UplinkReview, UndeliverableTranslatedReplyGetsNoIcmpErrorThatRevealsTheInside) {
    TestFrame* syn = nullptr;
    ASSERT_EQ(tcp_out(kApp, kServer, 40000, 443, kSyn, 1000, 0, &syn).verdict, dp::Verdict::forward);
    TestFrame& late = keep(FrameBuilder()
                               .eth(kUpstreamMac, kUplinkMac)
                               .ipv4(kServer, kHostAddr, ipproto::kTcp, 1)
                               .tcp(443, tcp_sport(*syn), kSyn | kAck, 5000, 1001)
                               .build());
    const auto m = run(late, kUplinkPort);
    EXPECT_EQ(m.verdict, dp::Verdict::drop);
    EXPECT_EQ(m.reason, DropReason::ttl_exceeded) << why(m);
}

// Unsolicited inbound to nat/private instances in every shape: to the inside address, a
// later fragment without a first, ICMP errors quoting made-up datagrams, and a ping to the
// inside address.
TEST_F(UplinkReview, NothingUnsolicitedReachesNatOrPrivateInstances) {
    for (const Inside* target : {&kApp, &kDb}) {
        // nat: nothing from outside opens a connection to it; private: no outside at all.
        const DropReason refused = target == &kApp ? DropReason::nat_unsolicited : DropReason::private_isolated;
        TestFrame& udp = udp_frame_in(kServer, target->ip, 53, 5353);
        const auto mu = run(udp, kUplinkPort);
        EXPECT_EQ(mu.verdict, dp::Verdict::drop) << target->ip.to_string();
        EXPECT_EQ(mu.reason, refused) << target->ip.to_string() << ": " << why(mu);
        TestFrame& frag = keep(FrameBuilder()
                                   .eth(kUpstreamMac, kUplinkMac)
                                   .ipv4(kServer, target->ip, ipproto::kUdp, 64, 16)
                                   .raw(std::vector<uint8_t>(40, 1))
                                   .build());
        const auto mf = run(frag, kUplinkPort);
        EXPECT_EQ(mf.verdict, dp::Verdict::drop) << "fragment to " << target->ip.to_string();
        EXPECT_EQ(mf.reason, DropReason::fragment_unmatched) << target->ip.to_string() << ": " << why(mf);
        TestFrame& made_up = udp_frame_out(*target, kServer, 5353, 53);
        TestFrame& err = keep(icmp_error(kUpstreamMac, kUplinkMac, kServer, target->ip, icmp::kDestUnreachable,
                                         icmp::kPortUnreachable, made_up));
        const auto me = run(err, kUplinkPort);
        EXPECT_EQ(me.verdict, dp::Verdict::drop) << "error to " << target->ip.to_string();
        EXPECT_EQ(me.reason, DropReason::ct_icmp_error_unmatched) << target->ip.to_string() << ": " << why(me);
        TestFrame& ping = keep(FrameBuilder().eth(kUpstreamMac, kUplinkMac).ipv4(kServer, target->ip).icmp_echo(1, 1).build());
        const auto mp = run(ping, kUplinkPort);
        EXPECT_EQ(mp.verdict, dp::Verdict::drop) << "ping to " << target->ip.to_string();
        EXPECT_EQ(mp.reason, refused) << target->ip.to_string() << ": " << why(mp);
    }
    // An ICMP error to the host address quoting a datagram that never left: no mapping.
    TestFrame& made_up = keep(FrameBuilder().eth(kUpstreamMac, kUplinkMac).ipv4(kHostAddr, kServer, ipproto::kUdp).udp(40000, 53, {1}).build());
    TestFrame& err = keep(icmp_error(kUpstreamMac, kUplinkMac, kServer, kHostAddr, icmp::kDestUnreachable,
                                     icmp::kPortUnreachable, made_up));
    const auto m = run(err, kUplinkPort);
    EXPECT_EQ(m.verdict, dp::Verdict::drop);
    EXPECT_EQ(m.reason, DropReason::nat_no_mapping) << why(m);
    EXPECT_EQ(total_drops(kAppPort) + total_drops(kDbPort), 0u);
    // One whose quote is cut inside the quoted IPv4 header names no flow at all.
    for (const size_t cut : {size_t{4}, size_t{19}}) {
        TestFrame& cut_err = keep(icmp_error(kUpstreamMac, kUplinkMac, kServer, kHostAddr, icmp::kDestUnreachable,
                                             icmp::kPortUnreachable, made_up, cut));
        const auto mc = run(cut_err, kUplinkPort);
        EXPECT_EQ(mc.verdict, dp::Verdict::drop) << cut;
        EXPECT_EQ(mc.reason, DropReason::nat_no_mapping) << cut << ": " << why(mc);
    }
    EXPECT_EQ(total_drops(kAppPort) + total_drops(kDbPort), 0u);
}

// A reload that takes the nat network's rules away cuts its translated connections; the
// sweep then removes both keys and gives the port back.
TEST_F(UplinkReview, RevokedTranslatedConnectionGivesItsPortBackOnTheNextSweep) {
    TestFrame& q = udp_frame_out(kApp, kServer, 40053, 53);
    ASSERT_EQ(run(q, kAppPort).verdict, dp::Verdict::forward);
    const uint16_t ext = udp_sport(q);
    std::string yaml = uplink_site();
    // app-1 loses its groups.
    yaml.replace(yaml.find("ipv4: 10.10.0.5, security_groups: [everywhere]"), 46, "ipv4: 10.10.0.5, security_groups: []");
    load(yaml);
    TestFrame& answer = udp_frame_in(kServer, kHostAddr, 53, ext);
    const auto m = run(answer, kUplinkPort);
    EXPECT_EQ(m.verdict, dp::Verdict::drop);
    EXPECT_EQ(m.reason, DropReason::sg_revoked) << why(m);
    EXPECT_EQ(sweep_at(ctx_.now_ns + kSecond), 1u);
    EXPECT_EQ(nat_->in_use(ipproto::kUdp), 0u);
    EXPECT_EQ(conntrack_->size(), 0u);
    TestFrame& late = udp_frame_in(kServer, kHostAddr, 53, ext);
    const auto l = run(late, kUplinkPort);
    EXPECT_EQ(l.reason, DropReason::nat_no_mapping) << why(l);
}

// A reload that makes a nat network public cuts its translated connections (both ways) and
// they never continue untranslated.
TEST_F(UplinkReview, ReloadThatMakesANatNetworkPublicCutsTranslatedConnections) {
    TestFrame* syn = nullptr;
    ASSERT_EQ(tcp_out(kApp, kServer, 40000, 443, kSyn, 1000, 0, &syn).verdict, dp::Verdict::forward);
    const uint16_t ext = tcp_sport(*syn);
    load(with_kind(uplink_site(), "nat", "public"));
    const auto back = tcp_in(kServer, kHostAddr, 443, ext, kSyn | kAck, 5000, 1001);
    EXPECT_EQ(back.verdict, dp::Verdict::drop);
    EXPECT_EQ(back.reason, DropReason::sg_revoked) << why(back);
    // A retransmitted SYN before the sweep: not sent with the inside address on the old entry.
    TestFrame* again = nullptr;
    const auto m = tcp_out(kApp, kServer, 40000, 443, kSyn, 1000, 0, &again);
    EXPECT_EQ(m.verdict, dp::Verdict::drop) << why(m);
    sweep_at(ctx_.now_ns + kSecond);
    EXPECT_EQ(nat_->in_use(ipproto::kTcp), 0u);
    EXPECT_EQ(conntrack_->size(), 0u);
}

// A masqueraded packet whose TTL runs out at calyx gets its ICMP time exceeded, addressed to
// the instance: the error is calyx's own reply, never itself translated outwards.
TEST_F(UplinkReview, MasqueradedPacketWhoseTtlRunsOutGetsTimeExceeded) {
    TestFrame& f = keep(FrameBuilder()
                            .eth(kAppMac, kGatewayMac)
                            .ipv4(kAppIp, kServer, ipproto::kUdp, 1)
                            .udp(5353, 53, {1, 2, 3})
                            .build());
    const auto m = run(f, kAppPort);
    ASSERT_EQ(m.verdict, dp::Verdict::reply) << why(m);
    EXPECT_EQ(dst_ip(f), kAppIp);
    EXPECT_EQ(f.at<IcmpHdr>(kL4)->type, icmp::kTimeExceeded);
    expect_checksums_valid(f);
}

// calyx answers ARP on the uplink for the host address and counts the answer; it learns only
// senders on the uplink's subnet, never its own address or 0.0.0.0 (an ARP probe).
TEST_F(UplinkReview, UplinkArpIsAnsweredCountedAndLearnsOnlyOnLinkSenders) {
    const MacAddr stranger_mac{{0x02, 0x00, 0x00, 0x00, 0x00, 0x99}};
    const auto ask = [&](Ipv4Addr sender) {
        TestFrame& f = keep(FrameBuilder()
                                .eth(stranger_mac, MacAddr::broadcast(), ethertype::kArp)
                                .arp(1, stranger_mac, sender, MacAddr{}, kHostAddr)
                                .build());
        return run(f, kUplinkPort);
    };
    const uint64_t replies = counters_->arp_replies;
    const Ipv4Addr off_link = Ipv4Addr::from_octets(192, 0, 2, 9), on_link = Ipv4Addr::from_octets(198, 51, 100, 9);
    EXPECT_EQ(ask(off_link).verdict, dp::Verdict::reply);
    EXPECT_EQ(counters_->arp_replies, replies + 1);
    EXPECT_FALSE(neighbors_.lookup(off_link, 0)) << "learnt a sender outside the uplink's subnet";
    EXPECT_EQ(ask(Ipv4Addr{}).verdict, dp::Verdict::reply);
    EXPECT_FALSE(neighbors_.lookup(Ipv4Addr{}, 0)) << "learnt 0.0.0.0";
    ask(kHostAddr);
    EXPECT_FALSE(neighbors_.lookup(kHostAddr, 0)) << "learnt a host claiming calyx's own address";
    EXPECT_EQ(ask(on_link).verdict, dp::Verdict::reply);
    EXPECT_EQ(neighbors_.lookup(on_link, 0), stranger_mac) << "an on-link sender is learnt";
    // An ARP reply calyx learns from is consumed, not answered: no reply counted.
    const uint64_t before_reply = counters_->arp_replies;
    TestFrame& answer = keep(FrameBuilder()
                                 .eth(kUpstreamMac, kUplinkMac, ethertype::kArp)
                                 .arp(2, kUpstreamMac, kUpstream, kUplinkMac, kHostAddr)
                                 .build());
    EXPECT_EQ(run(answer, kUplinkPort).verdict, dp::Verdict::consumed);
    EXPECT_EQ(counters_->arp_replies, before_reply);
}

// Only a first fragment opens the way for later ones: a translated whole datagram leaves no
// fragment state, so a later fragment that happens to carry its IP id is not delivered.
TEST_F(UplinkReview, AWholeDatagramLeavesNoFragmentState) {
    TestFrame& q = udp_frame_out(kApp, kServer, 5353, 53);
    ASSERT_EQ(run(q, kAppPort).verdict, dp::Verdict::forward);
    TestFrame& answer = udp_frame_in(kServer, kHostAddr, 53, udp_sport(q));  // IP id 0x1234
    ASSERT_EQ(run(answer, kUplinkPort).verdict, dp::Verdict::forward);
    TestFrame& later = keep(FrameBuilder()
                                .eth(kUpstreamMac, kUplinkMac)
                                .ipv4(kServer, kHostAddr, ipproto::kUdp, 64, 128 / 8)  // same id
                                .raw(std::vector<uint8_t>(40, 7))
                                .build());
    const auto m = run(later, kUplinkPort);
    EXPECT_EQ(m.verdict, dp::Verdict::drop) << "a later fragment without its first reached app-1";
    EXPECT_EQ(m.reason, DropReason::nat_no_mapping) << why(m);
}

}  // namespace
}  // namespace calyx::test
