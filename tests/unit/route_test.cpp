// The routing table the snapshot builder makes, looked up with DPDK's rte_fib.
#include <algorithm>
#include <functional>

#include <fmt/format.h>
#include <rte_fib.h>

#include "dp/local.hpp"
#include "dp/route.hpp"
#include "gateway_fixture.hpp"

namespace calyx::test {
namespace {

using dp::NextHop;
using dp::NextHopKind;

class RouteTable : public GatewayTest {
protected:
    uint32_t lookup(Ipv4Addr a) {
        uint32_t ip = a.value;
        uint64_t nh = 0;
        EXPECT_EQ(rte_fib_lookup_bulk(snap_->fib, &ip, &nh, 1), 0);
        return static_cast<uint32_t>(nh);
    }
    // Inputs for a snapshot of another configuration: instances on the slots `slot` gives,
    // every network in zone 1, this fixture's connection table.
    cp::SnapshotInputs inputs(std::function<uint16_t(const config::InstanceConfig&)> slot) {
        cp::SnapshotInputs in;
        in.port_slot = std::move(slot);
        in.zone = [](const config::NetworkConfig&) { return uint16_t{1}; };
        in.conntrack = conntrack_.get();
        return in;
    }
};

TEST_F(RouteTable, InstanceSlash32BeatsItsNetworkRoute) {
    EXPECT_EQ(lookup(kAppIp), NextHop::make(NextHopKind::instance, kAppPort));
    EXPECT_EQ(lookup(kDbIp), NextHop::make(NextHopKind::instance, kDbPort));
    EXPECT_EQ(lookup(kWebIp), NextHop::make(NextHopKind::instance, kWebPort));
}

TEST_F(RouteTable, AddressesInANetworkWithoutInstanceAreUnassigned) {
    // The index names the network (0 public, 1 nat), so errors can depend on its kind.
    EXPECT_EQ(lookup(Ipv4Addr::from_octets(10, 10, 0, 6)), NextHop::make(NextHopKind::unassigned, 1));
    EXPECT_EQ(lookup(Ipv4Addr::from_octets(203, 0, 113, 254)), NextHop::make(NextHopKind::unassigned, 0));
}

TEST_F(RouteTable, GatewaysAndBroadcastsAreLocal) {
    EXPECT_EQ(lookup(kWebGateway), NextHop::make(NextHopKind::local, dp::kLocalGatewayAddress));
    EXPECT_EQ(lookup(Ipv4Addr::from_octets(10, 20, 0, 1)), NextHop::make(NextHopKind::local, dp::kLocalGatewayAddress));
    EXPECT_EQ(lookup(Ipv4Addr::from_octets(10, 10, 0, 255)), NextHop::make(NextHopKind::local, dp::kLocalBroadcast));
}

TEST_F(RouteTable, EverythingElseHasNoRoute) {
    for (Ipv4Addr a : {Ipv4Addr::from_octets(8, 8, 8, 8), Ipv4Addr::from_octets(10, 10, 1, 5),
                       Ipv4Addr::from_octets(203, 0, 112, 255), Ipv4Addr::from_octets(10, 21, 0, 7)})
        EXPECT_EQ(lookup(a), NextHop::make(NextHopKind::none)) << a.to_string();
}

TEST_F(RouteTable, ManyInstancesInManyPrefixesAllResolve) {
    // 2000 instances spread over eight /21 networks: every /24 of them needs a tbl8 group.
    std::string yaml = "networks:\n";
    for (int n = 0; n < 8; ++n)
        yaml += fmt::format("  - {{name: n{0}, kind: public, cidr: 10.{0}.0.0/21, gateway: 10.{0}.0.1}}\n", n);
    yaml += "instances:\n";
    for (int i = 0; i < 2000; ++i) {
        const int n = i % 8, host = i / 8 + 2;
        yaml += fmt::format(
            "  - {{name: i{0}, network: n{1}, mac: \"52:54:00:00:{2:02x}:{3:02x}\", ipv4: 10.{1}.{4}.{5}, "
            "port: {{type: vhost-user, socket: /tmp/u/i{0}.sock}}}}\n",
            i, n, i >> 8, i & 0xff, host / 256, host % 256);
    }
    auto cfg = config::parse_config(yaml, "many.yaml");
    ASSERT_TRUE(cfg.has_value()) << cfg.error().front().to_string();
    uint16_t slot = 0;
    std::map<std::string, uint16_t> slots;
    for (const auto& inst : cfg->instances) slots[inst.name] = slot++ % dp::kMaxPorts;
    cp::SnapshotInputs in = inputs([&](const config::InstanceConfig& i) { return slots.at(i.name); });
    auto snap = cp::build_snapshot(*cfg, in, 1);
    ASSERT_TRUE(snap.has_value()) << snap.error();
    for (const auto& inst : cfg->instances) {
        uint32_t ip = inst.ipv4.value;
        uint64_t nh = 0;
        rte_fib_lookup_bulk((*snap)->fib, &ip, &nh, 1);
        ASSERT_EQ(nh, NextHop::make(NextHopKind::instance, slots.at(inst.name))) << inst.name;
    }
}

}  // namespace
}  // namespace calyx::test

