// A site of two hosts on byte buffers, seen from compute-1: instances of compute-2 reached by
// imported routes (multipath by flow), the strict reverse-path check of site sources on the
// uplink, security groups split between the hosts, network kinds across them, and the host's
// own stack behind its tap.
#include <fmt/format.h>

#include <map>
#include <set>

#include "calyx/headers.hpp"
#include "cp/control_commands.hpp"
#include "cp/site_routes.hpp"
#include "dp/host.hpp"
#include "dp/neighbor.hpp"
#include "uplink_fixture.hpp"

namespace calyx::test {
namespace {

constexpr uint8_t kSyn = TcpHdr::kSyn, kAck = TcpHdr::kAck;

const Ipv4Addr kHost2 = Ipv4Addr::from_octets(198, 51, 100, 12);  // compute-2's uplink address
const Ipv4Addr kHost3 = Ipv4Addr::from_octets(198, 51, 100, 13);
const MacAddr kHost2Mac{{0x02, 0x00, 0x00, 0x00, 0x00, 0x12}};
const MacAddr kHost3Mac{{0x02, 0x00, 0x00, 0x00, 0x00, 0x13}};
const Ipv4Addr kDb2 = Ipv4Addr::from_octets(10, 20, 0, 11);   // private, on compute-2
const Ipv4Addr kApp2 = Ipv4Addr::from_octets(10, 10, 0, 6);   // nat, on compute-2
const Ipv4Addr kWeb2 = Ipv4Addr::from_octets(203, 0, 113, 20);  // public, on compute-2

// compute-1's file: the seed's three instances here, three more on compute-2. Group db allows
// tcp/5432 between its members, on whichever host; app-1 may only go out (no site rule).
std::string site_yaml() {
    return R"(
host: compute-1
dataplane:
  conntrack: {capacity: 4096}
uplink:
  port: {type: tap, name: calyx-up}
  address: 198.51.100.10/24
  gateway: 198.51.100.1
host_interface: {name: calyx0}
routing: {export_table: 100, import_table: 101}
security_groups:
  - name: db
    rules:
      - {direction: ingress, protocol: tcp, ports: 5432, remote_group: db}
      - {direction: egress, protocol: tcp, ports: 5432, remote_group: db}
  - name: out
    rules:
      - {direction: egress, protocol: any, remote: 0.0.0.0/0}
networks:
  - {name: public, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1}
  - {name: nat, kind: nat, cidr: 10.10.0.0/24, gateway: 10.10.0.1}
  - {name: private, kind: private, cidr: 10.20.0.0/24, gateway: 10.20.0.1}
instances:
  - {name: web-1, network: public, mac: "52:54:00:00:01:01", ipv4: 203.0.113.10, security_groups: [out],
     port: {type: vhost-user, socket: /tmp/calyx-unit/web-1.sock}}
  - {name: app-1, network: nat, mac: "52:54:00:00:02:01", ipv4: 10.10.0.5, security_groups: [out, db],
     port: {type: vhost-user, socket: /tmp/calyx-unit/app-1.sock}}
  - {name: db-1, network: private, mac: "52:54:00:00:03:01", ipv4: 10.20.0.7, security_groups: [db],
     port: {type: vhost-user, socket: /tmp/calyx-unit/db-1.sock}}
  - {name: db-2, host: compute-2, network: private, ipv4: 10.20.0.11, security_groups: [db]}
  - {name: app-2, host: compute-2, network: nat, ipv4: 10.10.0.6, security_groups: [db]}
  - {name: web-2, host: compute-2, network: public, ipv4: 203.0.113.20}
)";
}

KernelRoute bird_route(Ipv4Prefix prefix, std::vector<Ipv4Addr> via, uint32_t metric = 32) {
    KernelRoute r;
    r.prefix = prefix;
    r.table = 101;
    r.protocol = 12;
    r.type = KernelRoute::kUnicast;
    r.priority = metric;
    r.gateways = std::move(via);
    return r;
}

class Site : public GatewayTest {
protected:
    void SetUp() override {
        import({bird_route({kDb2, 32}, {kHost2}), bird_route({kApp2, 32}, {kHost2}),
                bird_route({kWeb2, 32}, {kHost2})});
        ASSERT_TRUE(neighbors_.learn(kUpstream, kUpstreamMac, ctx_.now_ns, true));
        ASSERT_TRUE(neighbors_.learn(kHost2, kHost2Mac, ctx_.now_ns, true));
    }
    // BIRD wrote `table` into the import table: what calyx accepts, in a new snapshot.
    void import(const std::vector<KernelRoute>& table) {
        auto cfg = config::parse_config(site_yaml(), "compute-1.yaml");
        ASSERT_TRUE(cfg.has_value()) << cfg.error().front().to_string();
        const cp::ImportedRoutes checked = cp::check_imported(*cfg, table);
        ASSERT_TRUE(checked.rejected.empty()) << checked.rejected.front();
        site_routes_ = checked.accepted;
        load(site_yaml());
    }

