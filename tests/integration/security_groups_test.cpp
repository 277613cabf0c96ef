// Security groups with stateful connection tracking, end to end: the seed's frames 1 and 4 to 6
// between the three instances of calyx_fixture.hpp (web-1 public, app-1 nat, db-1 private),
// through the real calyx binary, with real TCP segments over vhost-user.
//
// The VMs are not TCP stacks: a test plays both ends of a connection, sending each segment
// (SYN, SYN-ACK, ACK, data) from one VM's NIC and expecting it routed to the other's. Every
// test checks what passes and what does not; a dropped packet is proven by calyx's per-port
// drop counter for the expected reason (SIGUSR1) and by nothing arriving at the destination.
//
// Usage: security_groups_test [gtest flags] [--calyx-bin=PATH | PATH]; $CALYX_BIN wins.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "calyx_fixture.hpp"
#include "dhcp_frames.hpp"
#include "test_frames.hpp"
#include "vm_peer.hpp"

namespace calyx::test {
namespace {

using namespace std::chrono_literals;

// After the drop counter moved, the packet has been dealt with: a forwarded copy would already
// be on its way, so a short watch suffices.
constexpr std::chrono::milliseconds kAfterDrop{200};

// ------------------------------------------------------------------------------------------
// The seed's rules, as YAML flow mappings.

namespace rule {
// Frame 2: the public instance may reach anything.
const std::string kEgressAny = "{direction: egress, protocol: any, remote: 0.0.0.0/0}";
// Frame 3: anyone may reach the public instance on 443.
const std::string kHttpsFromAnywhere =
    "{direction: ingress, protocol: tcp, ports: 443, remote: 0.0.0.0/0}";
// Frame 4: the public instance may reach the default (nat) instance on port 80.
const std::string kHttpFromWeb =
    "{direction: ingress, protocol: tcp, ports: 80, remote: 203.0.113.10/32}";
// Frame 5: the default instance may reach the public instance on 3333, both halves.
const std::string k3333FromApp =
    "{direction: ingress, protocol: tcp, ports: 3333, remote: 10.10.0.5/32}";
const std::string k3333ToWeb =
    "{direction: egress, protocol: tcp, ports: 3333, remote: 203.0.113.10/32}";
// Frame 6: the private instance's group may reach the default instance on 4545.
const std::string k4545FromDbGroup =
    "{direction: ingress, protocol: tcp, ports: 4545, remote_group: db}";
}  // namespace rule

// Frames 2 to 4: web-1 egress anywhere and ingress 443; app-1 ingress 80 from web-1; db-1 in
// no group.
SecurityPolicy frame4_policy() {
    SecurityPolicy p;
    p.group("web", {rule::kEgressAny, rule::kHttpsFromAnywhere});
    p.group("app", {rule::kHttpFromWeb});
    p.member(kWeb, {"web"}).member(kApp, {"app"});
    return p;
}

// Frame 5 without app-1's egress rule: web-1 accepts 3333 from app-1, app-1 cannot send it.
SecurityPolicy frame5_ingress_only() {
    SecurityPolicy p;
    p.group("web", {rule::kEgressAny, rule::kHttpsFromAnywhere, rule::k3333FromApp});
    p.group("app", {rule::kHttpFromWeb});
    p.member(kWeb, {"web"}).member(kApp, {"app"});
    return p;
}

// Frame 5 complete: app-1 also has the egress rule.
SecurityPolicy frame5_policy() {
    SecurityPolicy p;
    p.group("web", {rule::kEgressAny, rule::kHttpsFromAnywhere, rule::k3333FromApp});
    p.group("app", {rule::kHttpFromWeb, rule::k3333ToWeb});
    p.member(kWeb, {"web"}).member(kApp, {"app"});
    return p;
}

// Frame 6: app-1 accepts 4545 from the members of group "db"; db-1 is in it and may send
// anything anywhere. `db_member` false: db-1 is in "db-moved" instead, with the same egress
// rule, so only app-1's ingress rule stops matching it.
SecurityPolicy frame6_policy(bool db_member = true) {
    SecurityPolicy p;
    p.group("web", {rule::kEgressAny, rule::kHttpsFromAnywhere});
    p.group("app", {rule::kHttpFromWeb, rule::k4545FromDbGroup});
    p.group("db", {rule::kEgressAny});
    p.group("db-moved", {rule::kEgressAny});
    p.member(kWeb, {"web"}).member(kApp, {"app"}).member(kDb, {db_member ? "db" : "db-moved"});
    return p;
}

// ------------------------------------------------------------------------------------------
// TCP played from both ends.

struct TcpFlow {
    const Vm* client;
    const Vm* server;
    uint16_t client_port;
    uint16_t server_port;
    uint32_t client_next = 0x10000000;  // next sequence number each side sends (ISN at first)
    uint32_t server_next = 0x70000000;
};

enum class From { client, server };

std::string flags_text(uint8_t flags) {
    std::string s;
    if (flags & TcpHdr::kSyn) s += "SYN ";
    if (flags & TcpHdr::kAck) s += "ACK ";
    if (flags & TcpHdr::kPsh) s += "PSH ";
    if (flags & TcpHdr::kFin) s += "FIN ";
    if (flags & TcpHdr::kRst) s += "RST ";
    if (!s.empty()) s.pop_back();
    return s;
}

class SecurityGroupTest : public CalyxFixture {
  protected:
    void start_with(const SecurityPolicy& policy) {
        ASSERT_NO_FATAL_FAILURE(start_all({.security = policy}));
    }

