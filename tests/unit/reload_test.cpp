// What a live reload may change, and what needs a restart: every setting fixed at start is
// refused by name, each on its own (a change of one must not hide behind another's), and
// what may change passes.
#include <gtest/gtest.h>

#include <string>

#include "calyx/config.hpp"
#include "cp/reload.hpp"

namespace calyx::cp {
namespace {

TEST(Reload, SnapshotContentsMayChange) {
    config::Config running, next;
    next.networks.push_back({});
    next.security_groups.push_back({});
    next.dataplane.conntrack.tcp_established = 60;
    next.dataplane.icmp_errors_per_second = 5;
    EXPECT_EQ(restart_required(running, next), std::nullopt);
}

TEST(Reload, StartUpSettingsNeedARestartAndAreAllNamed) {
    config::Config running, next;
    next.dataplane.workers = {1, 2};
    next.dataplane.conntrack.capacity = 2048;
    next.metrics.listen = "127.0.0.1:1";
    next.dataplane.state_file = "/dev/hugepages/calyx.state";
    const auto why = restart_required(running, next);
    ASSERT_TRUE(why.has_value());
    EXPECT_EQ(*why,
              "dataplane.workers, dataplane.conntrack.capacity, dataplane.state_file, metrics.listen cannot "
              "change while calyx runs: restart calyx to apply");
}

// A site as the operator writes it; each test edits one line of it.
std::string site(const std::string& dataplane, const std::string& uplink, const std::string& control) {
    return R"(
dataplane:
  workers: [1]
)" + dataplane + R"(
)" + control + R"(
)" + uplink + R"(
security_groups: []
networks:
  - {name: public, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1}
instances: []
)";
}
const std::string kDataplane = "  eal_args: [\"--no-huge\", \"-m\", \"512\"]\n  mbufs: 16383";
const std::string kControl = "control: {socket: /run/calyx/calyx.sock}";
const std::string kUplink =
    "uplink: {port: {type: tap, name: calyx-up}, address: 198.51.100.10/24, gateway: 198.51.100.1, "
    "nat_ports: \"20000-59999\"}";

config::Config parse(const std::string& yaml) {
    auto cfg = config::parse_config(yaml, "site.yaml");
    EXPECT_TRUE(cfg.has_value()) << cfg.error().front().to_string() << "\n" << yaml;
    return cfg ? *cfg : config::Config{};
}

std::optional<std::string> reload(const std::string& dataplane, const std::string& uplink,
                                  const std::string& control = kControl) {
    return restart_required(parse(site(kDataplane, kUplink, kControl)), parse(site(dataplane, uplink, control)));
}

std::string refused(const std::string& what) {
    return what + " cannot change while calyx runs: restart calyx to apply";
}

std::string uplink_with(const std::string& from, const std::string& to) {
    std::string u = kUplink;
    const size_t at = u.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return u.replace(at, from.size(), to);
}

TEST(Reload, TheSameSiteReloads) {
    EXPECT_EQ(reload(kDataplane, kUplink), std::nullopt);
}

TEST(Reload, TheUplinkGatewayMayChange) {
    EXPECT_EQ(reload(kDataplane, uplink_with("gateway: 198.51.100.1", "gateway: 198.51.100.2")), std::nullopt);
}

TEST(Reload, EalArgumentsAndBuffersAreFixed) {
    EXPECT_EQ(reload("  eal_args: [\"--no-huge\", \"-m\", \"1024\"]\n  mbufs: 16383", kUplink), refused("dataplane.eal_args"));
    EXPECT_EQ(reload("  eal_args: [\"--no-huge\", \"-m\", \"512\"]\n  mbufs: 32767", kUplink), refused("dataplane.mbufs"));
}

TEST(Reload, TheControlSocketIsFixed) {
    EXPECT_EQ(reload(kDataplane, kUplink, "control: {socket: /run/calyx/other.sock}"), refused("control.socket"));
}

TEST(Reload, TheUplinkPortIsFixed) {
    EXPECT_EQ(reload(kDataplane, uplink_with("name: calyx-up", "name: calyx-up2")), refused("uplink.port"));
    EXPECT_EQ(reload(kDataplane, uplink_with("{type: tap, name: calyx-up}", "{type: af_packet, iface: eth1}")),
              refused("uplink.port"));
    EXPECT_EQ(reload(kDataplane, uplink_with("{type: tap, name: calyx-up}", "{type: tap, name: calyx-up, queues: 2}")),
              refused("uplink.port"));
    EXPECT_EQ(reload(kDataplane, uplink_with("{type: tap, name: calyx-up}", "{type: pci, address: \"0000:01:00.0\"}")),
              refused("uplink.port"));
    EXPECT_EQ(reload(kDataplane, uplink_with("{type: tap, name: calyx-up}", "{type: vhost-user, socket: /run/calyx/up.sock}")),
              refused("uplink.port"));
}

TEST(Reload, TheUplinkPortsOwnSettingsAreComparedOneByOne) {
    // From one af_packet interface to another, one vhost-user socket to another, one PCI device to another.
    const auto between = [](const std::string& a, const std::string& b) {
        return restart_required(parse(site(kDataplane, uplink_with("{type: tap, name: calyx-up}", a), kControl)),
                                parse(site(kDataplane, uplink_with("{type: tap, name: calyx-up}", b), kControl)));
    };
    EXPECT_EQ(between("{type: af_packet, iface: eth1}", "{type: af_packet, iface: eth2}"), refused("uplink.port"));
    EXPECT_EQ(between("{type: vhost-user, socket: /run/a.sock}", "{type: vhost-user, socket: /run/b.sock}"),
              refused("uplink.port"));
    EXPECT_EQ(between("{type: pci, address: \"0000:01:00.0\"}", "{type: pci, address: \"0000:02:00.0\"}"),
              refused("uplink.port"));
    EXPECT_EQ(between("{type: af_packet, iface: eth1}", "{type: af_packet, iface: eth1}"), std::nullopt);
}

TEST(Reload, TheUplinkAddressIsFixed) {
    EXPECT_EQ(reload(kDataplane, uplink_with("198.51.100.10/24", "198.51.100.11/24")), refused("uplink.address"));
    EXPECT_EQ(reload(kDataplane, uplink_with("198.51.100.10/24", "198.51.100.10/25")), refused("uplink.address"));
}

TEST(Reload, TheMasqueradePortsAreFixed) {
    EXPECT_EQ(reload(kDataplane, uplink_with("20000-59999", "20001-59999")), refused("uplink.nat_ports"));
    EXPECT_EQ(reload(kDataplane, uplink_with("20000-59999", "20000-59998")), refused("uplink.nat_ports"));
}

TEST(Reload, AddingOrRemovingTheUplinkIsRefused) {
    const config::Config with = parse(site(kDataplane, kUplink, kControl));
    const config::Config without = parse(site(kDataplane, "", kControl));
    EXPECT_EQ(restart_required(with, without), refused("uplink"));
    EXPECT_EQ(restart_required(without, with), refused("uplink"));
    EXPECT_EQ(restart_required(without, without), std::nullopt);
}

}  // namespace
}  // namespace calyx::cp
