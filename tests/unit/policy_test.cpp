// Security groups and connection tracking through the whole pipeline, following the seed's
// frames: three instances (public web-1, nat app-1, private db-1) and the rules the seed adds
// step by step.
#include <fmt/format.h>

#include "dp/conntrack.hpp"
#include "gateway_fixture.hpp"

namespace calyx::test {
namespace {

constexpr uint8_t kSyn = TcpHdr::kSyn, kAck = TcpHdr::kAck, kFin = TcpHdr::kFin, kRst = TcpHdr::kRst;

// The site of gateway_fixture.hpp with `groups` as its security groups and each instance in
// the groups given.
std::string site(const std::string& groups, const std::string& web, const std::string& app,
                 const std::string& db, uint32_t capacity = 4096) {
    return fmt::format(R"(
dataplane:
  conntrack: {{capacity: {}}}
security_groups:
{}
networks:
  - {{name: public, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1}}
  - {{name: nat, kind: nat, cidr: 10.10.0.0/24, gateway: 10.10.0.1, mtu: 1400}}
  - {{name: private, kind: private, cidr: 10.20.0.0/24, gateway: 10.20.0.1}}
instances:
  - {{name: web-1, network: public, mac: "52:54:00:00:01:01", ipv4: 203.0.113.10, security_groups: [{}],
     port: {{type: vhost-user, socket: /tmp/calyx-unit/web-1.sock}}}}
  - {{name: app-1, network: nat, mac: "52:54:00:00:02:01", ipv4: 10.10.0.5, security_groups: [{}],
     port: {{type: vhost-user, socket: /tmp/calyx-unit/app-1.sock}}}}
  - {{name: db-1, network: private, mac: "52:54:00:00:03:01", ipv4: 10.20.0.7, security_groups: [{}],
     port: {{type: vhost-user, socket: /tmp/calyx-unit/db-1.sock}}}}
)",
                       capacity, groups.empty() ? "  []" : groups, web, app, db);
}

// The seed after frame 6: web-1 may go anywhere and takes 443 from anywhere and 3333 from
// app-1; app-1 takes 80 from web-1 and 4545 from db-1, and may reach web-1 on 3333; db-1 may
// go anywhere.
const std::string kFrame6Groups = R"(
  - name: public-sg
    rules:
      - {direction: egress, protocol: any, remote: 0.0.0.0/0}
      - {direction: ingress, protocol: tcp, ports: 443, remote: 0.0.0.0/0}
      - {direction: ingress, protocol: tcp, ports: 3333, remote: 10.10.0.5/32}
  - name: default-sg
    rules:
      - {direction: ingress, protocol: tcp, ports: 80, remote: 203.0.113.10/32}
      - {direction: egress, protocol: tcp, ports: 3333, remote: 203.0.113.10/32}
      - {direction: ingress, protocol: tcp, ports: 4545, remote_group: private-sg}
  - name: private-sg
    rules:
      - {direction: egress, protocol: any, remote: 0.0.0.0/0}
)";

struct Host {
    MacAddr mac;
    Ipv4Addr ip;
    uint16_t port;
};
const Host kWeb{kWebMac, kWebIp, kWebPort};
const Host kApp{kAppMac, kAppIp, kAppPort};
const Host kDb{kDbMac, kDbIp, kDbPort};

class Policy : public GatewayTest {
protected:
    void SetUp() override { load(site(kFrame6Groups, "public-sg", "default-sg", "private-sg")); }