namespace calyx::test {
namespace {

TEST_F(RouteTable, NetworkWhoseDhcpOptionsOverflowTheMinimumDatagramIsRefused) {
    std::string routes;
    for (int i = 0; i < 60; ++i) routes += fmt::format("{}192.0.{}.0/24", i ? ", " : "", i);
    auto cfg = config::parse_config(
        fmt::format("networks:\n  - {{name: big, kind: public, cidr: 10.0.0.0/24, gateway: 10.0.0.1, routes: [{}]}}\n", routes),
        "big.yaml");
    ASSERT_TRUE(cfg.has_value()) << cfg.error().front().to_string();
    cp::SnapshotInputs in = inputs([](const config::InstanceConfig&) { return uint16_t{0}; });
    auto snap = cp::build_snapshot(*cfg, in, 1);
    ASSERT_FALSE(snap.has_value());
    EXPECT_NE(snap.error().find("big.yaml:2:5: network 'big': its DHCP options take"), std::string::npos)
        << snap.error();
}

}  // namespace
}  // namespace calyx::test

namespace calyx::test {
namespace {

// Every queue pair of every instance is polled by exactly one worker, pair q of slot s by
// worker (s + q) mod workers: a port's pairs land on different workers, and a reload that adds
// or removes other instances never moves a ring to another worker (no ring ever has two
// pollers, not even during the reload's grace period).
TEST_F(RouteTable, QueuePairsAreDealtByPortAndStayWithTheirWorkerAcrossReloads) {
    auto deal = [&](const std::string& instances) {
        auto cfg = config::parse_config(R"(
dataplane: {workers: [1, 2, 3]}
networks:
  - {name: n, kind: public, cidr: 10.0.0.0/24, gateway: 10.0.0.1}
instances:
)" + instances, "queues.yaml");
        EXPECT_TRUE(cfg.has_value()) << cfg.error().front().to_string();
        const std::map<std::string, uint16_t> slots{{"a", 7}, {"b", 8}, {"c", 9}, {"d", 10}};
        cp::SnapshotInputs in = inputs([&](const config::InstanceConfig& i) { return slots.at(i.name); });
        auto snap = cp::build_snapshot(*cfg, in, 1);
        EXPECT_TRUE(snap.has_value()) << snap.error();
        std::map<std::pair<uint16_t, uint16_t>, size_t> worker_of;
        const auto& w = (*snap)->queues_by_worker;
        for (size_t i = 0; i < w.size(); ++i)
            for (const auto& q : w[i]) EXPECT_TRUE(worker_of.emplace(std::pair{q.slot, q.queue}, i).second) << "polled twice";
        return worker_of;
    };
    const std::string a = "  - {name: a, network: n, mac: \"52:54:00:00:00:01\", ipv4: 10.0.0.2, port: {type: vhost-user, socket: /run/a.sock, queues: 3}}\n";
    const std::string b = "  - {name: b, network: n, mac: \"52:54:00:00:00:02\", ipv4: 10.0.0.3, port: {type: vhost-user, socket: /run/b.sock}}\n";
    const std::string c = "  - {name: c, network: n, mac: \"52:54:00:00:00:03\", ipv4: 10.0.0.4, port: {type: vhost-user, socket: /run/c.sock, queues: 2}}\n";
    const std::string d = "  - {name: d, network: n, mac: \"52:54:00:00:00:04\", ipv4: 10.0.0.5, port: {type: vhost-user, socket: /run/d.sock}}\n";
    const auto before = deal(a + b + c);
    using P = std::pair<uint16_t, uint16_t>;
    EXPECT_EQ(before, (std::map<P, size_t>{{{7, 0}, 1}, {{7, 1}, 2}, {{7, 2}, 0}, {{8, 0}, 2}, {{9, 0}, 0}, {{9, 1}, 1}}));
    // b goes, d comes (in front of the others in the file): a's and c's rings stay put.
    auto after = deal(d + a + c);
    EXPECT_EQ(after.at({10, 0}), 1u);
    after.erase({10, 0});
    auto kept = before;
    kept.erase({8, 0});
    EXPECT_EQ(after, kept);
}

}  // namespace
}  // namespace calyx::test