    static const Vm& sender(const TcpFlow& f, From from) {
        return from == From::client ? *f.client : *f.server;
    }
    static const Vm& receiver(const TcpFlow& f, From from) {
        return from == From::client ? *f.server : *f.client;
    }

    // The segment `from` sends next with `flags`: its own next sequence number, and (with ACK)
    // the other side's next as acknowledgment.
    static Bytes segment(const TcpFlow& f, From from, uint8_t flags, const Bytes& payload = {}) {
        const bool c = from == From::client;
        const Vm& src = sender(f, from);
        const Vm& dst = receiver(f, from);
        const uint32_t seq = c ? f.client_next : f.server_next;
        const uint32_t ack = (flags & TcpHdr::kAck) ? (c ? f.server_next : f.client_next) : 0;
        return FrameBuilder()
            .eth(src.mac, kGatewayMac)
            .ipv4(src.ip, dst.ip, ipproto::kTcp)
            .tcp(c ? f.client_port : f.server_port, c ? f.server_port : f.client_port, flags, seq,
                 ack, payload)
            .build();
    }

    // Matches the routed copy of `sent`: same addresses, ports, flags and numbers.
    static FramePredicate same_segment(const Bytes& sent) {
        const Ipv4Hdr ip = ipv4_of(sent);
        const TcpHdr t = tcp_of(sent);
        return [ip, t](const Bytes& f) {
            if (!is_tcp(f)) return false;
            const Ipv4Hdr i = ipv4_of(f);
            const TcpHdr h = tcp_of(f);
            return i.src.host() == ip.src.host() && i.dst.host() == ip.dst.host() &&
                   h.src_port.host() == t.src_port.host() &&
                   h.dst_port.host() == t.dst_port.host() && h.flags == t.flags &&
                   h.seq.host() == t.seq.host() && h.ack.host() == t.ack.host();
        };
    }

    static void advance(TcpFlow& f, From from, uint8_t flags, size_t payload) {
        uint32_t& next = from == From::client ? f.client_next : f.server_next;
        next += static_cast<uint32_t>(payload) + ((flags & (TcpHdr::kSyn | TcpHdr::kFin)) ? 1 : 0);
    }

    static std::string describe(const TcpFlow& f, From from, uint8_t flags) {
        return fmt::format("{} {}:{} -> {} {}:{} [{}]", sender(f, from).name,
                           text(sender(f, from).ip),
                           from == From::client ? f.client_port : f.server_port,
                           receiver(f, from).name, text(receiver(f, from).ip),
                           from == From::client ? f.server_port : f.client_port, flags_text(flags));
    }

