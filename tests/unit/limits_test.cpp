// One tenant must not deny service to the others (issue 13): per-instance limits on
// connections, new connections per second and masquerade ports, connections created only for
// packets that leave, a full table that evicts unanswered connections of the biggest holder,
// and keyed hashes. Through the whole pipeline on byte buffers, with injected time.
#include <fmt/format.h>
#include <rte_lcore.h>
#include <rte_memory.h>

#include <atomic>
#include <chrono>
#include <map>
#include <thread>

#include "calyx/headers.hpp"
#include "dp/conntrack.hpp"
#include "dp/keyed_hash.hpp"
#include "dp/limits.hpp"
#include "dp/nat.hpp"
#include "dp/neighbor.hpp"
#include "uplink_fixture.hpp"

namespace calyx::test {
namespace {

constexpr uint8_t kSyn = TcpHdr::kSyn, kAck = TcpHdr::kAck;
constexpr uint64_t kSecond = 1'000'000'000;
constexpr uint64_t kStart = 1'000'000'000;  // the fixture's clock at start

// A second nat instance on app-1's network (slot 2, where the seed's db-1 was): the victim.
const MacAddr kApp2Mac{{0x52, 0x54, 0x00, 0x00, 0x02, 0x02}};
const Ipv4Addr kApp2Ip = Ipv4Addr::from_octets(10, 10, 0, 6);
const Inside kApp2{kApp2Mac, kApp2Ip, 2};

// web-1 takes 443 from anywhere; app-1 and app-2 share the nat network. `limits` is the
// top-level section (YAML flow mapping, empty: none), `app1` and `web1` their own.
std::string limits_site(const std::string& limits = "", const std::string& app1 = "", const std::string& web1 = "",
                        uint32_t capacity = 4096) {
    const auto own = [](const std::string& l) { return l.empty() ? std::string() : ", limits: " + l; };
    return fmt::format(R"(
dataplane:
  conntrack: {{capacity: {capacity}}}
{limits}
uplink:
  port: {{type: tap, name: calyx-up}}
  address: 198.51.100.10/24
  gateway: 198.51.100.1
security_groups:
  - name: public-sg
    rules:
      - {{direction: egress, protocol: any, remote: 0.0.0.0/0}}
      - {{direction: ingress, protocol: tcp, ports: 443, remote: 0.0.0.0/0}}
  - name: everywhere
    rules:
      - {{direction: egress, protocol: any, remote: 0.0.0.0/0}}
networks:
  - {{name: public, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1}}
  - {{name: nat, kind: nat, cidr: 10.10.0.0/24, gateway: 10.10.0.1, mtu: 1400}}
instances:
  - {{name: web-1, network: public, mac: "52:54:00:00:01:01", ipv4: 203.0.113.10, security_groups: [public-sg],
     port: {{type: vhost-user, socket: /tmp/calyx-unit/web-1.sock}}{web1}}}
  - {{name: app-1, network: nat, mac: "52:54:00:00:02:01", ipv4: 10.10.0.5, security_groups: [everywhere],
     port: {{type: vhost-user, socket: /tmp/calyx-unit/app-1.sock}}{app1}}}
  - {{name: app-2, network: nat, mac: "52:54:00:00:02:02", ipv4: 10.10.0.6, security_groups: [everywhere],
     port: {{type: vhost-user, socket: /tmp/calyx-unit/app-2.sock}}}}
)",
                       fmt::arg("capacity", capacity), fmt::arg("limits", limits.empty() ? "" : "limits: " + limits),
                       fmt::arg("web1", own(web1)), fmt::arg("app1", own(app1)));
}

class Limits : public GatewayTest {
protected:
    void SetUp() override {}

    void start(const std::string& yaml, bool gateway_resolved = true) {
        ASSERT_NO_FATAL_FAILURE(load(yaml));
        if (gateway_resolved) {
            ASSERT_TRUE(neighbors_.learn(kUpstream, kUpstreamMac, ctx_.now_ns, true));
        }
    }