namespace calyx::test {
namespace {

// The uplink's receive queues go to the workers by queue number, whatever the instances: an
// ethdev queue must not move between workers across reloads (two pollers at once).
TEST_F(RouteTable, UplinkQueuesArePolledByTheWorkerOfTheirNumber) {
    for (const char* instances : {"", R"(
instances:
  - {name: a, network: n, mac: "52:54:00:00:00:01", ipv4: 10.0.0.2,
     port: {type: vhost-user, socket: /run/a.sock}}
)"}) {
        auto cfg = config::parse_config(std::string(R"(
dataplane: {workers: [1, 2]}
networks:
  - {name: n, kind: public, cidr: 10.0.0.0/24, gateway: 10.0.0.1}
uplink:
  port: {type: tap, name: calyx-up, queues: 3}
  address: 198.51.100.10/24
  gateway: 198.51.100.1
)") + instances,
                                        "uplink.yaml");
        ASSERT_TRUE(cfg.has_value()) << cfg.error().front().to_string();
        auto nat = dp::NatPortAllocator::create({20000, 20999}, dp::NatPortAllocator::kDefaultPartitions, 1);
        ASSERT_TRUE(nat.has_value()) << nat.error();
        dp::NeighborTable neighbors;
        cp::SnapshotInputs in = inputs([](const config::InstanceConfig&) { return uint16_t{5}; });
        in.uplink_slot = 1023;
        in.nat = &*nat;
        in.neighbors = &neighbors;
        auto snap = cp::build_snapshot(*cfg, in, 1);
        ASSERT_TRUE(snap.has_value()) << snap.error();
        using Q = dp::PolledQueue;
        const auto& w = (*snap)->queues_by_worker;
        ASSERT_EQ(w.size(), 2u);
        EXPECT_TRUE(std::ranges::find(w[0], Q{1023, 0}) != w[0].end());
        EXPECT_TRUE(std::ranges::find(w[1], Q{1023, 1}) != w[1].end());
        EXPECT_TRUE(std::ranges::find(w[0], Q{1023, 2}) != w[0].end());
        EXPECT_EQ(w[0].size() + w[1].size(), 3u + (*instances ? 1 : 0));
    }
}

}  // namespace
}  // namespace calyx::test