    // The segment arrives at the other VM, routed by calyx and otherwise unchanged.
    void expect_passes(TcpFlow& f, From from, uint8_t flags, const Bytes& payload = {}) {
        const std::string what = describe(f, from, flags);
        SCOPED_TRACE(what);
        const Bytes sent = segment(f, from, flags, payload);
        ASSERT_TRUE(vm(sender(f, from)).send(sent)) << "could not send " << what;
        auto got = vm(receiver(f, from)).receive(kReply, same_segment(sent));
        ASSERT_TRUE(got) << what << ": did not arrive within " << kReply.count() << " ms";
        EXPECT_EQ(eth_src(*got), kGatewayMac);
        EXPECT_EQ(eth_dst(*got), receiver(f, from).mac);
        EXPECT_EQ(ipv4_of(*got).ttl, 63);
        EXPECT_EQ(got->size(), sent.size()) << "payload changed";
        advance(f, from, flags, payload.size());
    }

    // The segment (or any frame) is dropped for `reason`: exactly one more drop, and of that
    // reason, on the sender's port; nothing arrives at the destination.
    void expect_dropped(const Vm& from, const Vm& to, const Bytes& frame,
                        const FramePredicate& at_dest, std::string_view reason,
                        std::string_view what) {
        SCOPED_TRACE(fmt::format("{} (expected drop: {})", what, reason));
        auto before = counters();
        ASSERT_TRUE(before);
        const uint64_t reason_before = before->drops(from.name, reason);
        const uint64_t all_before = before->all_drops(from.name);
        ASSERT_TRUE(vm(from).send(frame));
        auto after = wait_for_drops(from.name, reason, reason_before + 1);
        ASSERT_TRUE(after);
        EXPECT_EQ(after->drops(from.name, reason), reason_before + 1)
            << what << ": not dropped as " << reason << "; drops of " << from.name << " now:\n"
            << after->text;
        EXPECT_EQ(after->all_drops(from.name), all_before + 1)
            << what << ": other drops on " << from.name << ":\n"
            << after->text;
        expect_nothing(to, at_dest, what, kAfterDrop);
    }

    void expect_segment_dropped(const TcpFlow& f, From from, uint8_t flags, std::string_view reason,
                                const Bytes& payload = {}) {
        const Bytes sent = segment(f, from, flags, payload);
        expect_dropped(sender(f, from), receiver(f, from), sent, same_segment(sent), reason,
                       describe(f, from, flags));
    }

    // SYN, SYN-ACK, ACK: each one must arrive.
    void expect_handshake(TcpFlow& f) {
        ASSERT_NO_FATAL_FAILURE(expect_passes(f, From::client, TcpHdr::kSyn));
        ASSERT_NO_FATAL_FAILURE(expect_passes(f, From::server, TcpHdr::kSyn | TcpHdr::kAck));
        ASSERT_NO_FATAL_FAILURE(expect_passes(f, From::client, TcpHdr::kAck));
    }

    // A request from the client and a response from the server, each acknowledged.
    void expect_data_both_ways(TcpFlow& f, std::string_view tag) {
        const std::string req = fmt::format("GET /{} HTTP/1.0\r\n\r\n", tag);
        const std::string rsp = fmt::format("HTTP/1.0 200 OK\r\n\r\n{}", tag);
        constexpr uint8_t kData = TcpHdr::kPsh | TcpHdr::kAck;
        ASSERT_NO_FATAL_FAILURE(
            expect_passes(f, From::client, kData, Bytes(req.begin(), req.end())));
        ASSERT_NO_FATAL_FAILURE(
            expect_passes(f, From::server, kData, Bytes(rsp.begin(), rsp.end())));
        ASSERT_NO_FATAL_FAILURE(expect_passes(f, From::client, TcpHdr::kAck));
    }

    // A fresh SYN from `client` to `server`:`port` is dropped for `reason`.
    void expect_syn_dropped(const Vm& client, const Vm& server, uint16_t client_port, uint16_t port,
                            std::string_view reason) {
        const TcpFlow f{&client, &server, client_port, port};
        expect_segment_dropped(f, From::client, TcpHdr::kSyn, reason);
    }

    // The reload was accepted as the next generation.
    void expect_reloaded(const ReloadOutcome& r, uint64_t generation) {
        ASSERT_TRUE(r.answered) << r.output;
        ASSERT_TRUE(r.accepted) << "reload rejected:\n" << r.output;
        EXPECT_EQ(r.generation, generation) << r.output;
    }