    dp::PacketMeta tcp(const Host& from, const Host& to, uint16_t sport, uint16_t dport, uint8_t flags,
                       uint32_t seq, uint32_t ack, size_t payload = 0) {
        TestFrame f(FrameBuilder()
                        .eth(from.mac, kGatewayMac)
                        .ipv4(from.ip, to.ip, ipproto::kTcp)
                        .tcp(sport, dport, flags, seq, ack, std::vector<uint8_t>(payload, 'x'))
                        .build());
        return run(f, from.port);
    }
    dp::PacketMeta udp(const Host& from, const Host& to, uint16_t sport, uint16_t dport) {
        TestFrame f(FrameBuilder().eth(from.mac, kGatewayMac).ipv4(from.ip, to.ip, ipproto::kUdp).udp(sport, dport, {1, 2, 3}).build());
        return run(f, from.port);
    }
    dp::PacketMeta ping(const Host& from, const Host& to, uint16_t id, uint8_t type = icmp::kEchoRequest) {
        TestFrame f(FrameBuilder().eth(from.mac, kGatewayMac).ipv4(from.ip, to.ip).icmp_echo(id, 1, 8, type).build());
        return run(f, from.port);
    }
    // A full TCP handshake from `c` to `s`; true if all three packets were forwarded.
    bool handshake(const Host& c, const Host& s, uint16_t sport, uint16_t dport) {
        return tcp(c, s, sport, dport, kSyn, 1000, 0).verdict == dp::Verdict::forward &&
               tcp(s, c, dport, sport, kSyn | kAck, 5000, 1001).verdict == dp::Verdict::forward &&
               tcp(c, s, sport, dport, kAck, 1001, 5001).verdict == dp::Verdict::forward;
    }
    // An ICMP message of `type`/`code` from `from` to `to` carrying `quote` (an error's quoted
    // datagram), checksum filled in.
    dp::PacketMeta icmp_message(const Host& from, const Host& to, uint8_t type, uint8_t code,
                                const std::vector<uint8_t>& quote) {
        TestFrame f(FrameBuilder().eth(from.mac, kGatewayMac).ipv4(from.ip, to.ip).icmp_echo(0, 0, 0, type).raw(quote).build());
        auto* h = f.at<IcmpHdr>(sizeof(EtherHdr) + sizeof(Ipv4Hdr));
        h->code = code;
        h->checksum = 0;
        h->checksum = internet_checksum(h, f.frame.len - sizeof(EtherHdr) - sizeof(Ipv4Hdr));
        return run(f, from.port);
    }
    static void expect_drop(const dp::PacketMeta& m, DropReason r, const char* what) {
        EXPECT_EQ(m.verdict, dp::Verdict::drop) << what;
        EXPECT_EQ(m.reason, r) << what << ": got " << drop_reason_info(m.reason).name;
    }
};

TEST_F(Policy, Frame1InstancesWithoutGroupsReachNoOneButTheirGateway) {
    load(site("", "", "", ""));
    expect_drop(ping(kWeb, kApp, 1), DropReason::sg_no_egress_rule, "web-1 -> app-1");
    expect_drop(tcp(kDb, kApp, 40000, 4545, kSyn, 1, 0), DropReason::sg_no_egress_rule, "db-1 -> app-1");
    // Infrastructure is not subject to security groups.
    TestFrame gw_ping(FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kWebGateway).icmp_echo(1, 1).build());
    EXPECT_EQ(run(gw_ping, kWebPort).verdict, dp::Verdict::reply);
    TestFrame arp(FrameBuilder().eth(kAppMac, MacAddr::broadcast(), ethertype::kArp).arp(1, kAppMac, kAppIp, MacAddr{}, kWebIp).build());
    EXPECT_EQ(run(arp, kAppPort).verdict, dp::Verdict::reply);
}

TEST_F(Policy, Frame4PublicReachesDefaultOn80AndRepliesFlowBack) {
    ASSERT_TRUE(handshake(kWeb, kApp, 40000, 80));
    EXPECT_EQ(tcp(kApp, kWeb, 80, 40000, kAck, 5001, 1001, 100).verdict, dp::Verdict::forward) << "server data";
    EXPECT_EQ(tcp(kWeb, kApp, 40000, 80, kAck, 1001, 5101).verdict, dp::Verdict::forward);
    expect_drop(tcp(kWeb, kApp, 40001, 81, kSyn, 1, 0), DropReason::sg_no_ingress_rule, "port 81 is closed");
    expect_drop(tcp(kApp, kWeb, 40002, 80, kSyn, 1, 0), DropReason::sg_no_egress_rule, "app-1 may not open to web-1:80");
    expect_drop(tcp(kDb, kApp, 40003, 80, kSyn, 1, 0), DropReason::sg_no_ingress_rule, "80 is for web-1 only");
}