    dp::PacketMeta syn_out(const Inside& from, uint16_t sport, Ipv4Addr to = kServer, uint16_t dport = 443,
                           uint8_t ttl = 64, uint8_t flags = kSyn, uint32_t seq = 1000, uint32_t ack = 0) {
        TestFrame f(FrameBuilder()
                        .eth(from.mac, kGatewayMac)
                        .ipv4(from.ip, to, ipproto::kTcp, ttl)
                        .tcp(sport, dport, flags, seq, ack)
                        .build());
        const auto m = run(f, from.port);
        if (m.verdict == dp::Verdict::forward)
            last_sport_ = f.at<TcpHdr>(kL3 + sizeof(Ipv4Hdr))->src_port.host();
        return m;
    }
    dp::PacketMeta tcp_in(Ipv4Addr from, uint16_t sport, Ipv4Addr to, uint16_t dport, uint8_t flags, uint32_t seq = 5000,
                          uint32_t ack = 0) {
        TestFrame f(FrameBuilder()
                        .eth(kUpstreamMac, kUplinkMac)
                        .ipv4(from, to, ipproto::kTcp)
                        .tcp(sport, dport, flags, seq, ack)
                        .build());
        return run(f, kUplinkPort);
    }
    // web-1 opens a connection to the server and the handshake completes: an answered one.
    void establish_from_web(uint16_t sport, uint16_t dport = 443) {
        ASSERT_EQ(syn_out(kWeb, sport, kServer, dport).verdict, dp::Verdict::forward);
        ASSERT_EQ(tcp_in(kServer, dport, kWebIp, sport, kSyn | kAck, 5000, 1001).verdict, dp::Verdict::forward);
        ASSERT_EQ(syn_out(kWeb, sport, kServer, dport, 64, kAck, 1001, 5001).verdict, dp::Verdict::forward);
    }
    static std::vector<uint8_t> syn_frame(const Inside& from, uint16_t sport, Ipv4Addr to = kServer, uint16_t dport = 443) {
        return FrameBuilder().eth(from.mac, kGatewayMac).ipv4(from.ip, to, ipproto::kTcp).tcp(sport, dport, kSyn, 1000, 0).build();
    }
    // SYNs from `from` to `to`:443, one per source port in `sports`, in one burst from its
    // port (as a queue delivers them): a repeated port is a retransmitted SYN.
    std::vector<dp::PacketMeta> syns_in_one_burst(const Inside& from, const std::vector<uint16_t>& sports,
                                                  Ipv4Addr to = kServer) {
        std::vector<std::vector<uint8_t>> frames;
        for (uint16_t sport : sports) frames.push_back(syn_frame(from, sport, to));
        return in_one_burst(frames, from.port);
    }
    std::vector<dp::PacketMeta> in_one_burst(const std::vector<std::vector<uint8_t>>& frames, uint16_t port) {
        std::vector<std::unique_ptr<TestFrame>> fs;
        dp::Batch batch;
        batch.count = static_cast<uint16_t>(frames.size());
        for (size_t i = 0; i < frames.size(); ++i) {
            fs.push_back(std::make_unique<TestFrame>(frames[i]));
            batch.frames[i] = fs.back()->frame;
            batch.admit(static_cast<uint16_t>(i), port);
        }
        dp::run_pipeline(batch, *snap_, ctx_);
        return {batch.meta, batch.meta + frames.size()};
    }
    // What housekeeping does every 100 ms: expire, and free the slots evicted since.
    void housekeeping() { conntrack_->sweep(ctx_.now_ns, conntrack_->slots(), nullptr); }
    // A fresh start: new table, NAT allocator, counters, fragment verdicts and clock (a test
    // comparing two runs of one scenario).
    void restart(const std::string& yaml) {
        snap_.reset();
        conntrack_.reset();
        nat_.reset();
        *counters_ = dp::WorkerCounters{};
        *fragments_ = dp::FragmentVerdicts{};
        ctx_.now_ns = kStart;
        ASSERT_NO_FATAL_FAILURE(start(yaml));
    }
    // The key of `from`'s TCP connection from `sport` to the server's `dport`.
    dp::CtKey key_to_server(const Inside& from, uint16_t sport, uint16_t dport = 443) const {
        const uint16_t zone = zones_.at(from.port == kWebPort ? "public" : "nat");
        return dp::make_ct_key(ipproto::kTcp, {zone, from.ip, sport}, {0, kServer, dport}).key;
    }
    bool alive(const dp::CtKey& key) const {
        const int32_t pos = conntrack_->lookup(key);
        return pos >= 0 && !conntrack_->entry(pos).dead();
    }
    // The two buckets a key may live in, as rte_hash 22.11 picks them (conntrack.cpp's
    // insert_evicting reads the same), lower first.
    std::pair<uint32_t, uint32_t> buckets_of(const dp::CtKey& key) const {
        const uint32_t mask = conntrack_->buckets() - 1, hash = conntrack_->hash_of(key);
        const uint32_t primary = hash & mask, alternative = (primary ^ (hash >> 16)) & mask;
        return std::minmax(primary, alternative);
    }
    // `count` endpoints (source port, destination port) of `from`'s connections to the server
    // whose keys live in `buckets`, none of `avoid`.
    std::vector<std::pair<uint16_t, uint16_t>> endpoints_in(std::pair<uint32_t, uint32_t> buckets, const Inside& from,
                                                            size_t count,
                                                            const std::vector<std::pair<uint16_t, uint16_t>>& avoid = {}) {
        std::vector<std::pair<uint16_t, uint16_t>> found;
        for (uint32_t dport = 1000; dport < 65536 && found.size() < count; ++dport)
            for (uint32_t sport = 20000; sport < 60000 && found.size() < count; ++sport) {
                const std::pair<uint16_t, uint16_t> e{static_cast<uint16_t>(sport), static_cast<uint16_t>(dport)};
                if (buckets_of(key_to_server(from, e.first, e.second)) == buckets &&
                    std::find(avoid.begin(), avoid.end(), e) == avoid.end())
                    found.push_back(e);
            }
        return found;
    }

    uint16_t account_of(const std::string& name) const { return slots_.at(name); }  // the fixture's: the slot
    uint32_t connections_of(const std::string& name) const {
        return conntrack_->accounts().connections(account_of(name));
    }
    uint32_t nat_ports_of(const std::string& name) const { return nat_->held(account_of(name)); }
    static void expect_drop(const dp::PacketMeta& m, DropReason r, const std::string& what) {
        EXPECT_EQ(m.verdict, dp::Verdict::drop) << what;
        EXPECT_EQ(m.reason, r) << what << ": got " << drop_reason_info(m.reason).name;
    }