    TestFrame& frame(std::vector<uint8_t> bytes) {
        frames_.push_back(std::make_unique<TestFrame>(std::move(bytes)));
        return *frames_.back();
    }
    dp::PacketMeta tcp_from(const Inside& from, Ipv4Addr to, uint16_t sport, uint16_t dport, uint8_t flags,
                            TestFrame** out = nullptr) {
        TestFrame& f = frame(FrameBuilder()
                                 .eth(from.mac, kGatewayMac)
                                 .ipv4(from.ip, to, ipproto::kTcp)
                                 .tcp(sport, dport, flags, 1000, flags & kAck ? 5001 : 0)
                                 .build());
        if (out) *out = &f;
        return run(f, from.port);
    }
    // From the uplink, sent by the neighbour with MAC `via`.
    dp::PacketMeta tcp_in(MacAddr via, Ipv4Addr from, Ipv4Addr to, uint16_t sport, uint16_t dport, uint8_t flags,
                          TestFrame** out = nullptr) {
        TestFrame& f = frame(FrameBuilder()
                                 .eth(via, kUplinkMac)
                                 .ipv4(from, to, ipproto::kTcp)
                                 .tcp(sport, dport, flags, 5000, flags & kAck ? 1001 : 0)
                                 .build());
        if (out) *out = &f;
        return run(f, kUplinkPort);
    }
    static void expect_drop(const dp::PacketMeta& m, DropReason r, const std::string& what) {
        EXPECT_EQ(m.verdict, dp::Verdict::drop) << what;
        EXPECT_EQ(m.reason, r) << what << ": got " << drop_reason_info(m.reason).name;
    }
    static void expect_to_host2(const dp::PacketMeta& m, TestFrame& f, Ipv4Addr src, const std::string& what) {
        EXPECT_EQ(m.verdict, dp::Verdict::forward) << what << ": " << drop_reason_info(m.reason).name;
        EXPECT_EQ(m.out_port, kUplinkPort) << what;
        EXPECT_EQ(f.at<EtherHdr>(0)->dst, kHost2Mac) << what << ": to compute-2's MAC";
        EXPECT_EQ(f.at<EtherHdr>(0)->src, kUplinkMac) << what;
        EXPECT_EQ(Ipv4Addr::from_be(f.at<Ipv4Hdr>(kL3)->src), src) << what << ": the source arrives unchanged";
        EXPECT_EQ(m.nat, dp::NatAction::none) << what << ": never masqueraded inside the site";
    }