TEST_F(Policy, Frame5DefaultReachesPublicOn3333WithEgressAndIngress) {
    EXPECT_TRUE(handshake(kApp, kWeb, 50000, 3333));
    // Without app-1's egress rule the same connection is refused at the source.
    std::string groups = kFrame6Groups;
    groups.replace(groups.find("      - {direction: egress, protocol: tcp, ports: 3333"), 0, "#");
    load(site(groups, "public-sg", "default-sg", "private-sg"));
    expect_drop(tcp(kApp, kWeb, 50001, 3333, kSyn, 1, 0), DropReason::sg_no_egress_rule, "no egress on app-1");
}

TEST_F(Policy, Frame6PrivateReachesDefaultOn4545ThroughRemoteGroup) {
    EXPECT_TRUE(handshake(kDb, kApp, 45000, 4545));
    expect_drop(tcp(kWeb, kApp, 45001, 4545, kSyn, 1, 0), DropReason::sg_no_ingress_rule, "web-1 is not in private-sg");
    // Removing db-1 from private-sg removes it from the remote group: new connections are
    // refused and the established one is cut at its next packet.
    load(site(kFrame6Groups + "  - {name: empty, rules: []}\n", "public-sg", "default-sg", "empty"));
    expect_drop(tcp(kDb, kApp, 45000, 4545, kAck, 1001, 5001, 10), DropReason::sg_revoked, "cut after reload");
    expect_drop(tcp(kDb, kApp, 45002, 4545, kSyn, 1, 0), DropReason::sg_no_egress_rule, "db-1 has no egress now");
}

TEST_F(Policy, ReplyWithoutConnectionIsDropped) {
    expect_drop(tcp(kApp, kWeb, 80, 40000, kSyn | kAck, 5000, 1001), DropReason::ct_invalid_new, "SYN-ACK out of the blue");
    expect_drop(tcp(kApp, kWeb, 80, 40000, kAck, 5000, 1001), DropReason::ct_invalid_new, "ACK out of the blue");
    expect_drop(udp(kApp, kWeb, 53, 5353), DropReason::sg_no_egress_rule, "UDP 'reply' is a new flow");
    expect_drop(ping(kApp, kWeb, 9, icmp::kEchoReply), DropReason::ct_invalid_new, "echo reply without request");
}

TEST_F(Policy, EchoRepliesFollowTheirRequestById) {
    EXPECT_EQ(ping(kWeb, kDb, 77).verdict, dp::Verdict::drop) << "db-1 takes no ping";
    load(site(kFrame6Groups + "  - {name: pingable, rules: [{direction: ingress, protocol: icmp, icmp_type: 8}]}\n",
              "public-sg", "default-sg", "pingable, private-sg"));
    EXPECT_EQ(ping(kWeb, kDb, 77).verdict, dp::Verdict::forward);
    EXPECT_EQ(ping(kDb, kWeb, 77, icmp::kEchoReply).verdict, dp::Verdict::forward);
    expect_drop(ping(kDb, kWeb, 78, icmp::kEchoReply), DropReason::ct_invalid_new, "another identifier");
}

TEST_F(Policy, EstablishedConnectionSurvivesAReloadThatStillAllowsIt) {
    ASSERT_TRUE(handshake(kWeb, kApp, 40000, 80));
    load(site(kFrame6Groups + "  - {name: unrelated, rules: [{direction: ingress, protocol: udp, ports: 9}]}\n",
              "public-sg", "default-sg", "private-sg"));
    EXPECT_EQ(tcp(kWeb, kApp, 40000, 80, kAck, 1001, 5001, 10).verdict, dp::Verdict::forward);
    EXPECT_EQ(tcp(kApp, kWeb, 80, 40000, kAck, 5001, 1011).verdict, dp::Verdict::forward);
}