    uint16_t last_sport_ = 0;  // the source port the last forwarded SYN left with
};

// ---- configuration ----

TEST(LimitsConfig, DefaultsForEveryInstanceAndOverridesPerInstance) {
    const auto none = config::parse_config(limits_site(), "site.yaml");
    ASSERT_TRUE(none.has_value()) << none.error().front().to_string();
    for (const auto& inst : none->instances) {
        EXPECT_EQ(inst.limits.connections, 65536u) << inst.name;
        EXPECT_EQ(inst.limits.new_connections_per_second, 50000u) << inst.name;
        EXPECT_EQ(inst.limits.nat_ports, 4096u) << inst.name;
    }
    const auto cfg = config::parse_config(
        limits_site("{connections: 1000, new_connections_per_second: 200}", "{nat_ports: 7}", "{connections: 262144}"),
        "site.yaml");
    ASSERT_TRUE(cfg.has_value()) << cfg.error().front().to_string();
    EXPECT_EQ(cfg->limits, (config::LimitsConfig{1000, 200, 4096}));
    EXPECT_EQ(cfg->find_instance("app-1")->limits, (config::LimitsConfig{1000, 200, 7}));
    EXPECT_EQ(cfg->find_instance("web-1")->limits, (config::LimitsConfig{262144, 200, 4096}));
    EXPECT_EQ(cfg->find_instance("app-2")->limits, (config::LimitsConfig{1000, 200, 4096}));
}

TEST(LimitsConfig, BadLimitsAreErrorsAtTheirPlace) {
    const auto bad = config::parse_config(
        limits_site("{conections: 5, nat_ports: 0}", "{new_connections_per_second: -1}", "[1, 2]"), "site.yaml");
    ASSERT_FALSE(bad.has_value());
    std::string all;
    for (const auto& e : bad.error()) all += e.to_string() + "\n";
    EXPECT_NE(all.find("unknown key 'conections' in limits; did you mean 'connections'?"), std::string::npos) << all;
    EXPECT_NE(all.find("'nat_ports' must be between 1 and 65535, got 0"), std::string::npos) << all;
    EXPECT_NE(all.find("'new_connections_per_second' must be an integer, got '-1'"), std::string::npos) << all;
    EXPECT_NE(all.find("'limits' must be a mapping"), std::string::npos) << all;
    for (const auto& e : bad.error()) EXPECT_GT(e.where.line, 1) << e.to_string();
}

// ---- each limit: only that instance's new connections, its own reason, on its port ----

TEST_F(Limits, ConnectionLimitRefusesOnlyThatInstancesNewConnections) {
    start(limits_site("", "{connections: 5}"));
    for (uint16_t i = 0; i < 5; ++i) ASSERT_EQ(syn_out(kApp, 30000 + i).verdict, dp::Verdict::forward) << i;
    for (uint16_t i = 5; i < 8; ++i) expect_drop(syn_out(kApp, 30000 + i), DropReason::limit_connections, "over its 5");
    EXPECT_EQ(drops(kAppPort, DropReason::limit_connections), 3u);
    EXPECT_EQ(connections_of("app-1"), 5u);
    // Its connections already made go on (a retransmitted SYN is a packet of one of them)...
    EXPECT_EQ(syn_out(kApp, 30000).verdict, dp::Verdict::forward);
    // ...and the others' new connections are untouched.
    for (uint16_t i = 0; i < 8; ++i) EXPECT_EQ(syn_out(kApp2, 30000 + i).verdict, dp::Verdict::forward) << i;
    EXPECT_EQ(syn_out(kWeb, 41000).verdict, dp::Verdict::forward);
    EXPECT_EQ(total_drops(2), 0u);
    EXPECT_EQ(connections_of("app-2"), 8u);

    // Expired and swept, its connections are given back.
    ctx_.now_ns += 121 * kSecond;  // tcp_syn_sent
    housekeeping();
    EXPECT_EQ(connections_of("app-1"), 0u);
    EXPECT_EQ(nat_ports_of("app-1"), 0u);
    EXPECT_EQ(syn_out(kApp, 31000).verdict, dp::Verdict::forward);
}

TEST_F(Limits, NewConnectionRateIsATokenBucketPerInstance) {
    start(limits_site("", "{new_connections_per_second: 4}"));
    // One second's worth at once, then one every 250 ms.
    for (uint16_t i = 0; i < 4; ++i) ASSERT_EQ(syn_out(kApp, 30000 + i).verdict, dp::Verdict::forward) << i;
    expect_drop(syn_out(kApp, 30004), DropReason::limit_new_connections_per_second, "the bucket is empty");
    ctx_.now_ns += 240'000'000;
    expect_drop(syn_out(kApp, 30005), DropReason::limit_new_connections_per_second, "not a token yet");
    ctx_.now_ns += 10'000'000;
    EXPECT_EQ(syn_out(kApp, 30006).verdict, dp::Verdict::forward) << "a token after 250 ms";
    expect_drop(syn_out(kApp, 30007), DropReason::limit_new_connections_per_second, "and only one");
    EXPECT_EQ(drops(kAppPort, DropReason::limit_new_connections_per_second), 3u);
    // Packets of its connections are no new connections; app-2 has its own bucket.
    EXPECT_EQ(syn_out(kApp, 30000).verdict, dp::Verdict::forward);
    for (uint16_t i = 0; i < 20; ++i) EXPECT_EQ(syn_out(kApp2, 30000 + i).verdict, dp::Verdict::forward) << i;
    // A long pause refills one second's worth, not more.
    ctx_.now_ns += 60 * kSecond;
    for (uint16_t i = 0; i < 4; ++i) EXPECT_EQ(syn_out(kApp, 32000 + i).verdict, dp::Verdict::forward) << i;
    expect_drop(syn_out(kApp, 32004), DropReason::limit_new_connections_per_second, "depth one second");
}

TEST_F(Limits, NatPortLimitIsPerRemoteEndpointAndLeavesTheRemoteToOthers) {
    start(limits_site("", "{nat_ports: 4}"));
    for (uint16_t i = 0; i < 4; ++i) ASSERT_EQ(syn_out(kApp, 30000 + i).verdict, dp::Verdict::forward) << i;
    expect_drop(syn_out(kApp, 30004), DropReason::limit_nat_ports, "5th port towards the same server");
    EXPECT_EQ(drops(kAppPort, DropReason::limit_nat_ports), 1u);
    EXPECT_EQ(nat_ports_of("app-1"), 4u);
    // Another remote endpoint (in another port pool) is another quota.
    uint16_t other = 444;
    while (nat_->partition_of(ipproto::kTcp, kServer, other) == nat_->partition_of(ipproto::kTcp, kServer, 443)) ++other;
    EXPECT_EQ(syn_out(kApp, 30005, kServer, other).verdict, dp::Verdict::forward);
    // app-2 reaches the same server: the pool has room beyond app-1's share.
    for (uint16_t i = 0; i < 10; ++i) EXPECT_EQ(syn_out(kApp2, 30000 + i).verdict, dp::Verdict::forward) << i;
    EXPECT_EQ(nat_ports_of("app-2"), 10u);
    EXPECT_EQ(connections_of("app-1"), 5u) << "the refused one is not charged";
}

TEST_F(Limits, AConnectionFromOutsideIsChargedToTheInstanceItReachesAndCountedOnItsPort) {
    start(limits_site("", "", "{connections: 3}"));
    for (uint16_t i = 0; i < 3; ++i)
        ASSERT_EQ(tcp_in(kServer, 50000 + i, kWebIp, 443, kSyn).verdict, dp::Verdict::forward) << i;
    expect_drop(tcp_in(kServer, 50003, kWebIp, 443, kSyn), DropReason::limit_connections, "web-1 holds 3");
    EXPECT_EQ(drops(kWebPort, DropReason::limit_connections), 1u) << "on the instance's port";
    EXPECT_EQ(drops(kUplinkPort, DropReason::limit_connections), 0u) << "not the uplink's";
    EXPECT_EQ(connections_of("web-1"), 3u);
    // web-1's own new connections count against the same limit; app-1 is untouched.
    expect_drop(syn_out(kWeb, 41000), DropReason::limit_connections, "web-1 opening one more");
    EXPECT_EQ(syn_out(kApp, 30000).verdict, dp::Verdict::forward);
}

TEST_F(Limits, AConnectionBetweenInstancesIsChargedToTheOneThatOpenedIt) {
    start(limits_site("", "", "{connections: 1}"));
    // app-1 opens three connections to web-1:443 (inside the site, no NAT): its own.
    for (uint16_t i = 0; i < 3; ++i)
        EXPECT_EQ(syn_out(kApp, 30000 + i, kWebIp, 443).verdict, dp::Verdict::forward) << i;
    EXPECT_EQ(connections_of("app-1"), 3u);
    EXPECT_EQ(connections_of("web-1"), 0u) << "web-1 only answers them";
    EXPECT_EQ(nat_ports_of("app-1"), 0u);
}

TEST_F(Limits, EstablishedConnectionsGoOnWhenTheInstanceIsAtItsLimits) {
    start(limits_site("", "", "{connections: 1, new_connections_per_second: 1}"));
    establish_from_web(41000);
    expect_drop(syn_out(kWeb, 41001), DropReason::limit_new_connections_per_second, "no token left");
    ctx_.now_ns += 2 * kSecond;
    expect_drop(syn_out(kWeb, 41001), DropReason::limit_connections, "a token, but at its one connection");
    for (uint32_t n = 0; n < 10; ++n) {
        EXPECT_EQ(syn_out(kWeb, 41000, kServer, 443, 64, kAck, 1001, 5001).verdict, dp::Verdict::forward);
        EXPECT_EQ(tcp_in(kServer, 443, kWebIp, 41000, kAck, 5001, 1001).verdict, dp::Verdict::forward);
    }
}

TEST_F(Limits, ReopeningAConnectionInTimeWaitTakesAToken) {
    start(limits_site("", "", "{new_connections_per_second: 1}"));
    establish_from_web(41000);
    // web-1 closes, the server closes: TIME_WAIT.
    ASSERT_EQ(syn_out(kWeb, 41000, kServer, 443, 64, TcpHdr::kFin | kAck, 1001, 5001).verdict, dp::Verdict::forward);
    ASSERT_EQ(tcp_in(kServer, 443, kWebIp, 41000, TcpHdr::kFin | kAck, 5001, 1002).verdict, dp::Verdict::forward);
    ASSERT_EQ(syn_out(kWeb, 41000, kServer, 443, 64, kAck, 1002, 5002).verdict, dp::Verdict::forward);
    ctx_.now_ns += 100'000'000;
    expect_drop(syn_out(kWeb, 41000, kServer, 443, 64, kSyn, 90000), DropReason::limit_new_connections_per_second,
                "a SYN reopening it is a new connection");
    ctx_.now_ns += kSecond;
    EXPECT_EQ(syn_out(kWeb, 41000, kServer, 443, 64, kSyn, 90000).verdict, dp::Verdict::forward);
    EXPECT_EQ(connections_of("web-1"), 1u) << "still one connection";
}

// ---- a connection exists only for a packet that leaves ----

TEST_F(Limits, PacketsThatDoNotLeaveCreateNoConnection) {
    start(limits_site());
    // A TTL=1 flood: time exceeded (rate-limited), nothing tracked, no port taken.
    for (uint16_t i = 0; i < 500; ++i) {
        const auto m = syn_out(kApp, static_cast<uint16_t>(20000 + i), kServer, 443, 1);
        ASSERT_NE(m.verdict, dp::Verdict::forward);
        if (m.verdict == dp::Verdict::drop) {
            ASSERT_EQ(m.reason, DropReason::ttl_exceeded);
        }
    }
    EXPECT_EQ(drops(kAppPort, DropReason::ttl_exceeded), 500u);
    // Too big for the uplink's MTU with DF set.
    TestFrame big(FrameBuilder()
                      .eth(kApp.mac, kGatewayMac)
                      .ipv4(kApp.ip, kServer, ipproto::kUdp)
                      .udp(5353, 53, std::vector<uint8_t>(1480))
                      .build());
    EXPECT_NE(run(big, kAppPort).verdict, dp::Verdict::forward);
    EXPECT_EQ(drops(kAppPort, DropReason::mtu_exceeded), 1u);
    EXPECT_EQ(conntrack_->size(), 0u);
    EXPECT_EQ(connections_of("app-1"), 0u);
    EXPECT_EQ(nat_->in_use(ipproto::kTcp) + nat_->in_use(ipproto::kUdp), 0u);
    EXPECT_EQ(counters_->ct_created, 0u);
    // The next SYN with a real TTL makes the one connection.
    EXPECT_EQ(syn_out(kApp, 20000).verdict, dp::Verdict::forward);
    EXPECT_EQ(connections_of("app-1"), 1u);
    EXPECT_EQ(conntrack_->size(), 1u) << "the connection's one key";
}

TEST_F(Limits, NothingIsCreatedWhileTheUplinkNeighbourIsUnresolved) {
    start(limits_site(), /*gateway_resolved=*/false);
    for (uint16_t i = 0; i < 50; ++i) expect_drop(syn_out(kApp, 30000 + i), DropReason::neighbor_unresolved, "no MAC yet");
    EXPECT_EQ(conntrack_->size(), 0u);
    EXPECT_EQ(nat_->in_use(ipproto::kTcp), 0u);
}

// ---- a full table ----

TEST_F(Limits, AFullTableEvictsUnansweredConnectionsOfTheBiggestHolder) {
    // 1024 keys, 960 before the table counts as full; no limit stops app-1 before that.
    start(limits_site("{connections: 100000}", "", "", 1024));
    ASSERT_EQ(conntrack_->capacity(), 960u);
    for (uint16_t i = 0; i < 3; ++i) ASSERT_EQ(syn_out(kApp2, 40000 + i).verdict, dp::Verdict::forward);
    for (uint16_t i = 0; i < 5; ++i) ASSERT_NO_FATAL_FAILURE(establish_from_web(41000 + i));
    // app-1 floods SYNs far beyond the table; housekeeping runs meanwhile.
    for (uint32_t i = 0; i < 3000; ++i) {
        const auto m = syn_out(kApp, static_cast<uint16_t>(20000 + i));
        ASSERT_EQ(m.verdict, dp::Verdict::forward) << "flood SYN " << i << ": " << drop_reason_info(m.reason).name;
        if (i % 256 == 255) housekeeping();  // every 100 ms: who holds most
    }
    EXPECT_GT(conntrack_->evicted(), 2000u);
    EXPECT_LE(conntrack_->reserved(), conntrack_->capacity());
    // app-2's new connection gets in; its earlier ones, unanswered but few, were spared for
    // app-1's; web-1's answered connections were never candidates.
    EXPECT_EQ(syn_out(kApp2, 40100).verdict, dp::Verdict::forward);
    EXPECT_EQ(connections_of("app-2"), 4u);
    for (uint16_t i = 0; i < 5; ++i)
        EXPECT_EQ(tcp_in(kServer, 443, kWebIp, 41000 + i, kAck, 5001, 1001).verdict, dp::Verdict::forward) << i;
    EXPECT_EQ(connections_of("web-1"), 5u);
    EXPECT_EQ(drops(kAppPort, DropReason::ct_table_full), 0u);
    // The accounts stay exact through evictions: app-1 holds what the table has of it.
    EXPECT_EQ(connections_of("app-1") + connections_of("app-2") + connections_of("web-1"), conntrack_->reserved());
    EXPECT_EQ(nat_ports_of("app-1"), connections_of("app-1"));
}

TEST_F(Limits, AnsweredConnectionsAreNeverEvicted) {
    start(limits_site("", "", "", 1024));
    uint16_t sport = 20000;
    while (conntrack_->size() < conntrack_->capacity()) ASSERT_NO_FATAL_FAILURE(establish_from_web(sport++));
    expect_drop(syn_out(kApp, 30000), DropReason::ct_table_full, "nothing unanswered to evict");
    EXPECT_EQ(conntrack_->evicted(), 0u);
    EXPECT_EQ(nat_ports_of("app-1"), 0u) << "the refused connection gave its port back";
    EXPECT_EQ(connections_of("app-1"), 0u);
    for (uint16_t p = 20000; p < sport; p += 97)
        EXPECT_EQ(tcp_in(kServer, 443, kWebIp, p, kAck, 5001, 1001).verdict, dp::Verdict::forward) << p;
}

// ---- a burst's new connections (policy.cpp commit_stage: all claim, then all finish) ----

// Defect (b8327f6): the retransmitted SYN's claim keeps its connection charge until finish()
// finds the connection its first SYN made, so a third SYN of the same burst is refused as
// over the limit, though only two connections exist (packet by packet: all three pass).
TEST_F(Limits, ARetransmittedSynInTheSameBurstDoesNotTakeAnotherConnectionsCharge) {
    start(limits_site("", "", "{connections: 2}"));
    const auto ms = syns_in_one_burst(kWeb, {41000, 41000, 41001});
    for (size_t i = 0; i < ms.size(); ++i)
        EXPECT_EQ(ms[i].verdict, dp::Verdict::forward) << i << ": " << drop_reason_info(ms[i].reason).name;
    EXPECT_EQ(connections_of("web-1"), 2u);
    EXPECT_EQ(conntrack_->reserved(), 2u);
}

// Defect (b8327f6), the same for the NAT quota: the retransmitted SYN's claim holds a second
// port (its own, given back only in finish()), and the next connection of the burst is
// refused as over app-1's two ports.
TEST_F(Limits, ARetransmittedMasqueradedSynInTheSameBurstDoesNotTakeAnotherConnectionsPort) {
    start(limits_site("", "{nat_ports: 2}"));
    const auto ms = syns_in_one_burst(kApp, {30000, 30000, 30001});
    for (size_t i = 0; i < ms.size(); ++i)
        EXPECT_EQ(ms[i].verdict, dp::Verdict::forward) << i << ": " << drop_reason_info(ms[i].reason).name;
    EXPECT_EQ(nat_ports_of("app-1"), 2u);
    EXPECT_EQ(nat_->in_use(ipproto::kTcp), 2u);
    EXPECT_EQ(connections_of("app-1"), 2u);
}

// Defect (b8327f6), the same for room in the table: with two keys left, the retransmitted
// SYN's reserved key is held until finish(), and the next connection finds the table full
// (nothing to evict: the other connections are answered).
TEST_F(Limits, ARetransmittedSynInTheSameBurstDoesNotTakeAnotherConnectionsRoom) {
    start(limits_site("", "", "", 1024));
    uint16_t sport = 20000;
    while (conntrack_->reserved() < conntrack_->capacity() - 2) ASSERT_NO_FATAL_FAILURE(establish_from_web(sport++));
    const auto ms = syns_in_one_burst(kWeb, {50000, 50000, 50001});
    for (size_t i = 0; i < ms.size(); ++i)
        EXPECT_EQ(ms[i].verdict, dp::Verdict::forward) << i << ": " << drop_reason_info(ms[i].reason).name;
    EXPECT_EQ(conntrack_->reserved(), conntrack_->capacity());
    EXPECT_EQ(conntrack_->evicted(), 0u);
}

// Defect (b8327f6): a new connection that finds the table full may evict the unanswered
// connection an earlier packet of the same burst opened, as packet by packet (and in separate
// bursts); with every claim before any finish, that entry is not alive yet when the later
// packet looks for a victim, and the later packet is refused as ct_table_full instead.
TEST_F(Limits, ANewConnectionMayEvictOneAnEarlierPacketOfTheSameBurstOpened) {
    start(limits_site("", "", "", 1024));
    uint16_t sport = 20000;
    while (conntrack_->reserved() < conntrack_->capacity() - 1) ASSERT_NO_FATAL_FAILURE(establish_from_web(sport++));
    const auto ms = syns_in_one_burst(kApp, {30000, 30001});
    for (size_t i = 0; i < ms.size(); ++i)
        EXPECT_EQ(ms[i].verdict, dp::Verdict::forward) << i << ": " << drop_reason_info(ms[i].reason).name;
    EXPECT_EQ(conntrack_->evicted(), 1u);
    EXPECT_EQ(connections_of("app-1"), 1u);
    EXPECT_EQ(nat_ports_of("app-1"), 1u);
}

// Defect (b8327f6), the same for pings (the echo identifier is the port): the second echo
// request's claim holds a second port of app-1's two, and the other ping's requests find none.
TEST_F(Limits, TwoEchoRequestsOfANewMasqueradedPingInOneBurstTakeOnePortOfTheQuota) {
    start(limits_site("", "{nat_ports: 2}"));
    const auto echo = [](uint16_t id, uint16_t seq) {
        return FrameBuilder().eth(kApp.mac, kGatewayMac).ipv4(kApp.ip, kServer).icmp_echo(id, seq).build();
    };
    const auto ms = in_one_burst({echo(7, 1), echo(7, 2), echo(8, 1), echo(8, 2)}, kAppPort);
    for (size_t i = 0; i < ms.size(); ++i)
        EXPECT_EQ(ms[i].verdict, dp::Verdict::forward) << i << ": " << drop_reason_info(ms[i].reason).name;
    EXPECT_EQ(nat_ports_of("app-1"), 2u);
    EXPECT_EQ(connections_of("app-1"), 2u);
    EXPECT_EQ(conntrack_->reserved(), 2u);
}

// What a scenario of new connections left behind, to compare a burst with bursts of one.
struct CommitOutcome {
    std::string text;
    bool scenario_evicted = false;  // the eviction the scenario is built to need happened
};
std::string verdict_of(const dp::PacketMeta& m) {
    return m.verdict == dp::Verdict::drop ? std::string(drop_reason_info(m.reason).name)
                                          : m.verdict == dp::Verdict::forward ? "forward" : "other";
}

constexpr size_t kBucketEntries = 8;  // keys per rte_hash bucket (RTE_HASH_BUCKET_ENTRIES)

// Coverage (policy.cpp Claim::Waits::slot, the key's buckets full while the table has room):
// app-1's SYNs A and B, whose keys share their two buckets with 15 answered connections of
// web-1. A takes the last slot; B finds the buckets full and evicts the one unanswered
// connection there, A's, as it does packet by packet. In one burst B's claim must first let
// A's connection come alive, or A is no candidate yet and B is refused as ct_table_full.
TEST_F(Limits, ANewConnectionWhoseBucketsAreFullMayEvictOneAnEarlierPacketOfTheSameBurstOpened) {
    conntrack_secret_ = 0xb0c4e7;  // both runs build the same collisions
    const auto run_scenario = [&](bool one_burst) {
        CommitOutcome out;
        restart(limits_site("", "", "", 1024));
        if (HasFatalFailure()) return out;
        std::pair<uint16_t, uint16_t> a{30000, 443};  // A's endpoint: one whose two buckets differ
        auto buckets = buckets_of(key_to_server(kApp, a.first, a.second));
        while (buckets.first == buckets.second) buckets = buckets_of(key_to_server(kApp, ++a.first, a.second));
        const auto b = endpoints_in(buckets, kApp, 1, {a});
        const auto web = endpoints_in(buckets, kWeb, 2 * kBucketEntries - 1);  // all slots but A's
        if (b.size() != 1 || web.size() != 2 * kBucketEntries - 1) {
            ADD_FAILURE() << "too few keys found for buckets " << buckets.first << "/" << buckets.second;
            return out;
        }
        for (const auto& [sport, dport] : web) establish_from_web(sport, dport);
        if (HasFatalFailure()) return out;
        const auto frame_a = syn_frame(kApp, a.first, kServer, a.second);
        const auto frame_b = syn_frame(kApp, b[0].first, kServer, b[0].second);
        std::vector<dp::PacketMeta> ms;
        if (one_burst) {
            ms = in_one_burst({frame_a, frame_b}, kAppPort);
        } else {
            ms.push_back(in_one_burst({frame_a}, kAppPort)[0]);
            ms.push_back(in_one_burst({frame_b}, kAppPort)[0]);
        }
        const bool a_alive = alive(key_to_server(kApp, a.first, a.second));
        const bool b_alive = alive(key_to_server(kApp, b[0].first, b[0].second));
        out.scenario_evicted = conntrack_->evicted() == 1 && !a_alive;
        out.text = fmt::format(
            "A {}, B {}; connections A {}, B {}; app-1 holds {} connections and {} NAT ports, web-1 {} connections; "
            "{} refused as ct_table_full; {} evicted; {} keys reserved",
            verdict_of(ms[0]), verdict_of(ms[1]), a_alive, b_alive, connections_of("app-1"), nat_ports_of("app-1"),
            connections_of("web-1"), drops(kAppPort, DropReason::ct_table_full), conntrack_->evicted(),
            conntrack_->reserved());
        return out;
    };
    const CommitOutcome packet_by_packet = run_scenario(false);
    ASSERT_TRUE(packet_by_packet.scenario_evicted) << "B evicts A packet by packet: " << packet_by_packet.text;
    const CommitOutcome burst = run_scenario(true);
    EXPECT_EQ(burst.text, packet_by_packet.text);
}

// Coverage (policy.cpp finish(), its second insert: a key retired between claim and finish),
// two workers and an eviction interleaved. Worker 2's burst claims X's connection (its insert
// puts the key at P, the entry not alive yet); worker 1 then makes that connection at P itself,
// and a new connection of app-2 finding the table full evicts it (P retired: its key deleted,
// its slot waiting for a grace period) before worker 2 finishes X. Worker 2 inserts the key
// again and makes X's connection there with the port X claimed, as if X had come after the
// eviction (the order one worker would see): found, translated both ways, every connection,
// key and port counted once. Worker 2 waits between its claims and its finishes on the lock of
// R0's connection (the first packet of its burst, made meanwhile by worker 1), which the test
// holds: the interleaving does not depend on timing.
TEST_F(Limits, AClaimWhoseKeyIsEvictedBeforeItFinishesIsInsertedAgain) {
    conntrack_secret_ = 0x2e71;  // the nearly full table the same every run (X is inserted in it again)
    start(limits_site("", "", "", 1024));
    uint16_t sport = 20000;
    while (conntrack_->reserved() < conntrack_->capacity() - 4) ASSERT_NO_FATAL_FAILURE(establish_from_web(sport++));
    const uint32_t answered = conntrack_->reserved();
    SplitWorker second(ctx_.now_ns);
    // Worker 2's burst: R0 (30000) and X (30001), both new when it looks them up.
    second.until_commit({syn_frame(kApp, 30000), syn_frame(kApp, 30001)}, kAppPort, *snap_);
    ASSERT_EQ(syn_out(kApp, 30000).verdict, dp::Verdict::forward) << "worker 1 makes R0's connection";
    const int32_t r0 = conntrack_->lookup(key_to_server(kApp, 30000));
    ASSERT_GE(r0, 0);

    std::jthread worker2;  // joined after the lock below is given back (declared first, destroyed last)
    struct HeldLock {
        dp::ConnTable& table;
        int32_t position;
        bool held = true;
        void release() {
            if (held) table.unlock(position);
            held = false;
        }
        ~HeldLock() { release(); }
    } r0_lock{*conntrack_, r0};
    conntrack_->entry(r0).lock_entry();
    worker2 = std::jthread([&] {
        const bool registered = rte_thread_register() == 0;  // an lcore id, as workers have
        second.from_commit();
        if (registered) rte_thread_unregister();
    });
    const dp::CtKey x_key = key_to_server(kApp, 30001);
    int32_t p = -1;
    for (const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
         (p = conntrack_->lookup(x_key)) < 0 && std::chrono::steady_clock::now() < until;)
        std::this_thread::yield();
    ASSERT_GE(p, 0) << "worker 2 claimed X's key";
    ASSERT_TRUE(conntrack_->entry(p).dead()) << "worker 2 waits on R0's lock before it finishes X";
    ASSERT_EQ(syn_out(kApp, 30001).verdict, dp::Verdict::forward) << "worker 1 makes X's connection";
    ASSERT_EQ(conntrack_->lookup(x_key), p);
    ASSERT_EQ(syn_out(kApp2, 30000).verdict, dp::Verdict::forward) << "app-2's connection evicts it";
    ASSERT_EQ(conntrack_->evicted(), 1u);
    ASSERT_TRUE(conntrack_->entry(p).retired()) << "X's connection at P was the one evicted";
    r0_lock.release();
    worker2.join();

    for (uint16_t i = 0; i < second.batch.count; ++i)
        EXPECT_EQ(second.batch.meta[i].verdict, dp::Verdict::forward) << i << ": " << verdict_of(second.batch.meta[i]);
    const int32_t x_at = conntrack_->lookup(x_key);
    ASSERT_GE(x_at, 0) << "X's connection is in the table";
    EXPECT_NE(x_at, p) << "not at the retired position";
    EXPECT_FALSE(conntrack_->entry(x_at).dead());
    // X left with the port its claim took, bound to its connection: the answer comes back in.
    const uint16_t external = second.frames[1]->at<TcpHdr>(kL3 + sizeof(Ipv4Hdr))->src_port.host();
    EXPECT_EQ(dp::load_nat_binding(conntrack_->entry(x_at)).port, external);
    const auto answer = tcp_in(kServer, 443, kHostAddr, external, kSyn | kAck, 5000, 1001);
    EXPECT_EQ(answer.verdict, dp::Verdict::forward) << verdict_of(answer);
    EXPECT_EQ(answer.out_port, kAppPort);
    // Once each: R0 and X for app-1, the evicting connection for app-2, web-1's answered ones.
    EXPECT_EQ(connections_of("app-1"), 2u);
    EXPECT_EQ(nat_ports_of("app-1"), 2u);
    EXPECT_EQ(connections_of("app-2"), 1u);
    EXPECT_EQ(nat_ports_of("app-2"), 1u);
    EXPECT_EQ(conntrack_->reserved(), answered + 3);
    EXPECT_EQ(nat_->in_use(ipproto::kTcp), 3u);
}

// ---- keyed hashes ----

TEST(KeyedHashes, KeysChosenToShareABucketUnderOneSecretSpreadUnderAnother) {
    // An attacker who could compute the hash picks keys for one bucket (a tenant chooses its
    // source ports). Without the secret the same keys land anywhere.
    auto a = dp::ConnTable::create(1024, SOCKET_ID_ANY, 1);
    auto b = dp::ConnTable::create(1024, SOCKET_ID_ANY, 2);
    ASSERT_TRUE(a && b);
    const uint32_t mask = (*a)->buckets() - 1;
    std::vector<dp::CtKey> chosen;
    const auto key = [](uint16_t sport) {
        return dp::make_ct_key(ipproto::kTcp, {1, Ipv4Addr::from_octets(10, 10, 0, 5), sport}, {0, kServer, 443}).key;
    };
    const uint32_t target = (*a)->hash_of(key(1)) & mask;
    for (uint32_t p = 1; p < 65536 && chosen.size() < 16; ++p)
        if (((*a)->hash_of(key(static_cast<uint16_t>(p))) & mask) == target) chosen.push_back(key(static_cast<uint16_t>(p)));
    ASSERT_EQ(chosen.size(), 16u) << "the search finds a bucket's worth under the secret it knows";
    std::map<uint32_t, int> in_b;
    for (const auto& k : chosen) ++in_b[(*b)->hash_of(k) & mask];
    int fullest = 0;
    for (const auto& [bucket, n] : in_b) fullest = std::max(fullest, n);
    EXPECT_LE(fullest, 3) << "16 keys over " << mask + 1 << " buckets";

    // The same for the NAT port pools: remotes that share a pool under one secret do not
    // under another.
    auto na = dp::NatPortAllocator::create({}, 64, 1);
    auto nb = dp::NatPortAllocator::create({}, 64, 2);
    ASSERT_TRUE(na && nb);
    std::vector<uint16_t> same_pool;
    for (uint32_t p = 1; p < 65536 && same_pool.size() < 16; ++p)
        if (na->partition_of(ipproto::kTcp, kServer, static_cast<uint16_t>(p)) == na->partition_of(ipproto::kTcp, kServer, 1))
            same_pool.push_back(static_cast<uint16_t>(p));
    std::map<uint32_t, int> pools_b;
    for (uint16_t p : same_pool) ++pools_b[nb->partition_of(ipproto::kTcp, kServer, p)];
    EXPECT_GE(pools_b.size(), 8u) << "16 remotes over 64 pools";
}

TEST(KeyedHashes, TheTableHashesWithItsSecret) {
    auto t = dp::ConnTable::create(1024, SOCKET_ID_ANY, 42);
    ASSERT_TRUE(t);
    const auto k = dp::make_ct_key(ipproto::kUdp, {1, Ipv4Addr::from_octets(10, 0, 0, 1), 1000}, {0, kServer, 53}).key;
    std::array<uint32_t, 5> words;
    std::memcpy(words.data(), &k, sizeof(k));
    EXPECT_EQ((*t)->hash_of(k), dp::MultilinearHash<5>(42)(words));
    // Found after insert: lookups and inserts use the same keyed hash.
    const int32_t pos = (*t)->insert(k);
    ASSERT_GE(pos, 0);
    EXPECT_EQ((*t)->lookup(k), pos);
    dp::CtKey back;
    ASSERT_TRUE((*t)->key_at(pos, back));
}

// ---- accounts under several workers ----

TEST(InstanceAccounts, ChargesFromTwoWorkersStopExactlyAtTheLimit) {
    dp::InstanceAccounts accounts;
    std::atomic<int> ready{0};
    std::atomic<uint32_t> granted{0};
    auto worker = [&] {
        ready++;
        while (ready.load() < 2) {
        }
        for (int i = 0; i < 100000; ++i)
            if (accounts.charge_connection(7, 150000)) granted++;
    };
    std::thread t1(worker), t2(worker);
    t1.join();
    t2.join();
    EXPECT_EQ(granted.load(), 150000u);
    EXPECT_EQ(accounts.connections(7), 150000u);
    EXPECT_EQ(accounts.connections(8), 0u);
}

TEST(InstanceAccounts, TwoWorkersShareOneTokenBucket) {
    dp::InstanceAccounts accounts;
    std::atomic<int> ready{0};
    std::atomic<uint32_t> granted{0};
    const uint64_t now = 1000 * kSecond;
    auto worker = [&] {
        ready++;
        while (ready.load() < 2) {
        }
        for (int i = 0; i < 5000; ++i)
            if (accounts.take_opening(3, 1000, now)) granted++;
    };
    std::thread t1(worker), t2(worker);
    t1.join();
    t2.join();
    EXPECT_EQ(granted.load(), 1000u) << "one second's worth at one instant, whoever asks";
    EXPECT_TRUE(accounts.take_opening(3, 1000, now + 1'000'000)) << "1 ms later: one more";
    EXPECT_FALSE(accounts.take_opening(3, 1000, now + 1'000'000));
}

TEST(NatQuota, AnAccountHoldsAtMostItsPortsOfAPool) {
    auto a = dp::NatPortAllocator::create({}, 64, 0x5eed);
    ASSERT_TRUE(a);
    const dp::NatQuota quota{5, 3};
    std::vector<uint16_t> got;
    for (int i = 0; i < 3; ++i) {
        const auto p = a->allocate(ipproto::kUdp, kServer, 53, 0, static_cast<uint64_t>(i), quota);
        ASSERT_TRUE(p);
        got.push_back(*p);
    }
    const auto over = a->allocate(ipproto::kUdp, kServer, 53, 0, 9, quota);
    ASSERT_FALSE(over);
    EXPECT_EQ(over.error(), dp::NatRefusal::over_quota);
    EXPECT_EQ(a->held(5), 3u);
    EXPECT_TRUE(a->allocate(ipproto::kUdp, kServer, 53, 0, 10, {6, 3})) << "another account";
    EXPECT_TRUE(a->allocate(ipproto::kTcp, kServer, 53, 0, 11, quota)) << "another protocol";
    EXPECT_TRUE(a->release(ipproto::kUdp, kServer, 53, got[0], 5));
    EXPECT_EQ(a->held(5), 3u) << "2 UDP and 1 TCP";
    EXPECT_TRUE(a->allocate(ipproto::kUdp, kServer, 53, 0, 12, quota)) << "a released port is given back";
}

TEST(NatQuota, APortClaimedBackAfterARestartCountsForItsAccount) {
    // A restarted calyx claims each masqueraded connection's port again: it must count against
    // the instance's nat_ports as the allocation did, or a restart would reset every quota.
    auto a = dp::NatPortAllocator::create({}, 64, 0x5eed);
    ASSERT_TRUE(a);
    ASSERT_TRUE(a->claim(ipproto::kUdp, kServer, 53, 40000, 5));
    ASSERT_TRUE(a->claim(ipproto::kUdp, kServer, 53, 40001, 5));
    ASSERT_TRUE(a->claim(ipproto::kTcp, kServer, 443, 40002, 5));
    EXPECT_EQ(a->held(5), 3u);
    EXPECT_FALSE(a->allocate(ipproto::kUdp, kServer, 53, 0, 1, {5, 2})) << "its quota of the pool is taken by what it had";
    EXPECT_TRUE(a->release(ipproto::kUdp, kServer, 53, 40000, 5));
    EXPECT_EQ(a->held(5), 2u);
    EXPECT_TRUE(a->allocate(ipproto::kUdp, kServer, 53, 0, 2, {5, 2}));
}

TEST(InstanceAccounts, TheBiggestHolderMayHoldASingleConnection) {
    // A full table of instances that each hold one connection still has someone to evict from.
    dp::InstanceAccounts accounts;
    EXPECT_EQ(accounts.biggest_holder(), dp::kNoAccount) << "nobody holds anything yet";
    ASSERT_TRUE(accounts.charge_connection(7, 10));
    EXPECT_EQ(accounts.biggest_holder(), 7);
    ASSERT_TRUE(accounts.charge_connection(3, 10));
    ASSERT_TRUE(accounts.charge_connection(3, 10));
    EXPECT_EQ(accounts.biggest_holder(), 3);
}

}  // namespace
}  // namespace calyx::test