    void expect_no_revocations() {
        auto c = counters();
        ASSERT_TRUE(c);
        for (const Vm* v : kVms)
            EXPECT_EQ(c->drops(v->name, "sg_revoked"), 0u) << v->name << ":\n" << c->text;
    }
};

// ------------------------------------------------------------------------------------------
// Frame 1: no groups, no communication; infrastructure still works.

class NoSecurityGroups : public SecurityGroupTest {
  protected:
    void SetUp() override { ASSERT_NO_FATAL_FAILURE(start_with(SecurityPolicy::none())); }
};

TEST_F(NoSecurityGroups, InstancesCannotReachEachOtherButTheGatewayStillAnswers) {
    // Nothing between instances: ping and TCP, in several directions.
    expect_dropped(kWeb, kApp, ping_frame(kWeb, kApp.ip, 0x1100, 1), is_echo_request(0x1100, 1),
                   "sg_no_egress_rule", "ping web-1 -> app-1");
    expect_syn_dropped(kWeb, kApp, 41000, 80, "sg_no_egress_rule");
    expect_syn_dropped(kApp, kWeb, 41001, 443, "sg_no_egress_rule");
    expect_dropped(kDb, kWeb, ping_frame(kDb, kWeb.ip, 0x1101, 1), is_echo_request(0x1101, 1),
                   "sg_no_egress_rule", "ping db-1 -> web-1");

    // ARP, ping to the own gateway and DHCP are infrastructure: always answered.
    for (const Vm* v : kVms) {
        SCOPED_TRACE(v->name);
        auto arp = vm(*v).request(arp_request(v->mac, v->ip, v->gateway), kReply,
                                  is_arp_reply_for(v->gateway));
        EXPECT_TRUE(arp) << "ARP for the gateway not answered";
        expect_gateway_answers_ping(*v, 0x1110, 1);
    }
    const uint32_t xid = 0x5eed1001;
    auto offer =
        vm(kWeb).request(dhcp_client_frame({.type = dhcp::kDiscover, .mac = kWeb.mac, .xid = xid}),
                         kReply, is_dhcp_reply(dhcp::kOffer, xid), 500ms);
    EXPECT_TRUE(offer) << "DHCPDISCOVER not answered";
    // Answers to infrastructure are not policy drops.
    auto c = counters();
    ASSERT_TRUE(c);
    for (const Vm* v : kVms) EXPECT_EQ(c->drops(v->name, "sg_no_ingress_rule"), 0u) << c->text;
}

// ------------------------------------------------------------------------------------------
// Frame 4 (with frames 2 and 3 in place).

class Frame4 : public SecurityGroupTest {
  protected:
    void SetUp() override { ASSERT_NO_FATAL_FAILURE(start_with(frame4_policy())); }
};

TEST_F(Frame4, PublicInstanceReachesDefaultInstanceOnPort80BothWays) {
    TcpFlow http{&kWeb, &kApp, 42000, 80};
    ASSERT_NO_FATAL_FAILURE(expect_handshake(http));
    ASSERT_NO_FATAL_FAILURE(expect_data_both_ways(http, "frame4"));
    ASSERT_NO_FATAL_FAILURE(expect_data_both_ways(http, "again"));
    // Closing passes too: FIN each way, last ACK.
    ASSERT_NO_FATAL_FAILURE(expect_passes(http, From::client, TcpHdr::kFin | TcpHdr::kAck));
    ASSERT_NO_FATAL_FAILURE(expect_passes(http, From::server, TcpHdr::kFin | TcpHdr::kAck));
    ASSERT_NO_FATAL_FAILURE(expect_passes(http, From::client, TcpHdr::kAck));
}

TEST_F(Frame4, OnlyThatDirectionAndPortAreOpen) {
    // app-1 has no egress rule: it cannot open port 80 (or anything) on web-1.
    expect_syn_dropped(kApp, kWeb, 42100, 80, "sg_no_egress_rule");
    // web-1 may send anything, but app-1 accepts only port 80 from it.
    expect_syn_dropped(kWeb, kApp, 42101, 81, "sg_no_ingress_rule");
    expect_dropped(kWeb, kApp, ping_frame(kWeb, kApp.ip, 0x1200, 1), is_echo_request(0x1200, 1),
                   "sg_no_ingress_rule", "ping web-1 -> app-1");
    // db-1 is in no group.
    expect_syn_dropped(kDb, kApp, 42102, 80, "sg_no_egress_rule");
    // The open port still works after all that.
    TcpFlow http{&kWeb, &kApp, 42103, 80};
    expect_handshake(http);
}

TEST_F(Frame4, ReplyWithoutConnectionIsDropped) {
    // A SYN-ACK nobody asked for: not a first packet, whatever the rules say.
    const TcpFlow unsolicited{&kWeb, &kApp, 42200, 80};
    expect_segment_dropped(unsolicited, From::server, TcpHdr::kSyn | TcpHdr::kAck,
                           "ct_invalid_new");
    // A bare ACK on a port the rules open: conntrack never picks up mid-stream traffic.
    const TcpFlow midstream{&kWeb, &kApp, 42201, 80};
    expect_segment_dropped(midstream, From::client, TcpHdr::kAck, "ct_invalid_new");
    // A "reply" datagram from app-1 without a request: a new flow, and app-1 has no egress.
    const Bytes udp = FrameBuilder()
                          .eth(kApp.mac, kGatewayMac)
                          .ipv4(kApp.ip, kWeb.ip, ipproto::kUdp)
                          .udp(53, 42202, {1, 2, 3, 4})
                          .build();
    expect_dropped(kApp, kWeb, udp, is_udp, "sg_no_egress_rule", "udp app-1:53 -> web-1:42202");
    // With the connection opened first, the same SYN-ACK is the reply and passes.
    TcpFlow http{&kWeb, &kApp, 42200, 80};
    ASSERT_NO_FATAL_FAILURE(expect_passes(http, From::client, TcpHdr::kSyn));
    ASSERT_NO_FATAL_FAILURE(expect_passes(http, From::server, TcpHdr::kSyn | TcpHdr::kAck));
}

TEST_F(Frame4, EstablishedConnectionSurvivesAReloadThatStillAllowsIt) {
    TcpFlow http{&kWeb, &kApp, 42300, 80};
    ASSERT_NO_FATAL_FAILURE(expect_handshake(http));
    ASSERT_NO_FATAL_FAILURE(expect_data_both_ways(http, "before"));
    // An unrelated rule (UDP 5353 from the private network) is added.
    SecurityPolicy more = frame4_policy();
    more.groups[1].rules.push_back(
        "{direction: ingress, protocol: udp, ports: 5353, remote: 10.20.0.0/24}");
    ASSERT_NO_FATAL_FAILURE(expect_reloaded(reload({.security = more}), 2));
    ASSERT_NO_FATAL_FAILURE(expect_data_both_ways(http, "after"));
    expect_no_revocations();
    // New connections are still allowed, and the unchanged closed ports still closed.
    TcpFlow second{&kWeb, &kApp, 42301, 80};
    expect_handshake(second);
    expect_syn_dropped(kWeb, kApp, 42302, 81, "sg_no_ingress_rule");
}

TEST_F(Frame4, InvalidConfigOnReloadIsRejectedAndTrafficContinues) {
    TcpFlow http{&kWeb, &kApp, 42400, 80};
    ASSERT_NO_FATAL_FAILURE(expect_handshake(http));
    // One valid change (port 81 opened) among invalid rules: nothing of it may apply.
    SecurityPolicy bad = frame4_policy();
    bad.groups[1].rules.push_back(
        "{direction: ingress, protocol: tcp, ports: 81, remote: 203.0.113.10/32}");
    bad.groups[1].rules.push_back("{direction: ingress, protocol: icmp, ports: 80}");
    bad.groups[1].rules.push_back("{direction: ingress, protocol: tcp, ports: \"90-80\"}");
    bad.groups[1].rules.push_back(
        "{direction: ingress, protocol: tcp, ports: 22, remote_group: nosuch}");
    const std::string yaml = config_text({.security = bad});
    const ReloadOutcome r = reload_text(yaml);
    ASSERT_TRUE(r.answered) << r.output;
    EXPECT_FALSE(r.accepted) << "an invalid config was accepted:\n" << r.output;
    EXPECT_NE(r.output.find("calyx: reload rejected"), std::string::npos) << r.output;
    // Every error, located in the file that was read.
    const auto errors = located_errors(r.output);
    EXPECT_GE(errors.size(), 3u) << r.output;
    std::set<int> lines;
    for (const auto& e : errors) {
        EXPECT_EQ(e.file, config_.string()) << e.message;
        EXPECT_GT(e.column, 0) << e.message;
        lines.insert(e.line);
    }
    for (std::string_view marker : {"protocol: icmp, ports: 80", "\"90-80\"", "nosuch"}) {
        const int line = line_of(yaml, marker);
        EXPECT_TRUE(lines.contains(line))
            << "no error at line " << line << " (" << marker << "); calyx said:\n"
            << r.output;
    }
    // The running rules are untouched: the connection continues, port 80 still opens, 81 is
    // still closed.
    ASSERT_NO_FATAL_FAILURE(expect_data_both_ways(http, "still"));
    TcpFlow second{&kWeb, &kApp, 42401, 80};
    ASSERT_NO_FATAL_FAILURE(expect_handshake(second));
    expect_syn_dropped(kWeb, kApp, 42402, 81, "sg_no_ingress_rule");
    expect_no_revocations();
    // The rejected config did not use up a generation: the next valid one is the second.
    ASSERT_NO_FATAL_FAILURE(expect_reloaded(reload({.security = frame4_policy()}), 2));
    ASSERT_NO_FATAL_FAILURE(expect_data_both_ways(http, "after"));
}

// ------------------------------------------------------------------------------------------
// Frame 5: an ingress rule alone is not enough between instances.

class Frame5 : public SecurityGroupTest {
  protected:
    void SetUp() override { ASSERT_NO_FATAL_FAILURE(start_with(frame5_ingress_only())); }
};

TEST_F(Frame5, DefaultInstanceReachesPublicInstanceOn3333OnlyWithItsEgressRule) {
    // web-1 accepts 3333 from app-1, but app-1 may not send it yet.
    expect_syn_dropped(kApp, kWeb, 43000, 3333, "sg_no_egress_rule");
    ASSERT_NO_FATAL_FAILURE(expect_reloaded(reload({.security = frame5_policy()}), 2));
    TcpFlow conn{&kApp, &kWeb, 43001, 3333};
    ASSERT_NO_FATAL_FAILURE(expect_handshake(conn));
    ASSERT_NO_FATAL_FAILURE(expect_data_both_ways(conn, "frame5"));
    // The egress rule is for web-1's 3333 only.
    expect_syn_dropped(kApp, kWeb, 43002, 3334, "sg_no_egress_rule");
    expect_syn_dropped(kApp, kDb, 43003, 3333, "sg_no_egress_rule");
    // web-1 may send anywhere, but app-1 does not accept 3333.
    expect_syn_dropped(kWeb, kApp, 43004, 3333, "sg_no_ingress_rule");
}

// ------------------------------------------------------------------------------------------
// Frame 6: remote_group.

class Frame6 : public SecurityGroupTest {
  protected:
    void SetUp() override { ASSERT_NO_FATAL_FAILURE(start_with(frame6_policy())); }
};

TEST_F(Frame6, PrivateInstanceReachesDefaultInstanceOn4545ThroughItsGroup) {
    TcpFlow conn{&kDb, &kApp, 44000, 4545};
    ASSERT_NO_FATAL_FAILURE(expect_handshake(conn));
    ASSERT_NO_FATAL_FAILURE(expect_data_both_ways(conn, "frame6"));
    // web-1 may send anything, but it is not in group "db".
    expect_syn_dropped(kWeb, kApp, 44001, 4545, "sg_no_ingress_rule");
    // The group opens 4545 only.
    expect_syn_dropped(kDb, kApp, 44002, 4546, "sg_no_ingress_rule");
}

TEST_F(Frame6, RemoteGroupFollowsMembership) {
    TcpFlow established{&kDb, &kApp, 44100, 4545};
    ASSERT_NO_FATAL_FAILURE(expect_handshake(established));
    ASSERT_NO_FATAL_FAILURE(expect_data_both_ways(established, "member"));

    // db-1 leaves the group (it keeps its egress rule in another one).
    ASSERT_NO_FATAL_FAILURE(expect_reloaded(reload({.security = frame6_policy(false)}), 2));
    // The established connection is cut at its next packet...
    expect_segment_dropped(established, From::client, TcpHdr::kPsh | TcpHdr::kAck, "sg_revoked",
                           Bytes{'c', 'u', 't'});
    // ...and new ones are not allowed.
    expect_syn_dropped(kDb, kApp, 44101, 4545, "sg_no_ingress_rule");

    // Back in the group: new connections work again.
    ASSERT_NO_FATAL_FAILURE(expect_reloaded(reload({.security = frame6_policy(true)}), 3));
    TcpFlow again{&kDb, &kApp, 44102, 4545};
    ASSERT_NO_FATAL_FAILURE(expect_handshake(again));
    ASSERT_NO_FATAL_FAILURE(expect_data_both_ways(again, "member-again"));
}

// ---- reloads under traffic ------------------------------------------------------------------

class ReloadUnderTraffic : public SecurityGroupTest {
  protected:
    void SetUp() override { ASSERT_NO_FATAL_FAILURE(start_with(SecurityPolicy::open_to_all())); }
};

// Workers never stop for a reload: a stream between two instances that every configuration
// allows loses nothing while calyx swaps ten snapshots under it. Prints what it measured.
TEST_F(ReloadUnderTraffic, TenReloadsLoseNoPacketOfAnUnaffectedStream) {
    SecurityPolicy other = SecurityPolicy::open_to_all();
    other.group("unrelated", {"{direction: ingress, protocol: tcp, ports: 22, remote: 192.0.2.0/24}"});
    other.member(kDb, {"open", "unrelated"});
    auto datagram = [](uint32_t seq) {
        std::vector<uint8_t> payload(4);
        std::memcpy(payload.data(), &seq, 4);
        return FrameBuilder().eth(kWeb.mac, kGatewayMac).ipv4(kWeb.ip, kApp.ip, ipproto::kUdp).udp(40000, 5000, payload).build();
    };
    const FramePredicate stream = [](const Bytes& f) {
        return is_udp(f) && Ipv4Addr::from_be(ipv4_of(f).src) == kWeb.ip && udp_of(f).dst_port.host() == 5000;
    };
    std::atomic<bool> done{false};
    std::vector<double> reload_ms;
    std::vector<ReloadOutcome> outcomes;
    std::thread reloader([&] {
        for (int k = 0; k < 10; ++k) {
            std::this_thread::sleep_for(100ms);
            const auto t0 = std::chrono::steady_clock::now();
            outcomes.push_back(reload({.security = k % 2 ? SecurityPolicy::open_to_all() : other}));
            reload_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        }
        done = true;
    });
    uint32_t sent = 0;
    uint64_t received = 0;
    const auto t0 = std::chrono::steady_clock::now();
    while (!done) {
        for (int i = 0; i < 16; ++i) sent += vm(kWeb).send(datagram(sent)) ? 1 : 0;
        received += vm(kApp).receive_all(1ms, stream).size();
    }
    reloader.join();
    received += vm(kApp).receive_all(kSilence, stream).size();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (const auto& o : outcomes) EXPECT_TRUE(o.accepted) << o.output;
    std::sort(reload_ms.begin(), reload_ms.end());
    const auto report = counters();
    ASSERT_TRUE(report.has_value());
    // The receiving "VM" is this test process: when the machine deschedules it, its receive
    // ring fills and calyx counts tx_full at app-1. That is the guest's loss, not the reload's.
    const uint64_t ring_full = report->drops("app-1", "tx_full");
    std::cout << fmt::format(
        "[measured] {} datagrams in {:.1f} s ({:.0f}/s) across {} reloads: {} received, {} lost "
        "(of which {} because the receiving VM's ring was full); reload (SIGHUP to verdict) min "
        "{:.1f} ms, median {:.1f} ms, max {:.1f} ms\n",
        sent, seconds, sent / seconds, reload_ms.size(), received, sent - received, ring_full,
        reload_ms.front(), reload_ms[reload_ms.size() / 2], reload_ms.back());
    EXPECT_GT(sent, 1000u) << "the stream was too thin to show anything";
    EXPECT_EQ(received + ring_full, sent) << "packets lost in calyx during reloads\n" << report->text;
    EXPECT_EQ(report->all_drops("app-1"), ring_full) << report->text;
    EXPECT_EQ(report->all_drops("web-1"), 0u) << report->text;
}

}  // namespace
}  // namespace calyx::test

int main(int argc, char** argv) {
    return calyx::test::run_integration_tests(argc, argv);
}