    std::vector<std::unique_ptr<TestFrame>> frames_;
};

// ---- between hosts ----

TEST_F(Site, AnInstanceReachesAnotherHostsInstanceUnchangedOnlyItsEgressRuleCheckedHere) {
    TestFrame* f = nullptr;
    const auto m = tcp_from(kDb, kDb2, 40000, 5432, kSyn, &f);
    expect_to_host2(m, *f, kDbIp, "db-1 -> db-2 on compute-2");
    EXPECT_EQ(f->at<Ipv4Hdr>(kL3)->ttl, 63);
    // db-1's egress rules have nothing for tcp/22: refused here, on the source's host.
    expect_drop(tcp_from(kDb, kDb2, 40001, 22, kSyn), DropReason::sg_no_egress_rule, "db-1 -> db-2:22");
    // web-2 has no groups at all: its ingress is compute-2's business, web-1's egress allows.
    {
        const auto sent = tcp_from(kWeb, kWeb2, 40002, 22, kSyn, &f);
        expect_to_host2(sent, *f, kWebIp, "web-1 -> web-2");
    }
}

TEST_F(Site, ANatInstanceIsNeverMasqueradedInsideTheSite) {
    TestFrame* f = nullptr;
    {
        const auto sent = tcp_from(kApp, kDb2, 40000, 5432, kSyn, &f);
        expect_to_host2(sent, *f, kAppIp, "app-1 (nat) -> db-2");
    }
    {
        const auto sent = tcp_from(kApp, kApp2, 40001, 5432, kSyn, &f);
        expect_to_host2(sent, *f, kAppIp, "app-1 (nat) -> app-2 (nat)");
    }
    // Leaving the site, it still is.
    const auto out = tcp_from(kApp, kServer, 40002, 443, kSyn, &f);
    EXPECT_EQ(out.verdict, dp::Verdict::forward);
    EXPECT_EQ(Ipv4Addr::from_be(f->at<Ipv4Hdr>(kL3)->src), kHostAddr);
}

TEST_F(Site, AnotherHostsInstanceReachesOnlyWhatTheDestinationsIngressRulesAllow) {
    TestFrame* f = nullptr;
    auto m = tcp_in(kHost2Mac, kDb2, kDbIp, 41000, 5432, kSyn, &f);
    ASSERT_EQ(m.verdict, dp::Verdict::forward) << drop_reason_info(m.reason).name;
    EXPECT_EQ(m.out_port, kDbPort);
    EXPECT_EQ(Ipv4Addr::from_be(f->at<Ipv4Hdr>(kL3)->src), kDb2) << "the source arrives unchanged";
    // Private from the site is no outside traffic; but db-1 takes only tcp/5432 from group db.
    expect_drop(tcp_in(kHost2Mac, kDb2, kDbIp, 41001, 22, kSyn), DropReason::sg_no_ingress_rule, "db-2 -> db-1:22");
    EXPECT_EQ(drops(kUplinkPort, DropReason::sg_no_ingress_rule), 1u);
    // web-2 is in no group: db-1's remote_group does not cover it.
    expect_drop(tcp_in(kHost2Mac, kWeb2, kDbIp, 41002, 5432, kSyn), DropReason::sg_no_ingress_rule, "web-2 -> db-1");
    // A nat instance opens to the site by its rules, unmasqueraded (nothing unsolicited only
    // from outside the site).
    m = tcp_in(kHost2Mac, kDb2, kAppIp, 41003, 5432, kSyn);
    EXPECT_EQ(m.verdict, dp::Verdict::forward) << drop_reason_info(m.reason).name;
    EXPECT_EQ(m.out_port, kAppPort);
}

TEST_F(Site, RepliesBetweenHostsPassByConnectionTracking) {
    // db-2 opens to db-1 (db-1's ingress allows); db-1's reply needs no egress rule... and the
    // reply comes back in from compute-2 the same way.
    ASSERT_EQ(tcp_in(kHost2Mac, kDb2, kDbIp, 41000, 5432, kSyn).verdict, dp::Verdict::forward);
    TestFrame* f = nullptr;
    {
        const auto sent = tcp_from(kDb, kDb2, 5432, 41000, kSyn | kAck, &f);
        expect_to_host2(sent, *f, kDbIp, "db-1's SYN-ACK");
    }
    EXPECT_EQ(tcp_in(kHost2Mac, kDb2, kDbIp, 41000, 5432, kAck).verdict, dp::Verdict::forward);
}

// ---- the reverse-path check ----

TEST_F(Site, ASiteSourceFromAnyoneButTheHostItIsRoutedViaIsAMartian) {
    // The upstream router (or anyone on the segment) claiming db-2's address.
    expect_drop(tcp_in(kUpstreamMac, kDb2, kDbIp, 41000, 5432, kSyn), DropReason::martian_source,
                "db-2's address from the gateway");
    // compute-2 claiming this host's own instance's address.
    expect_drop(tcp_in(kHost2Mac, kAppIp, kDbIp, 41002, 5432, kSyn), DropReason::martian_source,
                "this host's own instance's address");
    EXPECT_EQ(drops(kUplinkPort, DropReason::martian_source), 2u);
    // The same packet from compute-2 passes.
    EXPECT_EQ(tcp_in(kHost2Mac, kDb2, kDbIp, 41003, 5432, kSyn).verdict, dp::Verdict::forward);
}

TEST_F(Site, ASiteSourceNoRouteLeadsToIsDroppedAsUnroutedNotAsAMartian) {
    // An address of a site network that no instance here has and no host announced: from
    // compute-2, or from anyone. Dropped all the same, under its own reason: the operator's
    // question is "has BIRD learnt it?", not "who spoofs my addresses?".
    for (const MacAddr& from : {kHost2Mac, kUpstreamMac})
        expect_drop(tcp_in(from, Ipv4Addr::from_octets(10, 20, 0, 99), kDbIp, 41001, 5432, kSyn),
                    DropReason::site_source_unrouted, "an unrouted site address");
    // db-2 before its route arrives (or after it is withdrawn): the same.
    import({});
    expect_drop(tcp_in(kHost2Mac, kDb2, kDbIp, 41004, 5432, kSyn), DropReason::site_source_unrouted,
                "db-2 without its route");
    EXPECT_EQ(drops(kUplinkPort, DropReason::site_source_unrouted), 3u);
    EXPECT_EQ(drops(kUplinkPort, DropReason::martian_source), 0u);
}

TEST_F(Site, ASiteSourceWhoseNextHopIsUnresolvedIsAMartianAndTheNextHopIsWanted) {
    import({bird_route({kDb2, 32}, {kHost3})});
    expect_drop(tcp_in(kHost3Mac, kDb2, kDbIp, 41000, 5432, kSyn), DropReason::martian_source, "unresolved");
    bool wanted = false;
    for (const auto& e : neighbors_.entries()) wanted |= e.ip == kHost3;
    EXPECT_TRUE(wanted) << "calyx asks for compute-3's MAC";
    ASSERT_TRUE(neighbors_.learn(kHost3, kHost3Mac, ctx_.now_ns, false));
    EXPECT_EQ(tcp_in(kHost3Mac, kDb2, kDbIp, 41001, 5432, kSyn).verdict, dp::Verdict::forward);
}

TEST_F(Site, NothingFromTheUplinkIsRoutedBackToAnotherHost) {
    expect_drop(tcp_in(kUpstreamMac, kServer, kDb2, 41000, 5432, kSyn), DropReason::uplink_transit,
                "the Internet to db-2 through compute-1");
}

// ---- multipath and the FIB ----

TEST_F(Site, MultipathSpreadsFlowsAndKeepsEachFlowOnItsPath) {
    import({bird_route({kDb2, 32}, {kHost2, kHost3})});
    ASSERT_TRUE(neighbors_.learn(kHost3, kHost3Mac, ctx_.now_ns, true));
    std::map<uint16_t, MacAddr> path;
    std::set<MacAddr> used;
    for (uint16_t port = 40000; port < 40064; ++port) {
        TestFrame* f = nullptr;
        ASSERT_EQ(tcp_from(kDb, kDb2, port, 5432, kSyn, &f).verdict, dp::Verdict::forward);
        path[port] = f->at<EtherHdr>(0)->dst;
        used.insert(path[port]);
    }
    EXPECT_EQ(used, (std::set<MacAddr>{kHost2Mac, kHost3Mac})) << "both next hops carry flows";
    for (uint16_t port = 40000; port < 40064; ++port) {
        TestFrame* f = nullptr;
        // The SYN again (a retransmission): the same flow, the same path.
        ASSERT_EQ(tcp_from(kDb, kDb2, port, 5432, kSyn, &f).verdict, dp::Verdict::forward);
        EXPECT_EQ(f->at<EtherHdr>(0)->dst, path[port]) << "flow from port " << port << " changed path";
    }
    // Replies from either next hop pass the reverse-path check.
    EXPECT_EQ(tcp_in(kHost3Mac, kDb2, kDbIp, 41000, 5432, kSyn).verdict, dp::Verdict::forward);
}

TEST_F(Site, ThisHostsOwnAddressesWinOverImportedRoutesANetworkRouteMayBeReplaced) {
    // A stale announcement of db-1 (moved here) and the private network via compute-2.
    import({bird_route({kDbIp, 32}, {kHost2}), bird_route({Ipv4Addr::from_octets(10, 20, 0, 0), 24}, {kHost2})});
    TestFrame* f = nullptr;
    auto m = tcp_in(kHost2Mac, kDb2, kDbIp, 41000, 5432, kSyn, &f);
    EXPECT_EQ(m.verdict, dp::Verdict::forward) << drop_reason_info(m.reason).name;
    EXPECT_EQ(m.out_port, kDbPort) << "db-1 is here, whatever BIRD says";
    // Unassigned addresses of the network are now compute-2's.
    {
        const auto sent = tcp_from(kApp, Ipv4Addr::from_octets(10, 20, 0, 50), 40000, 5432, kSyn, &f);
        expect_to_host2(sent, *f, kAppIp,
                    "an address of the network on compute-2");
    }
    // The gateway address stays calyx's: ping is answered here.
    TestFrame& ping = frame(FrameBuilder()
                                .eth(kDbMac, kGatewayMac)
                                .ipv4(kDbIp, Ipv4Addr::from_octets(10, 20, 0, 1))
                                .icmp_echo(7, 1)
                                .build());
    EXPECT_EQ(run(ping, kDbPort).verdict, dp::Verdict::reply);
}

// ---- the host's own stack ----

TEST_F(Site, WhatTheHostSendsLeavesByTheUplinkUnchanged) {
    const std::vector<uint8_t> sent = FrameBuilder()
                                          .eth(kUplinkMac, kUpstreamMac)
                                          .ipv4(kHostAddr, Ipv4Addr::from_octets(198, 51, 100, 2), ipproto::kTcp)
                                          .tcp(50000, 179, kSyn)
                                          .build();
    TestFrame& f = frame(sent);
    const auto m = run(f, kHostPort);
    EXPECT_EQ(m.verdict, dp::Verdict::forward);
    EXPECT_EQ(m.out_port, kUplinkPort);
    EXPECT_EQ(f.bytes(), sent) << "not routed: no TTL, no MAC rewrite";
    // A frame that is not the host's own (another MAC on the tap) goes nowhere.
    TestFrame& other = frame(FrameBuilder()
                                 .eth(kDbMac, kUpstreamMac)
                                 .ipv4(kDbIp, kServer, ipproto::kTcp)
                                 .tcp(50000, 443, kSyn)
                                 .build());
    expect_drop(run(other, kHostPort), DropReason::src_mac_spoofed, "a stranger on the host tap");
}

TEST_F(Site, TheHostsArpIsAnsweredFromCalyxsCache) {
    TestFrame& ask = frame(FrameBuilder()
                               .eth(kUplinkMac, MacAddr::broadcast(), ethertype::kArp)
                               .arp(1, kUplinkMac, kHostAddr, MacAddr{}, kUpstream)
                               .build());
    const auto m = run(ask, kHostPort);
    ASSERT_EQ(m.verdict, dp::Verdict::reply) << drop_reason_info(m.reason).name;
    const auto* arp = ask.at<ArpHdr>(kL3);
    EXPECT_EQ(arp->oper.host(), 2);
    EXPECT_EQ(arp->sha, kUpstreamMac);
    EXPECT_EQ(Ipv4Addr::from_be(arp->spa), kUpstream);
    EXPECT_EQ(ask.at<EtherHdr>(0)->dst, kUplinkMac);
    // A neighbour calyx does not know yet: wanted, the kernel asks again.
    const Ipv4Addr rr = Ipv4Addr::from_octets(198, 51, 100, 2);
    TestFrame& unknown = frame(FrameBuilder()
                                   .eth(kUplinkMac, MacAddr::broadcast(), ethertype::kArp)
                                   .arp(1, kUplinkMac, kHostAddr, MacAddr{}, rr)
                                   .build());
    expect_drop(run(unknown, kHostPort), DropReason::neighbor_unresolved, "unknown neighbour");
    bool wanted = false;
    for (const auto& e : neighbors_.entries()) wanted |= e.ip == rr;
    EXPECT_TRUE(wanted);
    // Off the subnet: no answer.
    TestFrame& off = frame(FrameBuilder()
                               .eth(kUplinkMac, MacAddr::broadcast(), ethertype::kArp)
                               .arp(1, kUplinkMac, kHostAddr, MacAddr{}, kServer)
                               .build());
    expect_drop(run(off, kHostPort), DropReason::arp_not_for_us, "off the subnet");
}

// What the kernel sends on the host tap that is not a well-formed request for a neighbour's
// address is dropped with its reason and answered by nothing: no reply is built from it (its
// bytes stay as they came) and no neighbour is wanted for it.
TEST_F(Site, TheHostsMalformedOrNonRequestArpIsNeitherAnsweredNorWantsANeighbour) {
    const Ipv4Addr rr = Ipv4Addr::from_octets(198, 51, 100, 2);
    const auto ask_for = [&](Ipv4Addr target, uint16_t oper = 1) {
        return FrameBuilder()
            .eth(kUplinkMac, MacAddr::broadcast(), ethertype::kArp)
            .arp(oper, kUplinkMac, kHostAddr, MacAddr{}, target)
            .build();
    };
    struct Case {
        const char* name;
        std::vector<uint8_t> bytes;
        DropReason reason;
    };
    std::vector<Case> cases;
    const auto field = [&](const char* name, size_t offset, uint8_t value) {
        auto bytes = ask_for(rr);
        bytes[sizeof(EtherHdr) + offset] = value;
        cases.push_back({name, bytes, DropReason::arp_malformed});
    };
    field("hardware type 6", 1, 6);
    field("protocol type IPv6", 2, 0x86);
    field("hardware address length 8", 4, 8);
    field("protocol address length 16", 5, 16);
    auto truncated = ask_for(rr);
    truncated.resize(sizeof(EtherHdr) + sizeof(ArpHdr) - 1);
    cases.push_back({"truncated", truncated, DropReason::arp_malformed});
    cases.push_back({"a reply", ask_for(rr, 2), DropReason::arp_not_request});
    auto announcement = FrameBuilder()
                            .eth(kUplinkMac, MacAddr::broadcast(), ethertype::kArp)
                            .arp(1, kUplinkMac, rr, MacAddr{}, rr)
                            .build();
    cases.push_back({"an announcement", announcement, DropReason::arp_gratuitous});
    for (const Case& c : cases) {
        TestFrame& f = frame(c.bytes);
        const std::vector<uint8_t> before = f.bytes();
        expect_drop(run(f, kHostPort), c.reason, c.name);
        EXPECT_EQ(f.bytes(), before) << c.name << ": rewritten into a reply";
    }
    for (const auto& e : neighbors_.entries()) EXPECT_NE(e.ip, rr) << "wanted";
}

// The kernel's ARP for an address no neighbour can have (the uplink subnet's own network and
// broadcast addresses, the host's own address in a duplicate address probe) is not answered
// and wants nothing resolved.
TEST_F(Site, TheHostsArpForTheSubnetsOwnAddressesIsNotAnswered) {
    for (const Ipv4Addr target : {Ipv4Addr::from_octets(198, 51, 100, 0), Ipv4Addr::from_octets(198, 51, 100, 255), kHostAddr}) {
        const Ipv4Addr sender = target == kHostAddr ? Ipv4Addr{} : kHostAddr;
        TestFrame& ask = frame(FrameBuilder()
                                   .eth(kUplinkMac, MacAddr::broadcast(), ethertype::kArp)
                                   .arp(1, kUplinkMac, sender, MacAddr{}, target)
                                   .build());
        expect_drop(run(ask, kHostPort), DropReason::arp_not_for_us, target.to_string());
        for (const auto& e : neighbors_.entries()) EXPECT_NE(e.ip, target) << "wanted";
    }
}

// The host stage reads only the batch's `count` frames: a slot beyond it (a frame left over
// from a previous burst) is neither judged nor counted.
TEST_F(Site, TheHostStageLeavesSlotsBeyondTheCountAlone) {
    TestFrame& own = frame(FrameBuilder().eth(kUplinkMac, kUpstreamMac).ipv4(kHostAddr, kServer, ipproto::kTcp).tcp(50000, 443, kSyn).build());
    TestFrame& stale = frame(FrameBuilder().eth(kDbMac, kUpstreamMac).ipv4(kDbIp, kServer, ipproto::kTcp).tcp(50000, 443, kSyn).build());
    dp::Batch batch;
    batch.count = 1;
    batch.frames[0] = own.frame;
    batch.meta[0].in_port = kHostPort;
    batch.frames[1] = stale.frame;  // a stranger's MAC: the stage would drop it
    batch.meta[1].in_port = kHostPort;
    dp::host_stage(batch, *snap_, ctx_);
    EXPECT_EQ(batch.meta[0].verdict, dp::Verdict::forward);
    EXPECT_EQ(batch.meta[1].verdict, dp::Verdict::pending);
    EXPECT_EQ(total_drops(kHostPort), 0u);
}

TEST_F(Site, WhatComesForTheHostAddressReachesTheHostUnlessItIsAMasqueradeReply) {
    // BGP from a route reflector, and a ping: the host's stack answers them, not calyx.
    TestFrame* f = nullptr;
    auto m = tcp_in(kUpstreamMac, Ipv4Addr::from_octets(198, 51, 100, 2), kHostAddr, 179, 50000, kSyn | kAck, &f);
    EXPECT_EQ(m.verdict, dp::Verdict::forward);
    EXPECT_EQ(m.out_port, kHostPort);
    EXPECT_EQ(f->at<Ipv4Hdr>(kL3)->ttl, 64) << "delivered, not routed";
    TestFrame& ping = frame(FrameBuilder().eth(kUpstreamMac, kUplinkMac).ipv4(kServer, kHostAddr).icmp_echo(9, 1).build());
    m = run(ping, kUplinkPort);
    EXPECT_EQ(m.verdict, dp::Verdict::forward);
    EXPECT_EQ(m.out_port, kHostPort);
    // app-1's masqueraded connection: its reply is app-1's.
    TestFrame* syn = nullptr;
    ASSERT_EQ(tcp_from(kApp, kServer, 42000, 443, kSyn, &syn).verdict, dp::Verdict::forward);
    const uint16_t external = syn->at<TcpHdr>(kL3 + sizeof(Ipv4Hdr))->src_port.host();
    m = tcp_in(kUpstreamMac, kServer, kHostAddr, 443, external, kSyn | kAck);
    EXPECT_EQ(m.verdict, dp::Verdict::forward);
    EXPECT_EQ(m.out_port, kAppPort);
}

// ---- explain across hosts ----

TEST_F(Site, ExplainNamesAnotherHostsInstanceAndSaysWhichSideItChecked) {
    const auto explain = [&](std::string from, std::string to, uint16_t port) {
        cp::ExplainQuery q{from, to, ipproto::kTcp, port};
        return cp::explain_result(config_, *snap_, q);
    };
    auto r = explain("db-1", "db-2", 5432);
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_TRUE((*r)["allowed"].get<bool>()) << r->dump(2);
    EXPECT_EQ((*r)["to"]["host"], "compute-2");
    EXPECT_EQ((*r)["explanation"][0], "allowed: db-1 (10.20.0.7 in private, a private network) -> db-2 (10.20.0.11 "
                                      "in private, a private network, on compute-2) tcp/5432");
    EXPECT_EQ((*r)["explanation"][1],
              "db-2 on compute-2: its ingress rules are checked there, db-1's egress rules here");
    // From db-2, by its address: only db-1's ingress rules count here.
    r = explain("10.20.0.11", "db-1", 22);
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_FALSE((*r)["allowed"].get<bool>());
    EXPECT_EQ((*r)["reason"], "sg_no_ingress_rule");
    // Without a route from compute-2, nothing passes: calyx says why.
    import({});
    r = explain("db-1", "db-2", 5432);
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ((*r)["reason"], "no_route");
    EXPECT_EQ((*r)["explanation"][1], "db-2 runs on compute-2, but calyx has imported no route to 10.20.0.11 from "
                                      "it (import table 101: is BIRD up there and here?)");
    // ... in either direction: from db-2 it is the data path's site_source_unrouted.
    r = explain("db-2", "db-1", 5432);
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ((*r)["reason"], "site_source_unrouted");
}

TEST_F(Site, RoutesShowTheImportedRoutesWithTheirNextHopsAndOrigin) {
    using cp::Json;
    import({bird_route({kDb2, 32}, {kHost2}), bird_route({kWeb2, 32}, {kHost2, kHost3})});
    const Json routes = cp::routes_result(*snap_);
    std::map<std::string, Json> by_prefix;
    for (const auto& r : routes["routes"]) by_prefix[r["prefix"]] = r;
    const Json& db2 = by_prefix.at("10.20.0.11/32");
    EXPECT_EQ(db2["network"], "private");
    EXPECT_EQ(db2["next_hop"]["kind"], "site");
    EXPECT_EQ(db2["next_hop"]["next_hops"], Json::array({"198.51.100.12"}));
    EXPECT_EQ(db2["origin"], Json({{"table", 101}, {"protocol", "bird"}}));
    const Json& web2 = by_prefix.at("203.0.113.20/32");
    EXPECT_EQ(web2["next_hop"]["next_hops"], Json::array({"198.51.100.12", "198.51.100.13"})) << web2.dump();
    EXPECT_EQ(web2["origin"]["table"], 101);
    // This host's own routes and the default are calyx's; app-2 is no longer imported.
    EXPECT_EQ(by_prefix.at("10.20.0.7/32")["origin"], Json({{"table", nullptr}, {"protocol", "calyx"}}));
    EXPECT_EQ(by_prefix.at("0.0.0.0/0")["origin"]["protocol"], "calyx");
    EXPECT_FALSE(by_prefix.contains("10.10.0.6/32"));
}

// ---- what the import table may hold ----

TEST(SiteRoutes, OnlyUnicastRoutesInsideTheSitesNetworksViaUplinkHostsAreAccepted) {
    auto cfg = config::parse_config(site_yaml(), "compute-1.yaml");
    ASSERT_TRUE(cfg.has_value());
    KernelRoute blackhole = bird_route({kDb2, 32}, {});
    blackhole.type = KernelRoute::kBlackhole;
    const std::vector<KernelRoute> table{
        bird_route({kDb2, 32}, {kHost2}, 32),
        bird_route({kDb2, 32}, {kHost3}, 10),  // the lower metric wins
        bird_route({Ipv4Addr::from_octets(192, 0, 2, 0), 24}, {kHost2}),
        bird_route({kApp2, 32}, {Ipv4Addr::from_octets(192, 0, 2, 1)}),
        bird_route({kWeb2, 32}, {kHostAddr}),
        bird_route({kWeb2, 32}, {}),
        blackhole,
        bird_route({Ipv4Addr::from_octets(10, 20, 0, 0), 24}, {kHost3, kHost2, kHost3}),
    };
    const cp::ImportedRoutes r = cp::check_imported(*cfg, table);
    ASSERT_EQ(r.accepted.size(), 2u);
    EXPECT_EQ(r.accepted[0], (cp::SiteRoute{{Ipv4Addr::from_octets(10, 20, 0, 0), 24}, {kHost2, kHost3}, 12}))
        << "next hops sorted, without repeats";
    EXPECT_EQ(r.accepted[1], (cp::SiteRoute{{kDb2, 32}, {kHost3}, 12}));
    EXPECT_EQ(r.rejected,
              (std::vector<std::string>{
                  "192.0.2.0/24 via 198.51.100.12 proto 12 table 101 metric 32: outside the site's networks: "
                  "calyx takes routes only for the site's instances (the rest of the world is via the uplink's "
                  "gateway)",
                  "10.10.0.6/32 via 192.0.2.1 proto 12 table 101 metric 32: next hop 192.0.2.1 is not on the "
                  "uplink subnet 198.51.100.0/24",
                  "203.0.113.20/32 via 198.51.100.10 proto 12 table 101 metric 32: next hop 198.51.100.10 is "
                  "this host itself",
                  "203.0.113.20/32 proto 12 table 101 metric 32: no gateway: the next hop must be a host on the "
                  "uplink subnet",
                  "blackhole 10.20.0.11/32 proto 12 table 101 metric 32: not a unicast route: calyx routes only "
                  "via hosts of the site"}));
}

TEST(SiteRoutes, ExportKeepsOneBlackholePerLocalInstanceAndTouchesNoOneElsesRoutes) {
    auto cfg = config::parse_config(site_yaml(), "compute-1.yaml");
    ASSERT_TRUE(cfg.has_value());
    const auto wanted = cp::exported_routes(*cfg);
    ASSERT_EQ(wanted.size(), 3u) << "web-1, app-1, db-1; not compute-2's";
    for (const auto& r : wanted) {
        EXPECT_EQ(r.prefix.length, 32);
        EXPECT_EQ(r.table, 100u);
        EXPECT_EQ(r.type, KernelRoute::kBlackhole);
        EXPECT_EQ(r.protocol, cp::kRouteProtocol);
    }
    EXPECT_EQ(wanted[2].prefix.addr, kDbIp);
    // In the table: web-1 already, a stale one of calyx's (db-0 left), and someone else's.
    KernelRoute stale = wanted[0];
    stale.prefix.addr = Ipv4Addr::from_octets(10, 20, 0, 3);
    KernelRoute foreign = wanted[0];
    foreign.prefix.addr = Ipv4Addr::from_octets(10, 20, 0, 4);
    foreign.protocol = 4;  // static: an operator's
    const cp::ExportPlan plan = cp::plan_export(wanted, {wanted[0], stale, foreign});
    EXPECT_EQ(plan.add, (std::vector<KernelRoute>{wanted[1], wanted[2]}));
    EXPECT_EQ(plan.remove, (std::vector<KernelRoute>{stale}));
    EXPECT_EQ(cp::plan_export({}, {wanted[0], foreign}).remove, (std::vector<KernelRoute>{wanted[0]}))
        << "withdrawing removes calyx's own only";
}

}  // namespace
}  // namespace calyx::test