TEST_F(Policy, ReplyDirectionIsRecheckedAgainstTheOpeningRule) {
    ASSERT_TRUE(handshake(kWeb, kApp, 40000, 80));
    std::string groups = kFrame6Groups;
    groups.replace(groups.find("      - {direction: ingress, protocol: tcp, ports: 80"), 0, "#");
    load(site(groups, "public-sg", "default-sg", "private-sg"));
    // The first packet after the change is the server's: it is checked as the connection
    // web-1 -> app-1:80 it belongs to, which no rule allows any more.
    expect_drop(tcp(kApp, kWeb, 80, 40000, kAck, 5001, 1001, 10), DropReason::sg_revoked, "server side cut");
    expect_drop(tcp(kWeb, kApp, 40000, 80, kAck, 1001, 5001), DropReason::ct_invalid_new, "gone for the client too");
}

TEST_F(Policy, TcpStateIsEnforcedOnTrackedConnections) {
    ASSERT_TRUE(handshake(kWeb, kApp, 40000, 80));
    expect_drop(tcp(kWeb, kApp, 40000, 80, kAck, 900'000'000, 5001, 10), DropReason::ct_out_of_window, "far outside the window");
    expect_drop(tcp(kWeb, kApp, 40000, 80, kSyn | kFin, 1001, 0), DropReason::ct_invalid_tcp_flags, "SYN+FIN");
    EXPECT_EQ(tcp(kWeb, kApp, 40000, 80, kAck, 1001, 5001, 10).verdict, dp::Verdict::forward) << "still fine";
    EXPECT_EQ(tcp(kApp, kWeb, 80, 40000, kRst, 5001, 0).verdict, dp::Verdict::forward) << "in-window RST";
}

TEST_F(Policy, IcmpErrorsAboutTrackedConnectionsPassOthersDoNot) {
    ASSERT_EQ(udp(kDb, kApp, 6000, 4545).verdict, dp::Verdict::drop) << "4545 is tcp only";
    load(site(kFrame6Groups + "  - {name: dns, rules: [{direction: ingress, protocol: udp, ports: 53}]}\n",
              "public-sg", "default-sg, dns", "private-sg"));
    ASSERT_EQ(udp(kDb, kApp, 6000, 53).verdict, dp::Verdict::forward);
    // app-1 answers port unreachable, quoting the datagram db-1 sent.
    auto quoted = FrameBuilder().ipv4(kDbIp, kAppIp, ipproto::kUdp, 63).udp(6000, 53, {1, 2, 3}).build();
    auto error = [&](std::vector<uint8_t> q) {
        TestFrame f(FrameBuilder().eth(kAppMac, kGatewayMac).ipv4(kAppIp, kDbIp).icmp_echo(0, 0, 0, icmp::kDestUnreachable).raw(q).build());
        f.at<IcmpHdr>(sizeof(EtherHdr) + sizeof(Ipv4Hdr))->code = icmp::kPortUnreachable;
        auto* h = f.at<IcmpHdr>(sizeof(EtherHdr) + sizeof(Ipv4Hdr));
        h->checksum = 0;
        h->checksum = internet_checksum(h, f.frame.len - sizeof(EtherHdr) - sizeof(Ipv4Hdr));
        return run(f, kAppPort);
    };
    EXPECT_EQ(error(quoted).verdict, dp::Verdict::forward);
    auto unknown = FrameBuilder().ipv4(kDbIp, kAppIp, ipproto::kUdp, 63).udp(6001, 53, {1, 2, 3}).build();
    expect_drop(error(unknown), DropReason::ct_icmp_error_unmatched, "quotes no connection");
}

// What Linux relates to a connection and what it does not (tests/differential compares them
// packet for packet): errors quoting a later fragment or an echo message of no flow are not
// related; calyx also wants RFC 792's 8 bytes after the quoted IP header where Linux takes the
// 4 bytes of ports (doc/architecture.md).
TEST_F(Policy, IcmpErrorQuotesMustHoldTheTransportHeaderOfATrackedFlow) {
    ASSERT_TRUE(handshake(kWeb, kApp, 40000, 80));
    const auto quoted = [](uint16_t frag, size_t keep) {
        auto q = FrameBuilder().ipv4(kWebIp, kAppIp, ipproto::kTcp, 63, frag).tcp(40000, 80, kAck, 1001, 5001).build();
        q.resize(sizeof(Ipv4Hdr) + keep);
        return q;
    };
    EXPECT_EQ(icmp_message(kApp, kWeb, icmp::kTimeExceeded, 0, quoted(Ipv4Hdr::kDontFragment, 8)).verdict, dp::Verdict::forward);
    expect_drop(icmp_message(kApp, kWeb, icmp::kTimeExceeded, 0, quoted(Ipv4Hdr::kMoreFragments | 16, 8)),
                DropReason::ct_icmp_error_unmatched, "a later fragment has no ports");
    expect_drop(icmp_message(kApp, kWeb, icmp::kDestUnreachable, 3, quoted(Ipv4Hdr::kDontFragment, 4)),
                DropReason::ct_icmp_error_unmatched, "4 bytes: Linux relates it, calyx wants RFC 792's 8");

    load(site(kFrame6Groups + "  - {name: pingable, rules: [{direction: ingress, protocol: icmp, icmp_type: 8}]}\n",
              "public-sg", "default-sg, pingable", "private-sg"));
    ASSERT_EQ(ping(kWeb, kApp, 5).verdict, dp::Verdict::forward);
    const auto echo_quote = [](uint8_t type, uint8_t code, uint16_t id = 5) {
        auto q = FrameBuilder().ipv4(kWebIp, kAppIp, ipproto::kIcmp, 63).icmp_echo(id, 1, 0, type).build();
        q[sizeof(Ipv4Hdr) + 1] = code;
        return q;
    };
    EXPECT_EQ(icmp_message(kApp, kWeb, icmp::kDestUnreachable, 1, echo_quote(icmp::kEchoRequest, 0)).verdict, dp::Verdict::forward);
    expect_drop(icmp_message(kApp, kWeb, icmp::kDestUnreachable, 1, echo_quote(icmp::kEchoRequest, 7)),
                DropReason::ct_icmp_error_unmatched, "an echo request with a code no flow used");
    expect_drop(icmp_message(kApp, kWeb, icmp::kDestUnreachable, 1, echo_quote(icmp::kTimeExceeded, 0)),
                DropReason::ct_icmp_error_unmatched, "an error about an error");
    // The quoted identifier is read as the big-endian 16-bit number it is (both bytes count).
    ASSERT_EQ(ping(kWeb, kApp, 0x1234).verdict, dp::Verdict::forward);
    EXPECT_EQ(icmp_message(kApp, kWeb, icmp::kDestUnreachable, 1, echo_quote(icmp::kEchoRequest, 0, 0x1234)).verdict,
              dp::Verdict::forward);
    expect_drop(icmp_message(kApp, kWeb, icmp::kDestUnreachable, 1, echo_quote(icmp::kEchoRequest, 0, 0x1334)),
                DropReason::ct_icmp_error_unmatched, "an identifier no flow used");
}

// Linux relates redirects and source quench to the connection they quote; calyx drops both:
// calyx is every instance's first hop, and RFC 6633 retired source quench.
TEST_F(Policy, RedirectsAndSourceQuenchNeverPass) {
    ASSERT_TRUE(handshake(kWeb, kApp, 40000, 80));
    const auto quote = FrameBuilder().ipv4(kWebIp, kAppIp, ipproto::kTcp, 63).tcp(40000, 80, kAck, 1001, 5001).build();
    expect_drop(icmp_message(kApp, kWeb, icmp::kRedirect, 1, quote), DropReason::icmp_redirect_or_quench, "redirect");
    expect_drop(icmp_message(kApp, kWeb, icmp::kSourceQuench, 0, quote), DropReason::icmp_redirect_or_quench, "source quench");
    EXPECT_EQ(icmp_message(kApp, kWeb, icmp::kParameterProblem, 0, quote).verdict, dp::Verdict::forward) << "parameter problem";
}

// Linux tracks an echo request from the other host with the same identifier as a connection
// of its own: the rules decide, and then both pings and their replies pass.
TEST_F(Policy, PingingBackWithTheSameIdentifierIsANewConnectionForTheRules) {
    load(site(kFrame6Groups + "  - {name: pingable, rules: [{direction: ingress, protocol: icmp, icmp_type: 8}]}\n",
              "public-sg", "default-sg, pingable", "private-sg"));
    ASSERT_EQ(ping(kWeb, kApp, 21).verdict, dp::Verdict::forward);
    expect_drop(ping(kApp, kWeb, 21), DropReason::sg_no_egress_rule, "app-1 may not ping web-1");
    EXPECT_EQ(ping(kApp, kWeb, 21, icmp::kEchoReply).verdict, dp::Verdict::forward) << "its reply to web-1's ping";
    load(site(kFrame6Groups + "  - {name: pingable, rules: [{direction: ingress, protocol: icmp, icmp_type: 8}]}\n"
                              "  - {name: pinger, rules: [{direction: egress, protocol: icmp}]}\n",
              "public-sg, pingable", "default-sg, pingable, pinger", "private-sg"));
    EXPECT_EQ(ping(kApp, kWeb, 21).verdict, dp::Verdict::forward);
    EXPECT_EQ(ping(kWeb, kApp, 21, icmp::kEchoReply).verdict, dp::Verdict::forward);
    EXPECT_EQ(ping(kWeb, kApp, 21).verdict, dp::Verdict::forward) << "web-1's own flow lives on";
    EXPECT_EQ(ping(kApp, kWeb, 21, icmp::kEchoReply).verdict, dp::Verdict::forward);
}

// A SYN that reopens a closed connection ends it even when the rules refuse the new one, as
// in Linux: what the old connection still had in flight no longer passes.
TEST_F(Policy, ReopeningSynRefusedByTheRulesStillEndsTheOldConnection) {
    ASSERT_TRUE(handshake(kWeb, kApp, 40000, 80));
    ASSERT_EQ(tcp(kWeb, kApp, 40000, 80, kFin | kAck, 1001, 5001).verdict, dp::Verdict::forward);
    ASSERT_EQ(tcp(kApp, kWeb, 80, 40000, kFin | kAck, 5001, 1002).verdict, dp::Verdict::forward);
    ASSERT_EQ(tcp(kWeb, kApp, 40000, 80, kAck, 1002, 5002).verdict, dp::Verdict::forward);  // TIME_WAIT
    EXPECT_EQ(tcp(kApp, kWeb, 80, 40000, kAck, 5002, 1002).verdict, dp::Verdict::forward) << "a late ACK";
    expect_drop(tcp(kApp, kWeb, 80, 40000, kSyn, 9000, 0), DropReason::sg_no_egress_rule, "app-1 may not open to web-1");
    expect_drop(tcp(kApp, kWeb, 80, 40000, kAck, 5002, 1002), DropReason::ct_invalid_new, "the old connection is gone");
    EXPECT_EQ(tcp(kWeb, kApp, 40000, 80, kSyn, 2000, 0).verdict, dp::Verdict::forward) << "web-1 may open it again";
}

TEST_F(Policy, LaterFragmentsFollowTheirFirstFragment) {
    auto fragment = [&](const Host& from, const Host& to, uint16_t frag, bool first, uint16_t dport) {
        FrameBuilder b;
        b.eth(from.mac, kGatewayMac).ipv4(from.ip, to.ip, ipproto::kUdp, 64, frag);
        if (first)
            b.udp(7000, dport, std::vector<uint8_t>(64, 0));
        else
            b.raw(std::vector<uint8_t>(64, 0));
        auto bytes = b.build();
        if (first) {  // a first fragment's UDP length covers the whole datagram, not this piece
            auto* u = reinterpret_cast<UdpHdr*>(bytes.data() + sizeof(EtherHdr) + sizeof(Ipv4Hdr));
            u->length = Be16::from_host(200);
        }
        TestFrame f(bytes);
        return run(f, from.port);
    };
    // db-1 may send anything; web-1 takes tcp only: fragments to web-1 follow the first's fate.
    load(site(kFrame6Groups + "  - {name: udp-in, rules: [{direction: ingress, protocol: udp, ports: 9000}]}\n",
              "public-sg", "default-sg, udp-in", "private-sg"));
    EXPECT_EQ(fragment(kDb, kApp, Ipv4Hdr::kMoreFragments, true, 9000).verdict, dp::Verdict::forward);
    EXPECT_EQ(fragment(kDb, kApp, Ipv4Hdr::kMoreFragments | 9, false, 0).verdict, dp::Verdict::forward);
    EXPECT_EQ(fragment(kDb, kApp, 18, false, 0).verdict, dp::Verdict::forward) << "last fragment";
    expect_drop(fragment(kDb, kWeb, Ipv4Hdr::kMoreFragments, true, 9000), DropReason::sg_no_ingress_rule, "first denied");
    expect_drop(fragment(kDb, kWeb, 9, false, 0), DropReason::fragment_unmatched, "follows the denied first");
    expect_drop(fragment(kWeb, kApp, 9, false, 0), DropReason::fragment_unmatched, "no first fragment seen");
}

// Only a first fragment (more fragments follow) is remembered for the later ones: a whole
// datagram, allowed as it is, opens no way for a later fragment that carries its IP id.
TEST_F(Policy, AWholeDatagramOpensNoWayForLaterFragments) {
    load(site(kFrame6Groups + "  - {name: udp-in, rules: [{direction: ingress, protocol: udp, ports: 9000}]}\n",
              "public-sg", "default-sg, udp-in", "private-sg"));
    ASSERT_EQ(udp(kDb, kApp, 7000, 9000).verdict, dp::Verdict::forward);  // IP id 0x1234, DF
    TestFrame later(FrameBuilder()
                        .eth(kDbMac, kGatewayMac)
                        .ipv4(kDbIp, kAppIp, ipproto::kUdp, 64, 9)  // same id, offset 72 bytes
                        .raw(std::vector<uint8_t>(64, 0))
                        .build());
    expect_drop(run(later, kDbPort), DropReason::fragment_unmatched, "a later fragment of no first fragment");
}

// db-1 -> app-1:9000, the first fragment (more fragments follow) of a UDP datagram whose
// header says `udp_length` bytes.
std::vector<uint8_t> first_fragment_db_to_app(uint16_t udp_length) {
    auto first = FrameBuilder()
                     .eth(kDbMac, kGatewayMac)
                     .ipv4(kDbIp, kAppIp, ipproto::kUdp, 64, Ipv4Hdr::kMoreFragments)
                     .udp(7000, 9000, std::vector<uint8_t>(64, 0))
                     .build();
    reinterpret_cast<UdpHdr*>(first.data() + sizeof(EtherHdr) + sizeof(Ipv4Hdr))->length = Be16::from_host(udp_length);
    return first;
}

// Later fragments follow their first fragment's verdict for conntrack.fragment seconds (30 by
// default), and not a nanosecond longer.
TEST_F(Policy, LaterFragmentsFollowTheirFirstForTheFragmentTimeoutOnly) {
    load(site(kFrame6Groups + "  - {name: udp-in, rules: [{direction: ingress, protocol: udp, ports: 9000}]}\n",
              "public-sg", "default-sg, udp-in", "private-sg"));
    auto later = [&](uint16_t offset_8) {
        TestFrame f(FrameBuilder()
                        .eth(kDbMac, kGatewayMac)
                        .ipv4(kDbIp, kAppIp, ipproto::kUdp, 64, Ipv4Hdr::kMoreFragments | offset_8)
                        .raw(std::vector<uint8_t>(64, 0))
                        .build());
        return run(f, kDbPort);
    };
    TestFrame f(first_fragment_db_to_app(400));
    constexpr uint64_t kSecond = 1'000'000'000;
    const uint64_t start = ctx_.now_ns;
    ASSERT_EQ(run(f, kDbPort).verdict, dp::Verdict::forward);
    ctx_.now_ns = start + 30 * kSecond - 1;
    EXPECT_EQ(later(9).verdict, dp::Verdict::forward) << "just inside the 30 s";
    ctx_.now_ns = start + 30 * kSecond;
    expect_drop(later(18), DropReason::fragment_unmatched, "30 s after the first fragment");
}

// Only a masqueraded datagram's later fragments are translated: between instances a later
// fragment leaves with the addresses it came with.
TEST_F(Policy, ALaterFragmentBetweenInstancesKeepsItsAddresses) {
    load(site(kFrame6Groups + "  - {name: udp-in, rules: [{direction: ingress, protocol: udp, ports: 9000}]}\n",
              "public-sg", "default-sg, udp-in", "private-sg"));
    TestFrame f(first_fragment_db_to_app(200));
    ASSERT_EQ(run(f, kDbPort).verdict, dp::Verdict::forward);
    TestFrame later(FrameBuilder()
                        .eth(kDbMac, kGatewayMac)
                        .ipv4(kDbIp, kAppIp, ipproto::kUdp, 64, 9)
                        .raw(std::vector<uint8_t>(64, 0))
                        .build());
    ASSERT_EQ(run(later, kDbPort).verdict, dp::Verdict::forward);
    const auto* ip = later.at<Ipv4Hdr>(sizeof(EtherHdr));
    EXPECT_EQ(Ipv4Addr::from_be(ip->src), kDbIp);
    EXPECT_EQ(Ipv4Addr::from_be(ip->dst), kAppIp);
    EXPECT_EQ(internet_checksum(ip, sizeof(Ipv4Hdr)), 0);
}

TEST_F(Policy, FullTableEvictsUnansweredConnectionsWhileEstablishedOnesContinue) {
    load(site(kFrame6Groups, "public-sg", "default-sg", "private-sg", 1024));
    ASSERT_TRUE(handshake(kWeb, kApp, 40000, 80));
    // db-1 may send anything and app-1 takes tcp/4545 from it: SYNs nobody answers, twice as
    // many as the table holds. Each one past the capacity takes the place of an older one
    // (limits_test.cpp has who is evicted and when nothing can be).
    for (uint16_t port = 1; port <= 2 * conntrack_->capacity(); ++port)
        ASSERT_EQ(tcp(kDb, kApp, port, 4545, kSyn, 1, 0).verdict, dp::Verdict::forward) << port;
    // Full (an eviction from a new key's own buckets may leave a key's room free).
    EXPECT_LE(conntrack_->reserved(), conntrack_->capacity());
    EXPECT_GE(conntrack_->reserved() + 8, conntrack_->capacity());
    EXPECT_GE(conntrack_->evicted(), conntrack_->capacity() - 8);
    EXPECT_EQ(drops(kDbPort, DropReason::ct_table_full), 0u);
    EXPECT_EQ(tcp(kWeb, kApp, 40000, 80, kAck, 1001, 5001, 10).verdict, dp::Verdict::forward)
        << "established connection unaffected";
}

TEST_F(Policy, ConnectionsAreCountedAndExpire) {
    ASSERT_EQ(udp(kDb, kApp, 1, 4545).verdict, dp::Verdict::drop);
    ASSERT_TRUE(handshake(kDb, kApp, 45000, 4545));
    EXPECT_EQ(counters_->ct_created, 1u);
    EXPECT_EQ(conntrack_->size(), 1u);
    // SYN_RECV -> ESTABLISHED: 5 days. Expire it by sweeping far in the future.
    EXPECT_EQ(conntrack_->sweep(ctx_.now_ns + 6ull * 86400 * 1'000'000'000, conntrack_->slots(), nullptr), 1u);
    EXPECT_EQ(conntrack_->size(), 0u);
}

// A protocol without ports (GRE) is tracked by its addresses alone: ports 0 in the key, so a
// reply and any other packet between the two addresses belong to the same connection.
TEST_F(Policy, AProtocolWithoutPortsIsTrackedByAddressesAlone) {
    load(site(R"(
  - name: gre-out
    rules: [{direction: egress, protocol: any}]
  - name: gre-in
    rules: [{direction: ingress, protocol: any}])", "gre-out", "gre-in", ""));
    TestFrame f(FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kAppIp, 47).raw(std::vector<uint8_t>(8, 0xab)).build());
    ASSERT_EQ(run(f, kWebPort).verdict, dp::Verdict::forward);
    const dp::CtKey key = dp::make_ct_key(47, {zones_.at("public"), kWebIp, 0}, {zones_.at("nat"), kAppIp, 0}).key;
    EXPECT_GE(conntrack_->lookup(key), 0) << "no connection keyed by the addresses with ports 0";
    EXPECT_EQ(conntrack_->size(), 1u);
}

}  // namespace
}  // namespace calyx::test
